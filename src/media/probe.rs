//! Picture-size probing for video keyframes.
//!
//! castgate needs to know the coded picture size of a published stream (for
//! recording container headers, stats and WHEP viewers) without decoding any
//! video. Every supported codec carries the size in a small header at the
//! start of a keyframe, so this module reads just enough of that header:
//!
//! - VP8: the RFC 6386 key frame header (start code `9d 01 2a`, 14-bit sizes).
//! - VP9: the uncompressed header of a key frame (profiles 0-3); for a
//!   superframe the first frame in it is examined.
//! - H.264: the sequence parameter set of an Annex B access unit, with the
//!   frame cropping rectangle applied.
//! - AV1: the sequence header OBU of a low-overhead temporal unit
//!   (`max_frame_width_minus_1` / `max_frame_height_minus_1`).
//!
//! The inputs are the frames a WebRTC depacketizer (str0m in frame mode)
//! hands over, i.e. untrusted network data: every function here returns
//! `None` for non-keyframes, truncated or malformed input and never panics.

use super::frame::Codec;
use super::{av1, h264};

/// The picture size of a video keyframe of `codec` (see the per-codec
/// functions); `None` for audio, inter frames and malformed input.
pub fn picture_size(codec: Codec, frame: &[u8]) -> Option<(u32, u32)> {
    match codec {
        Codec::Vp8 => vp8_size(frame),
        Codec::Vp9 => vp9_size(frame),
        Codec::H264 => h264_size(frame),
        Codec::Av1 => av1_size(frame),
        Codec::Opus => None,
    }
}

/// Reads a VP8 key frame's picture size.
///
/// `frame` is one complete VP8 frame as reassembled from RTP (RFC 7741), i.e.
/// starting with the 3-byte frame tag of RFC 6386 section 9.1. Returns
/// `(width, height)` in pixels, ignoring the upscaling bits, or `None` if the
/// frame is an inter frame, truncated, or lacks the key frame start code.
pub fn vp8_size(frame: &[u8]) -> Option<(u32, u32)> {
    let &[tag, _, _, s0, s1, s2, w0, w1, h0, h1, ..] = frame else {
        return None;
    };
    // Bit 0 of the frame tag is 0 for key frames.
    if tag & 1 != 0 || [s0, s1, s2] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u32::from(u16::from_le_bytes([w0, w1]) & 0x3fff);
    let height = u32::from(u16::from_le_bytes([h0, h1]) & 0x3fff);
    nonzero(width, height)
}

/// Reads a VP9 key frame's picture size.
///
/// `frame` is one VP9 frame or superframe as reassembled from RTP. For a
/// superframe (index at the end of the buffer) the first frame inside it is
/// examined, which is where a key frame sits. A buffer of several frames
/// without an index (str0m concatenates VP9 SVC spatial layers that way) is
/// read from its first frame too, so for spatial SVC this is the base
/// layer's size. Returns `(width, height)` from
/// the uncompressed header (`frame_width_minus_1 + 1`,
/// `frame_height_minus_1 + 1`), or `None` for inter frames, intra-only frames,
/// `show_existing_frame` frames and malformed or truncated input.
pub fn vp9_size(frame: &[u8]) -> Option<(u32, u32)> {
    let first = vp9_first_frame(frame)?;
    let mut r = BitReader::new(first);
    if r.bits(2)? != 2 {
        return None; // frame_marker
    }
    let profile_low = r.bits(1)?;
    let profile_high = r.bits(1)?;
    let profile = (profile_high << 1) | profile_low;
    if profile == 3 && r.bits(1)? != 0 {
        return None; // reserved_zero
    }
    if r.flag()? {
        return None; // show_existing_frame: no new picture is coded
    }
    if r.bits(1)? != 0 {
        return None; // frame_type: 0 is KEY_FRAME
    }
    r.skip(2)?; // show_frame, error_resilient_mode
    if r.bits(24)? != 0x49_83_42 {
        return None; // frame_sync_code
    }
    // color_config()
    if profile >= 2 {
        r.skip(1)?; // ten_or_twelve_bit
    }
    const CS_RGB: u32 = 7;
    let color_space = r.bits(3)?;
    if color_space != CS_RGB {
        r.skip(1)?; // color_range
        if profile == 1 || profile == 3 {
            r.skip(2)?; // subsampling_x, subsampling_y
            if r.bits(1)? != 0 {
                return None; // reserved_zero
            }
        }
    } else if profile == 1 || profile == 3 {
        if r.bits(1)? != 0 {
            return None; // reserved_zero
        }
    } else {
        return None; // RGB is only allowed in profiles 1 and 3
    }
    // frame_size()
    let width = r.bits(16)? + 1;
    let height = r.bits(16)? + 1;
    Some((width, height))
}

/// Reads the picture size of an H.264 access unit that carries an SPS.
///
/// `access_unit` is an Annex B byte stream (NAL units preceded by
/// `00 00 01` or `00 00 00 01` start codes), as str0m's H.264 depacketizer
/// produces. The first parsable sequence parameter set (NAL type 7) gives the
/// size: macroblock dimensions, doubled for field coding, minus the frame
/// cropping rectangle. An SPS is enough: no IDR slice is required. Returns
/// `None` when there is no SPS (the usual case for non-IDR access units) or it
/// is malformed.
pub fn h264_size(access_unit: &[u8]) -> Option<(u32, u32)> {
    h264::nal_units(access_unit)
        .filter(|nal| h264::nal_type(nal) == Some(7))
        .find_map(|nal| {
            // Enough for any SPS up to the cropping fields, even with
            // maximal scaling lists; bounds the work on garbage input.
            const MAX_SPS_BYTES: usize = 4096;
            let body = nal.get(1..)?;
            let rbsp = h264::unescape_rbsp(body.get(..MAX_SPS_BYTES).unwrap_or(body));
            h264_sps_size(&rbsp)
        })
}

/// Reads the maximum picture size from an AV1 temporal unit's sequence header.
///
/// `temporal_unit` is a sequence of OBUs in the low-overhead bitstream format
/// (`obu_has_size_field = 1`; the last OBU may omit its size field, in which
/// case it extends to the end of the buffer). The size is the sequence
/// header's `max_frame_width_minus_1 + 1` by `max_frame_height_minus_1 + 1`,
/// which is the coded size of key frames unless the encoder uses frame size
/// overrides or superres. Returns `None` when there is no sequence header,
/// when the first frame in the unit is not a key frame, or on malformed input.
pub fn av1_size(temporal_unit: &[u8]) -> Option<(u32, u32)> {
    let mut sequence: Option<Av1Sequence> = None;
    let mut rest = temporal_unit;
    while !rest.is_empty() {
        let (obu_type, payload, next) = av1::split_obu(rest)?;
        match obu_type {
            av1::OBU_SEQUENCE_HEADER if sequence.is_none() => {
                sequence = Some(parse_sequence_header(payload)?);
            }
            av1::OBU_FRAME_HEADER | av1::OBU_FRAME => {
                // The first frame decides: only a key frame makes this a
                // keyframe temporal unit. A frame before any sequence header
                // cannot start a coded video sequence.
                let sequence = sequence?;
                let key = sequence.reduced_still_picture_header || av1_is_key_frame(payload)?;
                return key.then_some((sequence.width, sequence.height));
            }
            _ => {}
        }
        rest = next;
    }
    // A sequence header without any frame still fully describes the size.
    sequence.map(|s| (s.width, s.height))
}

/// Rejects zero dimensions, which no valid stream has.
fn nonzero(width: u32, height: u32) -> Option<(u32, u32)> {
    (width > 0 && height > 0).then_some((width, height))
}

/// MSB-first bit reader over a byte slice; every read returns `None` once the
/// data runs out, so parsers can use `?` throughout.
struct BitReader<'a> {
    data: &'a [u8],
    /// Position in bits from the start of `data`.
    pos: usize,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    fn bits_left(&self) -> usize {
        (self.data.len() * 8).saturating_sub(self.pos)
    }

    fn bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.pos / 8)?;
        let bit = (byte >> (7 - (self.pos % 8))) & 1;
        self.pos += 1;
        Some(u32::from(bit))
    }

    fn flag(&mut self) -> Option<bool> {
        Some(self.bit()? == 1)
    }

    /// Reads `n <= 32` bits as an unsigned number.
    fn bits(&mut self, n: u32) -> Option<u32> {
        if n > 32 {
            return None;
        }
        let mut value: u64 = 0;
        for _ in 0..n {
            value = (value << 1) | u64::from(self.bit()?);
        }
        u32::try_from(value).ok()
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        if n > self.bits_left() {
            return None;
        }
        self.pos += n;
        Some(())
    }

    /// H.264 `ue(v)`: unsigned exp-Golomb; values needing more than 32 bits
    /// are rejected.
    fn ue(&mut self) -> Option<u32> {
        let mut leading_zeros = 0;
        while self.bit()? == 0 {
            leading_zeros += 1;
            if leading_zeros > 31 {
                return None;
            }
        }
        let suffix = self.bits(leading_zeros)?;
        // At most (2^31 - 1) + (2^31 - 1), so this cannot overflow.
        Some((1u32 << leading_zeros) - 1 + suffix)
    }

    /// H.264 `se(v)`: signed exp-Golomb.
    fn se(&mut self) -> Option<i64> {
        let k = i64::from(self.ue()?);
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }

    /// AV1 `uvlc()`.
    fn uvlc(&mut self) -> Option<u32> {
        let mut leading_zeros = 0u32;
        while self.bit()? == 0 {
            leading_zeros = leading_zeros.saturating_add(1);
        }
        if leading_zeros >= 32 {
            return Some(u32::MAX);
        }
        let value = self.bits(leading_zeros)?;
        Some(value.saturating_add((1u32 << leading_zeros) - 1))
    }
}

/// Returns the first frame of a VP9 superframe, or the whole buffer if it has
/// no valid superframe index.
fn vp9_first_frame(data: &[u8]) -> Option<&[u8]> {
    let &marker = data.last()?;
    if marker & 0xe0 != 0xc0 {
        return Some(data);
    }
    let frames = usize::from(marker & 0x07) + 1;
    let size_bytes = usize::from((marker >> 3) & 0x03) + 1;
    let index_len = 2 + size_bytes * frames;
    let Some(index_start) = data.len().checked_sub(index_len) else {
        return Some(data);
    };
    if data.get(index_start) != Some(&marker) {
        // Not an index, just a frame whose last byte looks like a marker.
        return Some(data);
    }
    let size_field = data.get(index_start + 1..index_start + 1 + size_bytes)?;
    let size = size_field
        .iter()
        .rev()
        .fold(0usize, |acc, &byte| (acc << 8) | usize::from(byte));
    if size == 0 || size > index_start {
        return None;
    }
    data.get(..size)
}

/// Parses an H.264 `seq_parameter_set_rbsp()` (after the NAL header byte, with
/// emulation prevention removed) up to the cropping window and returns the
/// cropped picture size.
fn h264_sps_size(rbsp: &[u8]) -> Option<(u32, u32)> {
    let mut r = BitReader::new(rbsp);
    let profile_idc = r.bits(8)?;
    r.skip(16)?; // constraint_set flags + reserved_zero_2bits, level_idc
    if r.ue()? > 31 {
        return None; // seq_parameter_set_id
    }

    let mut chroma_format_idc = 1;
    let mut separate_colour_plane = false;
    if matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc > 3 {
            return None;
        }
        if chroma_format_idc == 3 {
            separate_colour_plane = r.flag()?;
        }
        if r.ue()? > 6 || r.ue()? > 6 {
            return None; // bit_depth_luma_minus8, bit_depth_chroma_minus8
        }
        r.skip(1)?; // qpprime_y_zero_transform_bypass_flag
        if r.flag()? {
            // seq_scaling_matrix_present_flag
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.flag()? {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }

    if r.ue()? > 12 {
        return None; // log2_max_frame_num_minus4
    }
    match r.ue()? {
        // pic_order_cnt_type
        0 => {
            if r.ue()? > 12 {
                return None; // log2_max_pic_order_cnt_lsb_minus4
            }
        }
        1 => {
            r.skip(1)?; // delta_pic_order_always_zero_flag
            r.se()?; // offset_for_non_ref_pic
            r.se()?; // offset_for_top_to_bottom_field
            let cycle = r.ue()?; // num_ref_frames_in_pic_order_cnt_cycle
            if cycle > 255 {
                return None;
            }
            for _ in 0..cycle {
                r.se()?; // offset_for_ref_frame[i]
            }
        }
        2 => {}
        _ => return None,
    }
    r.ue()?; // max_num_ref_frames
    r.skip(1)?; // gaps_in_frame_num_value_allowed_flag
    let width_in_mbs = u64::from(r.ue()?) + 1;
    let height_in_map_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = r.flag()?;
    if !frame_mbs_only {
        r.skip(1)?; // mb_adaptive_frame_field_flag
    }
    r.skip(1)?; // direct_8x8_inference_flag
    let (mut left, mut right, mut top, mut bottom) = (0u64, 0u64, 0u64, 0u64);
    if r.flag()? {
        // frame_cropping_flag
        left = r.ue()?.into();
        right = r.ue()?.into();
        top = r.ue()?.into();
        bottom = r.ue()?.into();
    }

    let field_factor = if frame_mbs_only { 1 } else { 2 };
    let width = width_in_mbs * 16;
    let height = height_in_map_units * 16 * field_factor;

    // Crop units, H.264 equations 7-19 to 7-22.
    let chroma_array_type = if separate_colour_plane {
        0
    } else {
        chroma_format_idc
    };
    let (crop_x, crop_y) = if chroma_array_type == 0 {
        (1, field_factor)
    } else {
        let sub_width_c = if chroma_format_idc == 3 { 1 } else { 2 };
        let sub_height_c = if chroma_format_idc == 1 { 2 } else { 1 };
        (sub_width_c, sub_height_c * field_factor)
    };
    let width = width.checked_sub(crop_x * (left + right))?;
    let height = height.checked_sub(crop_y * (top + bottom))?;
    nonzero(u32::try_from(width).ok()?, u32::try_from(height).ok()?)
}

/// Skips an H.264 `scaling_list()` of `size` coefficients.
fn skip_scaling_list(r: &mut BitReader<'_>, size: usize) -> Option<()> {
    let mut last_scale: i64 = 8;
    let mut next_scale: i64 = 8;
    for _ in 0..size {
        if next_scale != 0 {
            let delta_scale = r.se()?;
            if !(-128..=127).contains(&delta_scale) {
                return None;
            }
            next_scale = (last_scale + delta_scale).rem_euclid(256);
        }
        if next_scale != 0 {
            last_scale = next_scale;
        }
    }
    Some(())
}

/// The parts of an AV1 sequence header this module needs.
#[derive(Clone, Copy)]
struct Av1Sequence {
    width: u32,
    height: u32,
    reduced_still_picture_header: bool,
}

/// Parses `sequence_header_obu()` up to `max_frame_height_minus_1`.
fn parse_sequence_header(payload: &[u8]) -> Option<Av1Sequence> {
    let mut r = BitReader::new(payload);
    if r.bits(3)? > 2 {
        return None; // seq_profile: 3..7 are reserved
    }
    r.skip(1)?; // still_picture
    let reduced_still_picture_header = r.flag()?;
    if reduced_still_picture_header {
        r.skip(5)?; // seq_level_idx[0]
    } else {
        let mut decoder_model_info_present = false;
        let mut buffer_delay_length = 0;
        if r.flag()? {
            // timing_info_present_flag: timing_info()
            r.skip(64)?; // num_units_in_display_tick, time_scale
            if r.flag()? {
                // equal_picture_interval
                r.uvlc()?; // num_ticks_per_picture_minus_1
            }
            decoder_model_info_present = r.flag()?;
            if decoder_model_info_present {
                // decoder_model_info()
                buffer_delay_length = r.bits(5)? + 1;
                r.skip(32)?; // num_units_in_decoding_tick
                r.skip(10)?; // buffer_removal_time_length_minus_1, frame_presentation_time_length_minus_1
            }
        }
        let initial_display_delay_present = r.flag()?;
        let operating_points = r.bits(5)? + 1;
        for _ in 0..operating_points {
            r.skip(12)?; // operating_point_idc
            let seq_level_idx = r.bits(5)?;
            if seq_level_idx > 7 {
                r.skip(1)?; // seq_tier
            }
            if decoder_model_info_present && r.flag()? {
                // operating_parameters_info(): decoder_buffer_delay,
                // encoder_buffer_delay, low_delay_mode_flag
                r.skip(2 * buffer_delay_length as usize + 1)?;
            }
            if initial_display_delay_present && r.flag()? {
                r.skip(4)?; // initial_display_delay_minus_1
            }
        }
    }
    let width_bits = r.bits(4)? + 1;
    let height_bits = r.bits(4)? + 1;
    let width = r.bits(width_bits)? + 1;
    let height = r.bits(height_bits)? + 1;
    Some(Av1Sequence {
        width,
        height,
        reduced_still_picture_header,
    })
}

/// Tells whether a frame header (or frame) OBU payload codes a new key frame.
/// Only valid when the sequence header has `reduced_still_picture_header = 0`.
fn av1_is_key_frame(payload: &[u8]) -> Option<bool> {
    const KEY_FRAME: u32 = 0;
    let mut r = BitReader::new(payload);
    if r.flag()? {
        return Some(false); // show_existing_frame
    }
    Some(r.bits(2)? == KEY_FRAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Probe = fn(&[u8]) -> Option<(u32, u32)>;

    /// A real bitstream sample and the answer its codec's probe must give.
    struct Case {
        name: &'static str,
        probe: Probe,
        data: &'static [u8],
        expected: Option<(u32, u32)>,
    }

    /// Fixture name, bytes and expected probe result.
    type Fixture = (&'static str, &'static [u8], Option<(u32, u32)>);

    /// `fixture!(NAME, expected)`: the file `probe_fixtures/NAME.bin`, probed
    /// with the function for the codec NAME starts with.
    macro_rules! fixture {
        ($name:literal, $expected:expr) => {
            (
                $name,
                include_bytes!(concat!("probe_fixtures/", $name, ".bin")).as_slice(),
                $expected,
            )
        };
    }

    /// Fixtures, made with ffmpeg 5.1 from `-f lavfi -i testsrc2=size=WxH`:
    /// VP8/VP9 via libvpx into IVF with the IVF headers stripped, H.264 via
    /// libx264 with `-f h264`, AV1 via libaom/libsvtav1/librav1e with `-f obu`.
    /// x264 never puts scaling lists in the SPS, so the two `seq_scaling`
    /// H.264 streams are x264 output whose SPS was rewritten with
    /// `seq_scaling_matrix_present_flag = 1` and a mix of absent, default and
    /// explicit 4x4/8x8 lists (ffmpeg still decodes them). Expected sizes
    /// were cross-checked with ffprobe.
    const FIXTURES: &[Fixture] = &[
        fixture!("vp8_key_642x362", Some((642, 362))),
        fixture!("vp8_inter_160x90", None),
        fixture!("vp9_p0_key_322x242", Some((322, 242))),
        fixture!("vp9_p1_key_200x120", Some((200, 120))),
        fixture!("vp9_p2_key_642x362", Some((642, 362))),
        fixture!("vp9_p3_key_130x66", Some((130, 66))),
        fixture!("vp9_inter_322x242", None),
        fixture!("vp9_superframe_inter_96x64", None),
        fixture!("h264_high_642x362", Some((642, 362))),
        fixture!("h264_baseline_320x180", Some((320, 180))),
        fixture!("h264_interlaced_642x364", Some((642, 364))),
        fixture!("h264_422_642x362", Some((642, 362))),
        fixture!("h264_422_seq_scaling_642x362", Some((642, 362))),
        fixture!("h264_444_322x242", Some((322, 242))),
        fixture!("h264_444_seq_scaling_322x242", Some((322, 242))),
        fixture!("h264_high10_178x98", Some((178, 98))),
        fixture!("h264_gray_100x60", Some((100, 60))),
        fixture!("h264_p_frame_320x180", None),
        fixture!("av1_aom_642x362", Some((642, 362))),
        fixture!("av1_svt_642x362", Some((642, 362))),
        fixture!("av1_rav1e_642x362", Some((642, 362))),
        fixture!("av1_still_98x66", Some((98, 66))),
        fixture!("av1_timing_model_258x146", Some((258, 146))),
        fixture!("av1_inter_160x90", None),
    ];

    const PROBES: [(&str, Probe); 4] = [
        ("vp8", vp8_size),
        ("vp9", vp9_size),
        ("h264", h264_size),
        ("av1", av1_size),
    ];

    /// The bytes of fixture `name`.
    fn data(name: &str) -> &'static [u8] {
        FIXTURES.iter().find(|f| f.0 == name).unwrap().1
    }

    fn cases() -> Vec<Case> {
        FIXTURES
            .iter()
            .map(|&(name, data, expected)| {
                let codec = name.split('_').next().unwrap();
                let (_, probe) = *PROBES.iter().find(|(c, _)| *c == codec).unwrap();
                Case {
                    name,
                    probe,
                    data,
                    expected,
                }
            })
            .collect()
    }

    fn all_probes(data: &[u8]) -> [Option<(u32, u32)>; 4] {
        [
            vp8_size(data),
            vp9_size(data),
            h264_size(data),
            av1_size(data),
        ]
    }

    #[test]
    fn fixtures_give_expected_sizes() {
        for c in cases() {
            assert_eq!((c.probe)(c.data), c.expected, "{}", c.name);
        }
    }

    #[test]
    fn other_codecs_fixtures_are_rejected() {
        for c in cases() {
            for (codec, probe) in PROBES {
                if !c.name.starts_with(codec) {
                    assert_eq!(probe(c.data), None, "{codec} probe on {}", c.name);
                }
            }
        }
    }

    #[test]
    fn every_prefix_is_none_or_correct() {
        for c in cases() {
            for len in 0..=c.data.len() {
                let got = (c.probe)(&c.data[..len]);
                assert!(
                    got.is_none() || got == c.expected,
                    "{} prefix {len}: {got:?}",
                    c.name
                );
                all_probes(&c.data[..len]);
            }
        }
    }

    #[test]
    fn every_suffix_and_bit_flip_is_handled() {
        for c in cases() {
            for start in 0..c.data.len() {
                all_probes(&c.data[start..]);
            }
            // Flip every bit of the headers, where the parsers look.
            let mut data = c.data.to_vec();
            for i in 0..data.len().min(96) {
                for bit in 0..8 {
                    data[i] ^= 1 << bit;
                    all_probes(&data);
                    data[i] ^= 1 << bit;
                }
            }
        }
    }

    #[test]
    fn empty_and_tiny_inputs() {
        assert_eq!(all_probes(&[]), [None; 4]);
        for byte in 0..=255u8 {
            for len in 1..4 {
                assert_eq!(all_probes(&vec![byte; len]), [None; 4]);
            }
        }
    }

    /// xorshift64*: deterministic pseudo-random bytes without dependencies.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        // Prefixes that get past each parser's first checks, so the random
        // tail exercises the deeper header syntax.
        let prefixes: [&[u8]; 9] = [
            &[],
            &[0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a],
            &[0x82, 0x49, 0x83, 0x42],
            &[0xa2, 0x49, 0x83, 0x42],
            &[0xb1, 0x24, 0xc1, 0xa1],
            &[0, 0, 0, 1, 0x67, 100],
            &[0, 0, 1, 0x67, 66],
            &[0x0a],
            &[0x08],
        ];
        for round in 0..20_000 {
            let prefix = prefixes[round % prefixes.len()];
            let len = (rng.next() % 200) as usize;
            let mut data = prefix.to_vec();
            data.extend(rng.bytes(len));
            all_probes(&data);
        }
    }

    // ---- VP8 / VP9 hand-made variations ----

    #[test]
    fn vp8_rejects_zero_size_and_bad_start_code() {
        let mut frame = data("vp8_key_642x362").to_vec();
        // Scale bits are ignored.
        frame[7] |= 0xc0;
        frame[9] |= 0x40;
        assert_eq!(vp8_size(&frame), Some((642, 362)));
        frame[6..8].copy_from_slice(&[0, 0xc0]);
        assert_eq!(vp8_size(&frame), None);
        let mut frame = data("vp8_key_642x362").to_vec();
        frame[4] = 0x02;
        assert_eq!(vp8_size(&frame), None);
    }

    fn superframe(frames: &[&[u8]]) -> Vec<u8> {
        let marker = 0xc0 | (3 << 3) | (frames.len() as u8 - 1); // 4-byte sizes
        let mut out: Vec<u8> = frames.concat();
        out.push(marker);
        for frame in frames {
            out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        }
        out.push(marker);
        out
    }

    #[test]
    fn vp9_superframe_with_key_frame_first() {
        let key = data("vp9_p0_key_322x242");
        let inter = data("vp9_inter_322x242");
        assert_eq!(vp9_size(&superframe(&[key, inter])), Some((322, 242)));
        assert_eq!(vp9_size(&superframe(&[key])), Some((322, 242)));
        assert_eq!(vp9_size(&superframe(&[inter, key])), None);

        // An index claiming more bytes than the buffer holds is rejected.
        let mut bad = superframe(&[key]);
        let n = bad.len();
        bad[n - 5..n - 1].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(vp9_size(&bad), None);
        // A zero-sized first frame is rejected.
        bad[n - 5..n - 1].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(vp9_size(&bad), None);
    }

    #[test]
    fn vp9_frame_ending_in_marker_like_byte_is_not_a_superframe() {
        let mut frame = data("vp9_p0_key_322x242").to_vec();
        frame.push(0xc1); // index would start 4 bytes back, where there is no marker
        assert_eq!(vp9_size(&frame), Some((322, 242)));
    }

    #[test]
    fn vp9_show_existing_frame_is_none() {
        // frame_marker=2, profile 0, show_existing_frame=1, idx 0.
        assert_eq!(vp9_size(&[0x88, 0x00]), None);
    }

    // ---- bit writer for hand-built H.264 and AV1 headers ----

    #[derive(Default)]
    struct BitWriter {
        bytes: Vec<u8>,
        bits: usize,
    }

    impl BitWriter {
        fn bit(&mut self, bit: bool) -> &mut Self {
            if self.bits.is_multiple_of(8) {
                self.bytes.push(0);
            }
            if bit {
                *self.bytes.last_mut().unwrap() |= 0x80 >> (self.bits % 8);
            }
            self.bits += 1;
            self
        }

        fn u(&mut self, n: u32, value: u64) -> &mut Self {
            for i in (0..n).rev() {
                self.bit((value >> i) & 1 == 1);
            }
            self
        }

        fn ue(&mut self, value: u32) -> &mut Self {
            let v = u64::from(value) + 1;
            let len = 64 - v.leading_zeros();
            self.u(len - 1, 0).u(len, v)
        }

        fn se(&mut self, value: i32) -> &mut Self {
            let mapped = if value > 0 {
                2 * value as u32 - 1
            } else {
                2 * value.unsigned_abs()
            };
            self.ue(mapped)
        }

        fn uvlc(&mut self, value: u32) -> &mut Self {
            self.ue(value)
        }

        /// rbsp_trailing_bits(), or AV1 trailing_bits().
        fn trailing(&mut self) -> Vec<u8> {
            self.bit(true);
            while !self.bits.is_multiple_of(8) {
                self.bit(false);
            }
            self.bytes.clone()
        }
    }

    fn escape_rbsp(rbsp: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut zeros = 0;
        for &b in rbsp {
            if zeros >= 2 && b <= 3 {
                out.push(3);
                zeros = 0;
            }
            zeros = if b == 0 { zeros + 1 } else { 0 };
            out.push(b);
        }
        out
    }

    /// A 4:2:2 interlaced SPS with scaling lists, POC type 1 and cropping.
    fn h264_sps_422_poc1(width_mbs_minus1: u32) -> Vec<u8> {
        let mut w = BitWriter::default();
        w.u(8, 122).u(8, 0).u(8, 40).ue(3); // High 4:2:2, level 4.0, sps id 3
        w.ue(2).ue(2).ue(2).bit(false); // chroma 4:2:2, 10-bit, no bypass
        w.bit(true); // seq_scaling_matrix_present_flag
        // List 0: explicit deltas; list 1: absent; list 2: "use default"
        // (first delta makes nextScale 0); lists 3..5 absent; list 6 (8x8):
        // all 64 coefficients; list 7 absent.
        w.bit(true);
        for i in 0..16 {
            w.se(if i % 2 == 0 { 3 } else { -2 });
        }
        w.bit(false).bit(true).se(-8);
        w.bit(false).bit(false).bit(false);
        w.bit(true);
        for i in 0..64 {
            w.se(i % 5 - 2);
        }
        w.bit(false);
        w.ue(0); // log2_max_frame_num_minus4
        w.ue(1).bit(true).se(-3).se(5).ue(3).se(1).se(-1).se(2); // POC type 1
        w.ue(4).bit(false); // max_num_ref_frames, gaps
        w.ue(width_mbs_minus1).ue(11); // 640 (or wider) x 12 map units
        w.bit(false).bit(true); // frame_mbs_only_flag = 0, mb_adaptive
        w.bit(true); // direct_8x8_inference_flag
        w.bit(true).ue(1).ue(2).ue(1).ue(3); // cropping
        w.bit(false); // vui_parameters_present_flag
        let mut nal = vec![0x67];
        nal.extend(escape_rbsp(&w.trailing()));
        nal
    }

    fn annex_b(nals: &[&[u8]], start_code: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for nal in nals {
            out.extend_from_slice(start_code);
            out.extend_from_slice(nal);
        }
        out
    }

    #[test]
    fn h264_hand_built_sps_422_interlaced_poc1() {
        let sps = h264_sps_422_poc1(39);
        let aud: &[u8] = &[0x09, 0xf0];
        let sei: &[u8] = &[0x06, 0x05, 0x01, 0x00, 0x80];
        let au = annex_b(&[aud, sei, &sps, &[0x68, 0xce, 0x38, 0x80]], &[0, 0, 1]);
        // Width: 40 MBs = 640 - CropUnitX 2 * (1 + 2) = 634.
        // Height: 12 map units * 2 (fields) * 16 = 384 - CropUnitY 2 * (1 + 3) = 376.
        assert_eq!(h264_size(&au), Some((634, 376)));
        for len in 0..au.len() {
            let got = h264_size(&au[..len]);
            assert!(got.is_none() || got == Some((634, 376)));
        }
    }

    #[test]
    fn h264_emulation_prevention_is_removed() {
        // Wide pictures have ue() codes with long runs of zero bits, which
        // force emulation prevention bytes into the NAL.
        let mut escaped = 0;
        for shift in 0..24 {
            let sps = h264_sps_422_poc1((1 << shift) - 1);
            if sps.windows(3).any(|w| w == [0, 0, 3]) {
                escaped += 1;
            }
            let au = annex_b(&[&sps], &[0, 0, 0, 1]);
            assert_eq!(h264_size(&au), Some(((1 << shift) * 16 - 6, 376)));
        }
        assert!(escaped > 0);
    }

    #[test]
    fn h264_start_code_variants_and_leading_garbage() {
        let au = data("h264_high_642x362");
        // Three-byte start codes throughout.
        let mut short = Vec::new();
        let mut i = 0;
        while i < au.len() {
            if au[i..].starts_with(&[0, 0, 0, 1]) {
                i += 1;
            }
            short.push(au[i]);
            i += 1;
        }
        assert!(short.len() < au.len());
        assert_eq!(h264_size(&short), Some((642, 362)));
        // Bytes before the first start code are ignored.
        let mut prefixed = vec![0x12, 0x34, 0x00];
        prefixed.extend_from_slice(au);
        assert_eq!(h264_size(&prefixed), Some((642, 362)));
        // No start code at all: not Annex B.
        assert_eq!(h264_size(&au[4..]), None);
    }

    #[test]
    fn h264_rejects_crop_that_empties_the_picture() {
        let sps = |crop_left, crop_right| {
            let mut w = BitWriter::default();
            w.u(8, 66).u(8, 0).u(8, 30).ue(0); // baseline
            w.ue(0).ue(2).ue(1).bit(false); // frame num, POC type 2, refs, gaps
            w.ue(0).ue(0).bit(true).bit(true); // 16x16, progressive
            w.bit(true).ue(crop_left).ue(crop_right).ue(0).ue(1);
            w.bit(false);
            let mut nal = vec![0x67];
            nal.extend(escape_rbsp(&w.trailing()));
            annex_b(&[&nal], &[0, 0, 1])
        };
        // 4:2:0 crop units are 2x2 pixels.
        assert_eq!(h264_size(&sps(3, 4)), Some((2, 14)));
        assert_eq!(h264_size(&sps(4, 4)), None);
        assert_eq!(h264_size(&sps(u32::MAX - 1, 0)), None);
    }

    // ---- AV1 hand-made variations ----

    /// Frame OBU header (size field present) plus a payload starting with
    /// show_existing_frame = 0 and the given frame_type.
    fn av1_frame_obu(frame_type: u8) -> Vec<u8> {
        vec![0x32, 0x02, (frame_type & 3) << 5, 0x00]
    }

    #[test]
    fn av1_last_obu_without_size_field() {
        let tu = data("av1_aom_642x362");
        // Temporal delimiter, then the sequence header with its size field
        // dropped, as the last OBU.
        let seq_len = usize::from(tu[3]);
        let mut data = vec![0x12, 0x00, 0x08];
        data.extend_from_slice(&tu[4..4 + seq_len]);
        assert_eq!(av1_size(&data), Some((642, 362)));
        // And a sized sequence header followed by an unsized key frame.
        let mut data = tu[..4 + seq_len].to_vec();
        data.extend_from_slice(&[0x30, 0x10, 0x00]);
        assert_eq!(av1_size(&data), Some((642, 362)));
        // ... or an unsized inter frame.
        data.truncate(4 + seq_len);
        data.extend_from_slice(&[0x30, 0x30, 0x00]);
        assert_eq!(av1_size(&data), None);
    }

    #[test]
    fn av1_obu_extension_and_frame_types() {
        let tu = data("av1_aom_642x362");
        let seq_len = usize::from(tu[3]);
        let seq_payload = &tu[4..4 + seq_len];
        // Sequence header carrying an extension header (temporal 1, spatial 0).
        let mut data = vec![0x12, 0x00, 0x0e, 0x20, seq_len as u8];
        data.extend_from_slice(seq_payload);
        assert_eq!(av1_size(&data), Some((642, 362)));
        for (frame_type, expected) in [(0, Some((642, 362))), (1, None), (2, None), (3, None)] {
            let mut with_frame = data.clone();
            with_frame.extend(av1_frame_obu(frame_type));
            assert_eq!(av1_size(&with_frame), expected, "frame_type {frame_type}");
        }
        // show_existing_frame = 1.
        let mut shown = data.clone();
        shown.extend_from_slice(&[0x1a, 0x01, 0x80]);
        assert_eq!(av1_size(&shown), None);
        // A frame before the sequence header.
        let mut late = vec![0x12, 0x00];
        late.extend(av1_frame_obu(0));
        late.extend_from_slice(&data[2..]);
        assert_eq!(av1_size(&late), None);
        // Forbidden bit, and a size field running past the end.
        assert_eq!(av1_size(&[0x92, 0x00]), None);
        assert_eq!(av1_size(&[0x12, 0x05, 0x00]), None);
        // Over-long leb128.
        assert_eq!(
            av1_size(&[0x0a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00]),
            None
        );
    }

    #[test]
    fn av1_hand_built_operating_points_and_decoder_model() {
        let mut w = BitWriter::default();
        w.u(3, 1).bit(false).bit(false); // profile 1, not still
        w.bit(true).u(32, 1001).u(32, 60000).bit(true).uvlc(1); // timing_info
        w.bit(true).u(5, 9).u(32, 1001).u(5, 20).u(5, 20); // decoder_model_info
        w.bit(true); // initial_display_delay_present_flag
        w.u(5, 2); // three operating points
        w.u(12, 0x301).u(5, 9).bit(true); // level 5.1 (with tier)
        w.bit(true).u(10, 500).u(10, 700).bit(false); // decoder model for op 0
        w.bit(true).u(4, 9); // initial display delay for op 0
        w.u(12, 0x101).u(5, 4); // op 1: no tier, no model, no delay
        w.bit(false).bit(false);
        w.u(12, 0x100).u(5, 31).bit(false); // op 2: level 31 (tier bit)
        w.bit(true).u(10, 1).u(10, 2).bit(true); // decoder model
        w.bit(true).u(4, 0); // initial display delay
        w.u(4, 11).u(4, 10).u(12, 1919).u(11, 1079); // 1920x1080
        w.bit(false).bit(false); // frame_id_numbers_present, use_128x128 ...
        let payload = w.trailing();
        let mut tu = vec![0x12, 0x00, 0x0a, payload.len() as u8];
        tu.extend_from_slice(&payload);
        tu.extend(av1_frame_obu(0));
        assert_eq!(av1_size(&tu), Some((1920, 1080)));
        for len in 0..tu.len() {
            let got = av1_size(&tu[..len]);
            assert!(got.is_none() || got == Some((1920, 1080)));
        }
    }

    #[test]
    fn av1_reserved_profile_is_rejected() {
        // seq_profile 3, reduced still picture header, 16x16.
        let mut w = BitWriter::default();
        w.u(3, 3)
            .bit(true)
            .bit(true)
            .u(5, 0)
            .u(4, 3)
            .u(4, 3)
            .u(4, 15)
            .u(4, 15);
        let payload = w.trailing();
        let mut tu = vec![0x0a, payload.len() as u8];
        tu.extend_from_slice(&payload);
        assert_eq!(av1_size(&tu), None);
        tu[2] &= 0x1f; // seq_profile 0
        assert_eq!(av1_size(&tu), Some((16, 16)));
    }

    #[test]
    fn bit_reader_exp_golomb_limits() {
        // 32 leading zeros: more than ue(v) can represent.
        let mut r = BitReader::new(&[0, 0, 0, 0, 0x80, 0, 0, 0, 0]);
        assert_eq!(r.ue(), None);
        // 31 leading zeros, all-ones suffix: 2^32 - 2.
        let mut r = BitReader::new(&[0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(r.ue(), Some(u32::MAX - 1));
        // uvlc with 32 leading zeros saturates.
        let mut r = BitReader::new(&[0, 0, 0, 0, 0x80]);
        assert_eq!(r.uvlc(), Some(u32::MAX));
        let mut r = BitReader::new(&[0b0010_0100]);
        assert_eq!(r.se(), Some(2));
        assert_eq!(r.se(), Some(0));
        assert_eq!(r.se(), None);
        assert_eq!(r.bits(33), None);
    }
}
