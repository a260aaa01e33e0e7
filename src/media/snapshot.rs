//! Pictures of a video stream: encoded frames → one decoded picture → a
//! scaled JPEG, in process, through FFmpeg's decoders, swscale and its
//! `mjpeg` encoder (raw `ffmpeg_sys_next`, as `media/transcode/video.rs`).
//!
//! * [`decode_last`] decodes a keyframe and the frames after it (each one
//!   encoded unit exactly as it flows through castgate: an H.264 Annex-B
//!   access unit, a VP8/VP9 frame, an AV1 temporal unit) and keeps the last
//!   picture, a [`Decoded`].
//! * [`encode_jpeg`] scales a [`Decoded`] to fit a maximum size (aspect kept,
//!   even sizes, never upscaled) and encodes it as a JPEG [`Picture`];
//!   [`jpeg_of`] is the two in one call (stream snapshots, posters).
//! * [`Strip`] tiles many pictures into one JPEG grid (the hover preview of a
//!   recording): each picture is scaled into its cell, letterboxed on black,
//!   and the whole grid is encoded once.
//!
//! Everything here is blocking CPU work (a 720p keyframe takes milliseconds
//! to tens of milliseconds): callers run it off the async runtime, in
//! `tokio::task::spawn_blocking` or a worker thread, and bound how many run
//! at once. The input is untrusted: any bytes give a picture or an error,
//! never a panic, and every FFmpeg object is freed on every path.
//!
//! Decoders: FFmpeg's native `h264`, `vp8` and `vp9`; for AV1 `libdav1d`,
//! else `libaom-av1` (FFmpeg 5.1's native `av1` decodes only through a
//! hardware accelerator). All run single-threaded, so one snapshot costs one
//! core at most.

use std::ffi::{CStr, c_int};
use std::ptr;

use ffmpeg_sys_next as sys;

use super::Codec;

/// The largest width or height of any picture made here (JPEG allows 65535;
/// this bounds memory when a caller asks for "no limit").
pub const MAX_SIDE: u32 = 16384;

/// The largest picture a decoder may allocate here (8192x8192; WebRTC
/// sources stay far below), so a forged header cannot claim gigabytes.
const MAX_DECODED_PIXELS: i64 = 8192 * 8192;

/// The mjpeg quantizer [`jpeg_of`] callers use unless they have a reason not
/// to: visually clean, about 15 KB for a 640x360 picture.
pub const DEFAULT_QSCALE: u8 = 4;

/// A decoded, scaled picture encoded as JPEG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picture {
    /// The JPEG file's bytes (`FF D8` … `FF D9`).
    pub jpeg: Vec<u8>,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// Why no picture could be made.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The codec carries no pictures (Opus).
    #[error("{} is not a video codec", .0.name())]
    NotVideo(Codec),
    /// This FFmpeg build has no usable decoder for the codec.
    #[error("this FFmpeg has no {} decoder", .0.name())]
    NoDecoder(Codec),
    /// The decoder gave no picture for the frames it was handed (no
    /// keyframe, damaged or foreign data).
    #[error(
        "no picture could be decoded from {frames} frame(s) ({rejected} rejected{})",
        .last_error.map(|e| format!(": {e}")).unwrap_or_default()
    )]
    NoPicture {
        /// Frames handed over.
        frames: usize,
        /// Frames the decoder refused.
        rejected: usize,
        /// The decoder's last complaint, if any.
        last_error: Option<ffmpeg_next::Error>,
    },
    /// FFmpeg refused a step that should not fail (allocation, opening the
    /// JPEG encoder, encoding).
    #[error("{what}: {source}")]
    Ffmpeg {
        /// What was being done.
        what: &'static str,
        /// FFmpeg's error.
        source: ffmpeg_next::Error,
    },
    /// The picture cannot be converted (a pixel format swscale does not read).
    #[error("{0}")]
    Unsupported(String),
    /// A [`Strip`] layout that cannot be made (no cells, or too large).
    #[error("invalid strip layout: {0}")]
    Layout(String),
    /// Every cell of the [`Strip`] is taken.
    #[error("the strip is full ({0} cells)")]
    StripFull(u32),
}

fn ff(what: &'static str, code: c_int) -> SnapshotError {
    SnapshotError::Ffmpeg {
        what,
        source: ffmpeg_next::Error::from(code),
    }
}

fn oom(what: &'static str) -> SnapshotError {
    ff(what, sys::AVERROR(libc::ENOMEM))
}

// ---------------------------------------------------------------------------
// Owned FFmpeg objects (freed by Drop on every path).

struct CodecCtx(*mut sys::AVCodecContext);

impl CodecCtx {
    fn alloc(codec: *const sys::AVCodec) -> Result<CodecCtx, SnapshotError> {
        // SAFETY: `codec` is a registered codec (checked non-null by callers).
        let p = unsafe { sys::avcodec_alloc_context3(codec) };
        if p.is_null() {
            return Err(oom("allocating a codec context"));
        }
        Ok(CodecCtx(p))
    }
}

impl Drop for CodecCtx {
    fn drop(&mut self) {
        // SAFETY: owned, freed once; accepts null.
        unsafe { sys::avcodec_free_context(&mut self.0) }
    }
}

struct Packet(*mut sys::AVPacket);

impl Packet {
    fn alloc() -> Result<Packet, SnapshotError> {
        // SAFETY: plain allocation.
        let p = unsafe { sys::av_packet_alloc() };
        if p.is_null() {
            return Err(oom("allocating a packet"));
        }
        Ok(Packet(p))
    }
}

impl Drop for Packet {
    fn drop(&mut self) {
        // SAFETY: owned, freed once (unrefs its data); accepts null.
        unsafe { sys::av_packet_free(&mut self.0) }
    }
}

struct OwnedFrame(*mut sys::AVFrame);

impl OwnedFrame {
    fn alloc() -> Result<OwnedFrame, SnapshotError> {
        // SAFETY: plain allocation.
        let p = unsafe { sys::av_frame_alloc() };
        if p.is_null() {
            return Err(oom("allocating a frame"));
        }
        Ok(OwnedFrame(p))
    }

    /// A black full-range 4:2:0 picture of `w`x`h` (both even).
    fn black_yuvj420p(w: u32, h: u32) -> Result<OwnedFrame, SnapshotError> {
        let f = OwnedFrame::alloc()?;
        let (wi, hi) = (side(w), side(h));
        // SAFETY: fresh frame of ours; av_frame_get_buffer allocates each
        // plane with `linesize` ≥ its width, for its height rows, which is
        // what is written below.
        unsafe {
            (*f.0).format = sys::AVPixelFormat::AV_PIX_FMT_YUVJ420P as c_int;
            (*f.0).width = wi;
            (*f.0).height = hi;
            (*f.0).color_range = sys::AVColorRange::AVCOL_RANGE_JPEG;
            let rc = sys::av_frame_get_buffer(f.0, 0);
            if rc < 0 {
                return Err(ff("allocating a picture", rc));
            }
            // Full range: black is Y 0, Cb/Cr 128.
            for (plane, value, div) in [(0usize, 0u8, 1), (1, 128, 2), (2, 128, 2)] {
                let rows = (hi / div) as usize;
                let cols = (wi / div) as usize;
                let stride = (*f.0).linesize[plane] as isize;
                for r in 0..rows {
                    ptr::write_bytes((*f.0).data[plane].offset(r as isize * stride), value, cols);
                }
            }
        }
        Ok(f)
    }
}

impl Drop for OwnedFrame {
    fn drop(&mut self) {
        // SAFETY: owned, freed once (unrefs its buffers); accepts null.
        unsafe { sys::av_frame_free(&mut self.0) }
    }
}

struct Scaler(*mut sys::SwsContext);

impl Drop for Scaler {
    fn drop(&mut self) {
        // SAFETY: owned, freed once; accepts null.
        unsafe { sys::sws_freeContext(self.0) }
    }
}

/// `v` as a C int; every size here is at most [`MAX_SIDE`].
fn side(v: u32) -> c_int {
    v.min(MAX_SIDE) as c_int
}

// ---------------------------------------------------------------------------
// Sizes.

/// Rounds down to an even number, at least 2 (4:2:0 needs even sizes).
fn even(v: u64) -> u32 {
    (v.min(u64::from(MAX_SIDE)) as u32 & !1).max(2)
}

/// `w`x`h` scaled (up or down) to the largest size with its aspect ratio
/// that fits inside `bx`; even numbers.
fn scale_into(w: u32, h: u32, bx: (u32, u32)) -> (u32, u32) {
    let (w, h) = (u64::from(w.max(1)), u64::from(h.max(1)));
    let (bw, bh) = (u64::from(bx.0.max(1)), u64::from(bx.1.max(1)));
    if w * bh >= h * bw {
        // Wider than the box (or the same shape): the width touches.
        (even(bw), even((h * bw + w / 2) / w))
    } else {
        (even((w * bh + h / 2) / h), even(bh))
    }
}

/// The size of a `w`x`h` picture fitted inside `max`: aspect ratio kept,
/// never upscaled, even numbers, at least 2x2 and at most [`MAX_SIDE`].
pub fn fit(w: u32, h: u32, max: (u32, u32)) -> (u32, u32) {
    let max = (max.0.min(MAX_SIDE), max.1.min(MAX_SIDE));
    if w <= max.0 && h <= max.1 {
        (even(u64::from(w)), even(u64::from(h)))
    } else {
        scale_into(w, h, max)
    }
}

/// Where a `w`x`h` picture goes inside a `cell`: the largest rectangle with
/// its aspect ratio, centred (x, y, width, height; all even). `cell` is even.
fn placement(w: u32, h: u32, cell: (u32, u32)) -> (u32, u32, u32, u32) {
    let (pw, ph) = scale_into(w, h, cell);
    let (pw, ph) = (pw.min(cell.0), ph.min(cell.1));
    (((cell.0 - pw) / 2) & !1, ((cell.1 - ph) / 2) & !1, pw, ph)
}

// ---------------------------------------------------------------------------
// Decoding.

/// One decoded picture, owned (an `AVFrame` in the decoder's own pixel
/// format and size), ready for [`encode_jpeg`] or [`Strip::add`].
pub struct Decoded {
    frame: OwnedFrame,
}

// SAFETY: the AVFrame is owned by this value alone and its buffers are
// reference-counted with atomic counts; FFmpeg frames carry no thread
// affinity, so moving one to another thread (spawn_blocking) is sound.
unsafe impl Send for Decoded {}

impl std::fmt::Debug for Decoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoded")
            .field("width", &self.width())
            .field("height", &self.height())
            .field("format", &self.format())
            .finish()
    }
}

impl Decoded {
    /// Width in pixels, as decoded.
    pub fn width(&self) -> u32 {
        // SAFETY: the frame is ours and holds a picture (checked on decode).
        u32::try_from(unsafe { (*self.frame.0).width }).unwrap_or(0)
    }

    /// Height in pixels, as decoded.
    pub fn height(&self) -> u32 {
        // SAFETY: as in `width`.
        u32::try_from(unsafe { (*self.frame.0).height }).unwrap_or(0)
    }

    /// FFmpeg's name of the decoded pixel format (`yuv420p`, `yuv444p`,
    /// `yuv420p10le`…).
    pub fn format(&self) -> String {
        // SAFETY: as in `width`; the format was range-checked on decode;
        // av_get_pix_fmt_name returns a static string or null.
        unsafe {
            let Some(fmt) = pix_fmt(self.frame.0) else {
                return String::from("?");
            };
            let name = sys::av_get_pix_fmt_name(fmt);
            if name.is_null() {
                return String::from("?");
            }
            CStr::from_ptr(name).to_string_lossy().into_owned()
        }
    }

    /// The size it is shown at: the decoded size with a non-square sample
    /// aspect ratio applied to the width (rare outside broadcast sources).
    fn display_size(&self) -> (u32, u32) {
        let (w, h) = (self.width(), self.height());
        // SAFETY: as in `width`.
        let sar = unsafe { (*self.frame.0).sample_aspect_ratio };
        if sar.num > 0 && sar.den > 0 && sar.num != sar.den {
            let dw = u64::from(w) * sar.num as u64 / sar.den as u64;
            (dw.clamp(1, u64::from(MAX_SIDE)) as u32, h)
        } else {
            (w, h)
        }
    }
}

/// The frame's pixel format, if it is one FFmpeg names.
///
/// # Safety
/// `f` is a valid frame.
unsafe fn pix_fmt(f: *const sys::AVFrame) -> Option<sys::AVPixelFormat> {
    // SAFETY: per the contract.
    let v = unsafe { (*f).format };
    if !(0..sys::AVPixelFormat::AV_PIX_FMT_NB as c_int).contains(&v) {
        return None;
    }
    // SAFETY: AVPixelFormat is a C enum of contiguous values from -1 to
    // AV_PIX_FMT_NB; `v` is in that range (checked above).
    Some(unsafe { std::mem::transmute::<c_int, sys::AVPixelFormat>(v) })
}

fn find_decoder(codec: Codec) -> Result<*const sys::AVCodec, SnapshotError> {
    // SAFETY: registry look-ups with static C strings; results checked.
    let dec = unsafe {
        match codec {
            Codec::Opus => return Err(SnapshotError::NotVideo(codec)),
            Codec::Vp8 => sys::avcodec_find_decoder(sys::AVCodecID::AV_CODEC_ID_VP8),
            Codec::Vp9 => sys::avcodec_find_decoder(sys::AVCodecID::AV_CODEC_ID_VP9),
            Codec::H264 => sys::avcodec_find_decoder(sys::AVCodecID::AV_CODEC_ID_H264),
            // FFmpeg's native `av1` needs a hardware accelerator: name the
            // software decoders, never fall back to it.
            Codec::Av1 => {
                let dav1d = sys::avcodec_find_decoder_by_name(c"libdav1d".as_ptr());
                if dav1d.is_null() {
                    sys::avcodec_find_decoder_by_name(c"libaom-av1".as_ptr())
                } else {
                    dav1d
                }
            }
        }
    };
    if dec.is_null() {
        return Err(SnapshotError::NoDecoder(codec));
    }
    Ok(dec)
}

/// What a decode run has seen.
struct Progress {
    got: bool,
    /// The kept picture is flagged corrupt (decoded without its references).
    corrupt: bool,
    rejected: usize,
    last_error: Option<c_int>,
}

/// Decodes `frames` of `codec` (a keyframe first, then the frames after it,
/// in order; each one encoded unit as it flows through castgate: an H.264
/// Annex-B access unit with SPS/PPS in band on keyframes, a VP8/VP9 frame, an
/// AV1 low-overhead temporal unit) and returns the last picture decoded.
///
/// A frame the decoder refuses is skipped (counted in the error if no
/// picture comes at all): a damaged frame after a good keyframe still gives
/// the keyframe's picture. Pictures the decoder flags as corrupt are kept
/// only while no clean one has come. Blocking CPU work: run it off the async
/// runtime.
pub fn decode_last(codec: Codec, frames: &[&[u8]]) -> Result<Decoded, SnapshotError> {
    let decoder = find_decoder(codec)?;
    let ctx = CodecCtx::alloc(decoder)?;
    let pkt = Packet::alloc()?;
    let scratch = OwnedFrame::alloc()?;
    let last = OwnedFrame::alloc()?;
    let mut progress = Progress {
        got: false,
        corrupt: false,
        rejected: 0,
        last_error: None,
    };
    // SAFETY: all pointers are ours (wrappers above, freed by Drop); packet
    // data is allocated by av_new_packet with len + padding bytes and filled
    // with exactly len bytes.
    unsafe {
        (*ctx.0).thread_count = 1;
        // A forged header must not make the decoder allocate gigabytes.
        (*ctx.0).max_pixels = MAX_DECODED_PIXELS;
        let rc = sys::avcodec_open2(ctx.0, decoder, ptr::null_mut());
        if rc < 0 {
            return Err(ff("opening the video decoder", rc));
        }
        for data in frames {
            if data.is_empty() {
                continue;
            }
            let Ok(len) = c_int::try_from(data.len()) else {
                progress.rejected += 1;
                continue;
            };
            let rc = sys::av_new_packet(pkt.0, len);
            if rc < 0 {
                return Err(ff("allocating a packet", rc));
            }
            ptr::copy_nonoverlapping(data.as_ptr(), (*pkt.0).data, data.len());
            let mut rc = sys::avcodec_send_packet(ctx.0, pkt.0);
            if rc == sys::AVERROR(libc::EAGAIN) {
                // Output waiting first (not expected: it is drained after
                // every packet), then the packet once more.
                receive(ctx.0, &scratch, &last, &mut progress);
                rc = sys::avcodec_send_packet(ctx.0, pkt.0);
            }
            sys::av_packet_unref(pkt.0);
            if rc < 0 {
                progress.rejected += 1;
                progress.last_error = Some(rc);
            }
            receive(ctx.0, &scratch, &last, &mut progress);
        }
        // Drain: some decoders hold the last picture(s) until told the
        // stream ended (reordering, frame delay).
        if sys::avcodec_send_packet(ctx.0, ptr::null()) >= 0 {
            receive(ctx.0, &scratch, &last, &mut progress);
        }
    }
    if !progress.got {
        return Err(SnapshotError::NoPicture {
            frames: frames.len(),
            rejected: progress.rejected,
            last_error: progress.last_error.map(ffmpeg_next::Error::from),
        });
    }
    Ok(Decoded { frame: last })
}

/// Receives every picture ready, keeping the last usable one in `last`.
///
/// # Safety
/// `ctx` is an open decoder; `scratch` and `last` are allocated frames.
unsafe fn receive(
    ctx: *mut sys::AVCodecContext,
    scratch: &OwnedFrame,
    last: &OwnedFrame,
    progress: &mut Progress,
) {
    // SAFETY: per the contract; receive_frame unrefs `scratch` first, and
    // move_ref leaves it blank again.
    unsafe {
        loop {
            let rc = sys::avcodec_receive_frame(ctx, scratch.0);
            if rc == sys::AVERROR(libc::EAGAIN) || rc == sys::AVERROR_EOF {
                return;
            }
            if rc < 0 {
                // A decoding error surfacing late (not expected with one
                // thread); stop here rather than spin on it.
                progress.rejected += 1;
                progress.last_error = Some(rc);
                return;
            }
            let f = scratch.0;
            let usable = (*f).width > 0
                && (*f).height > 0
                && !(*f).data[0].is_null()
                && pix_fmt(f).is_some();
            let corrupt = (*f).flags & sys::AV_FRAME_FLAG_CORRUPT != 0;
            if usable && (!corrupt || !progress.got || progress.corrupt) {
                sys::av_frame_unref(last.0);
                sys::av_frame_move_ref(last.0, f);
                progress.got = true;
                progress.corrupt = corrupt;
            } else {
                sys::av_frame_unref(f);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Scaling and encoding.

impl Scaler {
    /// Scales `src` (any pixel format swscale reads) into the rectangle
    /// `rect` (x, y, w, h; all even) of `dst`, a YUVJ420P picture.
    ///
    /// # Safety
    /// `src` holds a decoded picture; `dst` is a writable YUVJ420P picture
    /// and `rect` lies inside it.
    unsafe fn scale(
        &mut self,
        src: *const sys::AVFrame,
        dst: *mut sys::AVFrame,
        rect: (u32, u32, u32, u32),
    ) -> Result<(), SnapshotError> {
        // SAFETY: per the contract; the destination pointers are offset
        // inside `dst`'s planes (x, y even, so the chroma offsets are exact).
        unsafe {
            let (w, h) = ((*src).width, (*src).height);
            let fmt = pix_fmt(src)
                .filter(|&f| sys::sws_isSupportedInput(f) > 0)
                .ok_or_else(|| {
                    SnapshotError::Unsupported(format!(
                        "cannot scale pictures of pixel format {}",
                        (*src).format
                    ))
                })?;
            let (x, y, pw, ph) = (rect.0 as isize, rect.1 as isize, side(rect.2), side(rect.3));
            self.0 = sys::sws_getCachedContext(
                self.0,
                w,
                h,
                fmt,
                pw,
                ph,
                sys::AVPixelFormat::AV_PIX_FMT_YUVJ420P,
                sys::SWS_BILINEAR,
                ptr::null_mut(),
                ptr::null_mut(),
                ptr::null(),
            );
            if self.0.is_null() {
                return Err(SnapshotError::Unsupported(format!(
                    "cannot scale {w}x{h} pictures of pixel format {} to {pw}x{ph}",
                    (*src).format
                )));
            }
            // Full-range sources flagged only by color_range (yuv420p with
            // AVCOL_RANGE_JPEG, e.g. VP9) would otherwise be read as
            // limited range; the output is always full range (JPEG).
            let full = (*src).color_range == sys::AVColorRange::AVCOL_RANGE_JPEG;
            let coefficients = sys::sws_getCoefficients(sys::SWS_CS_DEFAULT);
            sys::sws_setColorspaceDetails(
                self.0,
                coefficients,
                c_int::from(full),
                coefficients,
                1,
                0,
                1 << 16,
                1 << 16,
            );
            let d = &*dst;
            let planes = [
                d.data[0].offset(y * d.linesize[0] as isize + x),
                d.data[1].offset((y / 2) * d.linesize[1] as isize + x / 2),
                d.data[2].offset((y / 2) * d.linesize[2] as isize + x / 2),
                ptr::null_mut(),
            ];
            let strides = [d.linesize[0], d.linesize[1], d.linesize[2], 0];
            let rc = sys::sws_scale(
                self.0,
                (*src).data.as_ptr() as *const *const u8,
                (*src).linesize.as_ptr(),
                0,
                h,
                planes.as_ptr(),
                strides.as_ptr(),
            );
            if rc <= 0 {
                return Err(ff("scaling a picture", rc.min(-1)));
            }
        }
        Ok(())
    }
}

/// Encodes `pic` (a YUVJ420P picture of ours) as one JPEG with the mjpeg
/// quantizer `qscale` (clamped to 2–31).
///
/// # Safety
/// `pic` is a valid YUVJ420P picture.
unsafe fn encode_mjpeg(pic: &OwnedFrame, qscale: u8) -> Result<Vec<u8>, SnapshotError> {
    let q = c_int::from(qscale.clamp(2, 31));
    // SAFETY: per the contract; the encoder context and packet are ours.
    unsafe {
        let encoder = sys::avcodec_find_encoder(sys::AVCodecID::AV_CODEC_ID_MJPEG);
        if encoder.is_null() {
            return Err(SnapshotError::Unsupported(
                "this FFmpeg has no JPEG (mjpeg) encoder".into(),
            ));
        }
        let ctx = CodecCtx::alloc(encoder)?;
        let e = &mut *ctx.0;
        e.width = (*pic.0).width;
        e.height = (*pic.0).height;
        e.pix_fmt = sys::AVPixelFormat::AV_PIX_FMT_YUVJ420P;
        e.color_range = sys::AVColorRange::AVCOL_RANGE_JPEG;
        e.time_base = sys::AVRational { num: 1, den: 25 };
        e.thread_count = 1;
        e.flags |= sys::AV_CODEC_FLAG_QSCALE as c_int;
        e.global_quality = sys::FF_QP2LAMBDA * q;
        let rc = sys::avcodec_open2(ctx.0, encoder, ptr::null_mut());
        if rc < 0 {
            return Err(ff("opening the JPEG encoder", rc));
        }
        // With AV_CODEC_FLAG_QSCALE the encoder takes the quantizer from the
        // picture, not from global_quality (the ffmpeg CLI copies it over
        // itself): without this line every qscale gives the same JPEG.
        (*pic.0).quality = sys::FF_QP2LAMBDA * q;
        (*pic.0).pts = 0;
        let rc = sys::avcodec_send_frame(ctx.0, pic.0);
        if rc < 0 {
            return Err(ff("encoding a JPEG", rc));
        }
        let rc = sys::avcodec_send_frame(ctx.0, ptr::null());
        if rc < 0 && rc != sys::AVERROR_EOF {
            return Err(ff("encoding a JPEG", rc));
        }
        let pkt = Packet::alloc()?;
        let rc = sys::avcodec_receive_packet(ctx.0, pkt.0);
        if rc < 0 {
            return Err(ff("encoding a JPEG", rc));
        }
        let p = &*pkt.0;
        if p.data.is_null() || p.size <= 0 {
            return Err(ff("encoding a JPEG", sys::AVERROR_INVALIDDATA));
        }
        Ok(std::slice::from_raw_parts(p.data, p.size as usize).to_vec())
    }
}

/// Encodes `pic` as a JPEG fitted inside `max` (aspect ratio kept, even
/// sizes, never upscaled; see [`fit`]), converted to full-range 4:2:0
/// whatever its pixel format.
///
/// `qscale` is the mjpeg quantizer, 2 (best, largest) to 31 (worst,
/// smallest), clamped to that range; [`DEFAULT_QSCALE`] suits previews.
/// Blocking CPU work: run it off the async runtime.
pub fn encode_jpeg(pic: &Decoded, max: (u32, u32), qscale: u8) -> Result<Picture, SnapshotError> {
    let (sw, sh) = pic.display_size();
    let (width, height) = fit(sw, sh, max);
    let out = OwnedFrame::black_yuvj420p(width, height)?;
    let mut scaler = Scaler(ptr::null_mut());
    // SAFETY: `pic` holds a decoded picture (checked on decode); `out` is a
    // fresh YUVJ420P picture of exactly the rectangle written.
    let jpeg = unsafe {
        scaler.scale(pic.frame.0, out.0, (0, 0, width, height))?;
        encode_mjpeg(&out, qscale)?
    };
    Ok(Picture {
        jpeg,
        width,
        height,
    })
}

/// Decodes `frames` (see [`decode_last`]) and encodes the last picture as a
/// JPEG fitted inside `max` with the mjpeg quantizer `qscale` (see
/// [`encode_jpeg`]). Blocking CPU work: run it off the async runtime.
pub fn jpeg_of(
    codec: Codec,
    frames: &[&[u8]],
    max: (u32, u32),
    qscale: u8,
) -> Result<Picture, SnapshotError> {
    let pic = decode_last(codec, frames)?;
    encode_jpeg(&pic, max, qscale)
}

// ---------------------------------------------------------------------------
// Strips.

/// Tiles pictures into one JPEG grid (a contact sheet, for hover previews of
/// recordings): `cols` x `rows` cells of `cell` size, filled left to right,
/// top to bottom, each picture scaled to fit its cell and letterboxed on
/// black. Cells not filled stay black. Blocking CPU work: build it off the
/// async runtime.
pub struct Strip {
    cols: u32,
    rows: u32,
    cell: (u32, u32),
    canvas: OwnedFrame,
    scaler: Scaler,
    next: u32,
}

// SAFETY: the canvas and the scaler are owned by this value alone and used
// only through `&mut self`; neither has thread affinity.
unsafe impl Send for Strip {}

impl std::fmt::Debug for Strip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Strip")
            .field("cols", &self.cols)
            .field("rows", &self.rows)
            .field("cell", &self.cell)
            .field("filled", &self.next)
            .finish_non_exhaustive()
    }
}

impl Strip {
    /// An all-black grid of `cols` x `rows` cells of `cell` size (each side
    /// rounded down to an even number, at least 2). Fails when there are no
    /// cells or the grid would be wider or taller than [`MAX_SIDE`].
    pub fn new(cols: u32, rows: u32, cell: (u32, u32)) -> Result<Strip, SnapshotError> {
        if cols == 0 || rows == 0 {
            return Err(SnapshotError::Layout(format!(
                "{cols} columns x {rows} rows has no cells"
            )));
        }
        let cell = (even(u64::from(cell.0)), even(u64::from(cell.1)));
        let (w, h) = (
            u64::from(cols) * u64::from(cell.0),
            u64::from(rows) * u64::from(cell.1),
        );
        if w > u64::from(MAX_SIDE) || h > u64::from(MAX_SIDE) {
            return Err(SnapshotError::Layout(format!(
                "{w}x{h} is larger than {MAX_SIDE}x{MAX_SIDE}"
            )));
        }
        Ok(Strip {
            cols,
            rows,
            cell,
            canvas: OwnedFrame::black_yuvj420p(w as u32, h as u32)?,
            scaler: Scaler(ptr::null_mut()),
            next: 0,
        })
    }

    /// The cell size actually used (even numbers).
    pub fn cell(&self) -> (u32, u32) {
        self.cell
    }

    /// Cells filled or skipped so far.
    pub fn filled(&self) -> u32 {
        self.next
    }

    /// Cells in the grid.
    pub fn capacity(&self) -> u32 {
        self.cols * self.rows
    }

    /// Scales `pic` into the next cell.
    pub fn add(&mut self, pic: &Decoded) -> Result<(), SnapshotError> {
        let index = self.take_cell()?;
        let (cx, cy) = (
            (index % self.cols) * self.cell.0,
            (index / self.cols) * self.cell.1,
        );
        let (dw, dh) = pic.display_size();
        let (x, y, w, h) = placement(dw, dh, self.cell);
        // SAFETY: `pic` holds a decoded picture; the canvas is ours, not
        // shared with an encoder until `finish`; the rectangle lies inside
        // the cell, which lies inside the canvas (checked in `new`).
        unsafe {
            let rc = sys::av_frame_make_writable(self.canvas.0);
            if rc < 0 {
                return Err(ff("allocating the strip", rc));
            }
            self.scaler
                .scale(pic.frame.0, self.canvas.0, (cx + x, cy + y, w, h))
        }
    }

    /// Leaves the next cell black (a time with no picture), so the cells
    /// after it keep their places.
    pub fn skip(&mut self) -> Result<(), SnapshotError> {
        self.take_cell().map(|_| ())
    }

    fn take_cell(&mut self) -> Result<u32, SnapshotError> {
        if self.next >= self.capacity() {
            return Err(SnapshotError::StripFull(self.capacity()));
        }
        self.next += 1;
        Ok(self.next - 1)
    }

    /// Encodes the grid as one JPEG with the mjpeg quantizer `qscale` (see
    /// [`encode_jpeg`]).
    pub fn finish(self, qscale: u8) -> Result<Picture, SnapshotError> {
        // SAFETY: the canvas is a YUVJ420P picture of ours.
        let jpeg = unsafe { encode_mjpeg(&self.canvas, qscale)? };
        Ok(Picture {
            jpeg,
            width: self.cols * self.cell.0,
            height: self.rows * self.cell.1,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::process::Command;

    use super::*;

    const VIDEO: [Codec; 4] = [Codec::Vp8, Codec::Vp9, Codec::H264, Codec::Av1];

    /// Red on the left half, blue on the right half.
    fn halves(size: &str, frames: u32) -> String {
        format!(
            "color=c=red:s={size}:r=10:d={},\
             drawbox=x=iw/2:y=0:w=iw/2:h=ih:color=blue:t=fill",
            f64::from(frames) / 10.0
        )
    }

    /// 10 frames of 320x240: all red for frames 0–4, then the right half
    /// turns blue (so the last picture differs from the keyframe's).
    const CHANGING: &str = "color=c=red:s=320x240:r=10:d=1,\
        drawbox=x=160:y=0:w=160:h=240:color=blue:t=fill:enable='gte(n,5)'";

    fn have_ffmpeg() -> bool {
        let ok = Command::new("ffmpeg")
            .arg("-version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!("skipped: the ffmpeg CLI (used to make test clips) is not installed");
        }
        ok
    }

    fn has_encoder(name: &str) -> bool {
        let out = Command::new("ffmpeg")
            .args(["-hide_banner", "-encoders"])
            .output()
            .expect("run ffmpeg -encoders");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(name))
    }

    /// A scratch directory, removed on drop.
    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let p = std::env::temp_dir()
                .join(format!("castgate-snapshot-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).expect("create the scratch directory");
            Dir(p)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Encodes the lavfi `source` with `args` (split at spaces) into `out`
    /// and returns the file.
    fn encode(dir: &Dir, source: &str, args: &str, out: &str) -> Vec<u8> {
        let path = dir.0.join(out);
        let o = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi"])
            .args(["-i", source])
            .args(args.split_whitespace())
            .arg(&path)
            .output()
            .expect("run ffmpeg");
        assert!(
            o.status.success(),
            "ffmpeg {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::fs::read(&path).expect("read the encoded clip")
    }

    /// The frames of an IVF file (32-byte file header, then a 12-byte header
    /// before each frame: size LE32, pts LE64).
    fn ivf_frames(data: &[u8]) -> Vec<Vec<u8>> {
        assert_eq!(&data[..4], b"DKIF");
        let mut at = usize::from(u16::from_le_bytes([data[6], data[7]]));
        let mut frames = Vec::new();
        while at + 12 <= data.len() {
            let size = u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
            at += 12;
            frames.push(data[at..at + size as usize].to_vec());
            at += size as usize;
        }
        assert_eq!(at, data.len(), "IVF ends on a frame boundary");
        frames
    }

    /// An Annex-B stream (x264 with `aud=1`) cut into access units at each
    /// access unit delimiter.
    fn h264_access_units(data: &[u8]) -> Vec<Vec<u8>> {
        let starts: Vec<usize> = (0..data.len().saturating_sub(3))
            .filter(|&i| data[i..i + 3] == [0, 0, 1] && data[i + 3] & 0x1f == 9)
            .map(|i| if i > 0 && data[i - 1] == 0 { i - 1 } else { i })
            .collect();
        assert_eq!(starts.first(), Some(&0), "the stream starts with an AUD");
        starts
            .iter()
            .zip(starts.iter().skip(1).chain(std::iter::once(&data.len())))
            .map(|(&a, &b)| data[a..b].to_vec())
            .collect()
    }

    fn refs(frames: &[Vec<u8>]) -> Vec<&[u8]> {
        frames.iter().map(Vec::as_slice).collect()
    }

    fn assert_jpeg(p: &Picture) {
        assert!(p.jpeg.starts_with(&[0xff, 0xd8]), "JPEG SOI");
        assert!(p.jpeg.ends_with(&[0xff, 0xd9]), "JPEG EOI");
    }

    /// The JPEG's size (by ffprobe) and its pixels as RGB24 (by ffmpeg).
    fn rgb_of(dir: &Dir, jpeg: &[u8]) -> (u32, u32, Vec<u8>) {
        let path = dir.0.join("snap.jpg");
        std::fs::write(&path, jpeg).expect("write the JPEG");
        let probe = Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "v:0"])
            .args(["-show_entries", "stream=width,height", "-of", "csv=p=0"])
            .arg(&path)
            .output()
            .expect("run ffprobe");
        assert!(probe.status.success(), "ffprobe reads the JPEG");
        let text = String::from_utf8_lossy(&probe.stdout);
        let (w, h) = text.trim().split_once(',').expect("width,height");
        let (w, h): (u32, u32) = (w.parse().expect("width"), h.parse().expect("height"));
        let raw = Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(&path)
            .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
            .output()
            .expect("run ffmpeg");
        assert!(raw.status.success(), "ffmpeg decodes the JPEG");
        assert_eq!(raw.stdout.len(), (w * h * 3) as usize);
        (w, h, raw.stdout)
    }

    /// Mean RGB of the rectangle x0..x1, y0..y1.
    fn mean(rgb: &[u8], width: u32, (x0, y0, x1, y1): (u32, u32, u32, u32)) -> [u32; 3] {
        let mut sum = [0u64; 3];
        for y in y0..y1 {
            for x in x0..x1 {
                let i = ((y * width + x) * 3) as usize;
                for c in 0..3 {
                    sum[c] += u64::from(rgb[i + c]);
                }
            }
        }
        let n = u64::from((x1 - x0) * (y1 - y0));
        sum.map(|s| (s / n) as u32)
    }

    fn assert_color(rgb: &[u8], width: u32, rect: (u32, u32, u32, u32), want: &str) {
        let [r, g, b] = mean(rgb, width, rect);
        let ok = match want {
            "red" => r > 180 && g < 70 && b < 70,
            "blue" => b > 180 && r < 70 && g < 70,
            // lavfi's green is #008000.
            "green" => g > 100 && r < 60 && b < 60,
            "black" => r < 30 && g < 30 && b < 30,
            _ => unreachable!("unknown colour {want}"),
        };
        assert!(ok, "{rect:?} should be {want}, is rgb({r}, {g}, {b})");
    }

    /// Left half red, right half blue.
    fn assert_halves(dir: &Dir, p: &Picture) {
        let (w, h, rgb) = rgb_of(dir, &p.jpeg);
        assert_eq!((w, h), (p.width, p.height), "ffprobe's size");
        assert_color(&rgb, w, (w / 8, h / 8, w * 3 / 8, h * 7 / 8), "red");
        assert_color(&rgb, w, (w * 5 / 8, h / 8, w * 7 / 8, h * 7 / 8), "blue");
    }

    fn assert_all_red(dir: &Dir, p: &Picture) {
        let (w, h, rgb) = rgb_of(dir, &p.jpeg);
        assert_color(&rgb, w, (w / 8, h / 8, w * 3 / 8, h * 7 / 8), "red");
        assert_color(&rgb, w, (w * 5 / 8, h / 8, w * 7 / 8, h * 7 / 8), "red");
    }

    #[test]
    fn fit_keeps_the_aspect_and_never_upscales() {
        assert_eq!(fit(1280, 720, (640, 360)), (640, 360));
        assert_eq!(fit(1920, 1080, (640, 360)), (640, 360));
        assert_eq!(fit(320, 240, (640, 360)), (320, 240));
        assert_eq!(fit(640, 480, (640, 360)), (480, 360));
        assert_eq!(fit(720, 1280, (640, 360)), (202, 360));
        assert_eq!(fit(321, 241, (640, 360)), (320, 240));
        assert_eq!(fit(1, 1, (640, 360)), (2, 2));
        assert_eq!(fit(4000, 10, (640, 360)), (640, 2));
        assert_eq!(
            fit(100_000, 100_000, (u32::MAX, u32::MAX)),
            (MAX_SIDE, MAX_SIDE)
        );
        assert_eq!(fit(1280, 720, (0, 0)), (2, 2));
    }

    #[test]
    fn placement_letterboxes_inside_the_cell() {
        assert_eq!(placement(1280, 720, (160, 90)), (0, 0, 160, 90));
        // 4:3 in 16:9: pillarboxed.
        assert_eq!(placement(320, 240, (160, 90)), (20, 0, 120, 90));
        // Small pictures fill their cell (strips may scale up).
        assert_eq!(placement(64, 36, (160, 90)), (0, 0, 160, 90));
        let (x, y, w, h) = placement(333, 777, (158, 88));
        assert!(x % 2 == 0 && y % 2 == 0 && w % 2 == 0 && h % 2 == 0);
        assert!(x + w <= 158 && y + h <= 88);
    }

    #[test]
    fn random_bytes_are_an_error_not_a_panic() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for codec in VIDEO {
            for round in 0..40 {
                let frames: Vec<Vec<u8>> = (0..1 + round % 4)
                    .map(|_| {
                        let len = (next() % 3000) as usize;
                        (0..len).map(|_| next() as u8).collect()
                    })
                    .collect();
                let r = jpeg_of(codec, &refs(&frames), (640, 360), DEFAULT_QSCALE);
                assert!(
                    r.is_err(),
                    "{codec:?} round {round}: random bytes gave a picture"
                );
            }
            // Start codes and OBU-ish headers around random bytes.
            let mut tricky = vec![0, 0, 0, 1, 0x67, 0x42, 0, 0x1f, 0, 0, 1, 0x65];
            tricky.extend((0..500).map(|_| next() as u8));
            let r = jpeg_of(codec, &[&tricky, &[0x12, 0, 0x0a, 0x0b]], (64, 64), 2);
            assert!(r.is_err(), "{codec:?}: tricky bytes gave a picture");
            assert!(matches!(
                decode_last(codec, &[]),
                Err(SnapshotError::NoPicture { frames: 0, .. })
            ));
        }
        assert!(matches!(
            decode_last(Codec::Opus, &[b"OpusHead"]),
            Err(SnapshotError::NotVideo(Codec::Opus))
        ));
        let e = decode_last(Codec::Vp8, &[&[1, 2, 3, 4, 5]]).expect_err("no picture");
        assert!(
            e.to_string()
                .starts_with("no picture could be decoded from 1 frame"),
            "{e}"
        );
    }

    #[test]
    fn h264_keyframe_is_scaled_to_fit() {
        if !have_ffmpeg() {
            return;
        }
        let dir = Dir::new("h264-key");
        let clip = encode(
            &dir,
            &halves("1280x720", 1),
            "-frames:v 1 -c:v libx264 -pix_fmt yuv420p",
            "key.h264",
        );
        // One access unit: SPS, PPS, IDR (Annex-B, as castgate carries it).
        let pic = jpeg_of(Codec::H264, &[&clip], (640, 360), DEFAULT_QSCALE).expect("picture");
        assert_jpeg(&pic);
        assert_eq!((pic.width, pic.height), (640, 360));
        assert_halves(&dir, &pic);
        // Never upscaled: the same keyframe with a larger maximum.
        let pic = jpeg_of(Codec::H264, &[&clip], (1920, 1080), DEFAULT_QSCALE).expect("picture");
        assert_eq!((pic.width, pic.height), (1280, 720));
        assert_halves(&dir, &pic);
    }

    #[test]
    fn h264_access_units_with_reordering_give_the_last_picture() {
        if !have_ffmpeg() {
            return;
        }
        let dir = Dir::new("h264-gop");
        let clip = encode(
            &dir,
            CHANGING,
            "-c:v libx264 -pix_fmt yuv420p -bf 2 -g 100 -x264-params aud=1 -f h264",
            "gop.h264",
        );
        let aus = h264_access_units(&clip);
        assert_eq!(aus.len(), 10);
        let pic = jpeg_of(Codec::H264, &refs(&aus), (640, 360), DEFAULT_QSCALE).expect("picture");
        assert_jpeg(&pic);
        assert_eq!((pic.width, pic.height), (320, 240), "never upscaled");
        assert_halves(&dir, &pic);
        // The keyframe alone (B-frames make the decoder hold it until drained).
        let pic =
            jpeg_of(Codec::H264, &refs(&aus[..1]), (640, 360), DEFAULT_QSCALE).expect("picture");
        assert_all_red(&dir, &pic);
    }

    #[test]
    fn vp8_keyframe_then_deltas_give_the_last_picture() {
        if !have_ffmpeg() {
            return;
        }
        let dir = Dir::new("vp8");
        let clip = encode(
            &dir,
            CHANGING,
            "-c:v libvpx -deadline realtime -auto-alt-ref 0 -g 100 -f ivf",
            "clip.ivf",
        );
        let frames = ivf_frames(&clip);
        assert_eq!(frames.len(), 10);
        assert_eq!(frames[0][0] & 1, 0, "VP8 keyframe first");
        let pic = jpeg_of(Codec::Vp8, &refs(&frames), (640, 360), DEFAULT_QSCALE).expect("picture");
        assert_jpeg(&pic);
        assert_eq!((pic.width, pic.height), (320, 240), "never upscaled");
        assert_halves(&dir, &pic);
        let pic =
            jpeg_of(Codec::Vp8, &refs(&frames[..3]), (640, 360), DEFAULT_QSCALE).expect("picture");
        assert_all_red(&dir, &pic);
        // A frame the decoder refuses after the keyframe: the keyframe's
        // picture still comes out.
        let junk = vec![0xffu8; 50];
        let pic = jpeg_of(Codec::Vp8, &[&frames[0], &junk], (160, 120), DEFAULT_QSCALE)
            .expect("picture despite the junk frame");
        assert_eq!((pic.width, pic.height), (160, 120));
        assert_all_red(&dir, &pic);
        // Deltas without their keyframe: the decoder discards them (an
        // error or a picture are both acceptable here, a panic is not).
        let _ = jpeg_of(Codec::Vp8, &refs(&frames[5..]), (640, 360), DEFAULT_QSCALE);
    }

    #[test]
    fn vp9_444_and_10_bit_pictures_convert() {
        if !have_ffmpeg() {
            return;
        }
        let dir = Dir::new("vp9");
        for (pix_fmt, decoded) in [("yuv444p", "yuv444p"), ("yuv420p10le", "yuv420p10le")] {
            let clip = encode(
                &dir,
                &halves("320x240", 3),
                &format!(
                    "-c:v libvpx-vp9 -deadline realtime -cpu-used 8 -pix_fmt {pix_fmt} -f ivf"
                ),
                &format!("{pix_fmt}.ivf"),
            );
            let frames = ivf_frames(&clip);
            let pic = decode_last(Codec::Vp9, &refs(&frames)).expect("decoded");
            assert_eq!(pic.format(), decoded);
            assert_eq!((pic.width(), pic.height()), (320, 240));
            let jpeg = encode_jpeg(&pic, (200, 200), DEFAULT_QSCALE).expect("JPEG");
            assert_jpeg(&jpeg);
            assert_eq!((jpeg.width, jpeg.height), (200, 150));
            assert_halves(&dir, &jpeg);
        }
    }

    #[test]
    fn av1_temporal_units_give_the_last_picture() {
        if !have_ffmpeg() {
            return;
        }
        let args = if has_encoder("libaom-av1") {
            "-c:v libaom-av1 -cpu-used 8 -g 100 -f ivf"
        } else if has_encoder("libsvtav1") {
            "-c:v libsvtav1 -preset 12 -g 100 -f ivf"
        } else {
            eprintln!("skipped: this ffmpeg has no AV1 encoder (libaom-av1, libsvtav1)");
            return;
        };
        let dir = Dir::new("av1");
        let frames = ivf_frames(&encode(&dir, CHANGING, args, "clip.ivf"));
        let pic = jpeg_of(Codec::Av1, &refs(&frames), (640, 360), DEFAULT_QSCALE).expect("picture");
        assert_jpeg(&pic);
        assert_eq!((pic.width, pic.height), (320, 240));
        assert_halves(&dir, &pic);
        let pic =
            jpeg_of(Codec::Av1, &refs(&frames[..1]), (640, 360), DEFAULT_QSCALE).expect("picture");
        assert_all_red(&dir, &pic);
    }

    #[test]
    fn damaged_frames_never_panic() {
        if !have_ffmpeg() {
            return;
        }
        let dir = Dir::new("damaged");
        let h264 = encode(
            &dir,
            &halves("320x240", 1),
            "-frames:v 1 -c:v libx264 -f h264",
            "key.h264",
        );
        let vp8 = ivf_frames(&encode(
            &dir,
            &halves("320x240", 1),
            "-frames:v 1 -c:v libvpx -f ivf",
            "key.ivf",
        ))
        .remove(0);
        let vp9 = ivf_frames(&encode(
            &dir,
            &halves("320x240", 1),
            "-frames:v 1 -c:v libvpx-vp9 -deadline realtime -f ivf",
            "key9.ivf",
        ))
        .remove(0);
        for (codec, frame) in [(Codec::H264, h264), (Codec::Vp8, vp8), (Codec::Vp9, vp9)] {
            // Every truncation length up to 64, then coarser.
            let cuts = (0..frame.len().min(64)).chain((64..frame.len()).step_by(37));
            for cut in cuts {
                let _ = jpeg_of(codec, &[&frame[..cut]], (64, 64), DEFAULT_QSCALE);
            }
            // Single flipped bits and overwritten bytes along the frame.
            for i in (0..frame.len()).step_by(7) {
                let mut bad = frame.clone();
                bad[i] ^= 1 << (i % 8);
                let _ = jpeg_of(codec, &[&bad], (64, 64), DEFAULT_QSCALE);
                bad[i] = 0xff;
                let _ = jpeg_of(codec, &[&frame, &bad, &bad], (64, 64), DEFAULT_QSCALE);
            }
        }
    }

    #[test]
    fn full_range_sources_keep_their_levels() {
        if !have_ffmpeg() {
            return;
        }
        let dir = Dir::new("range");
        // Grey 64 coded limited (Y 71) and full range (Y 64, flagged only by
        // color_range on a yuv420p picture): both must come out as 64.
        for (range, vf) in [
            ("tv", "format=yuv420p"),
            ("pc", "scale=out_range=full,format=yuv420p"),
        ] {
            let frames = ivf_frames(&encode(
                &dir,
                "color=c=0x404040:s=320x240:d=0.1",
                &format!("-vf {vf} -color_range {range} -c:v libvpx-vp9 -deadline realtime -f ivf"),
                &format!("{range}.ivf"),
            ));
            let pic = jpeg_of(Codec::Vp9, &refs(&frames), (320, 240), 2).expect("picture");
            let (w, h, rgb) = rgb_of(&dir, &pic.jpeg);
            let [r, g, b] = mean(&rgb, w, (0, 0, w, h));
            for c in [r, g, b] {
                assert!(c.abs_diff(64) <= 3, "{range}: rgb({r}, {g}, {b}), want 64");
            }
        }
    }

    #[test]
    fn qscale_trades_size_for_quality() {
        if !have_ffmpeg() {
            return;
        }
        let dir = Dir::new("qscale");
        let clip = encode(
            &dir,
            "testsrc2=s=640x360:d=0.1",
            "-frames:v 1 -c:v libx264 -pix_fmt yuv420p -f h264",
            "key.h264",
        );
        let pic = decode_last(Codec::H264, &[&clip]).expect("decoded");
        let best = encode_jpeg(&pic, (640, 360), 2).expect("q2");
        let worst = encode_jpeg(&pic, (640, 360), 31).expect("q31");
        let zero = encode_jpeg(&pic, (640, 360), 0).expect("clamped to 2");
        assert_jpeg(&best);
        assert_jpeg(&worst);
        assert!(
            best.jpeg.len() > 2 * worst.jpeg.len(),
            "q2 {} bytes, q31 {} bytes",
            best.jpeg.len(),
            worst.jpeg.len()
        );
        assert_eq!(zero.jpeg.len(), best.jpeg.len());
    }

    #[test]
    fn strip_tiles_pictures_in_a_grid() {
        if !have_ffmpeg() {
            return;
        }
        let dir = Dir::new("strip");
        let mut pics = Vec::new();
        for colour in ["red", "green", "blue"] {
            let frames = ivf_frames(&encode(
                &dir,
                &format!("color=c={colour}:s=320x240:d=0.1"),
                "-frames:v 1 -c:v libvpx -f ivf",
                &format!("{colour}.ivf"),
            ));
            pics.push(decode_last(Codec::Vp8, &refs(&frames)).expect("decoded"));
        }
        let mut strip = Strip::new(3, 1, (160, 90)).expect("strip");
        for pic in &pics {
            strip.add(pic).expect("add");
        }
        assert!(matches!(
            strip.add(&pics[0]),
            Err(SnapshotError::StripFull(3))
        ));
        let out = strip.finish(DEFAULT_QSCALE).expect("JPEG");
        assert_jpeg(&out);
        assert_eq!((out.width, out.height), (480, 90));
        let (w, h, rgb) = rgb_of(&dir, &out.jpeg);
        assert_eq!((w, h), (480, 90));
        // 4:3 in 16:9 cells: 120x90 pictures at x = 20 in each cell.
        for (i, colour) in ["red", "green", "blue"].into_iter().enumerate() {
            let x = i as u32 * 160;
            assert_color(&rgb, w, (x + 30, 10, x + 130, 80), colour);
            assert_color(&rgb, w, (x + 2, 10, x + 16, 80), "black");
            assert_color(&rgb, w, (x + 144, 10, x + 158, 80), "black");
        }

        // Skipped and unfilled cells stay black; odd cell sizes become even.
        let mut strip = Strip::new(2, 2, (81, 61)).expect("strip");
        assert_eq!(strip.cell(), (80, 60));
        assert_eq!(strip.capacity(), 4);
        strip.skip().expect("skip");
        strip.add(&pics[2]).expect("add");
        assert_eq!(strip.filled(), 2);
        let out = strip.finish(DEFAULT_QSCALE).expect("JPEG");
        let (w, h, rgb) = rgb_of(&dir, &out.jpeg);
        assert_eq!((w, h), (160, 120));
        assert_color(&rgb, w, (10, 10, 70, 50), "black");
        assert_color(&rgb, w, (90, 10, 150, 50), "blue");
        assert_color(&rgb, w, (10, 70, 150, 110), "black");
    }

    #[test]
    fn strip_layouts_are_checked() {
        assert!(matches!(
            Strip::new(0, 1, (160, 90)),
            Err(SnapshotError::Layout(_))
        ));
        assert!(matches!(
            Strip::new(1, 0, (160, 90)),
            Err(SnapshotError::Layout(_))
        ));
        assert!(matches!(
            Strip::new(1000, 1, (160, 90)),
            Err(SnapshotError::Layout(_))
        ));
        assert!(matches!(
            Strip::new(u32::MAX, u32::MAX, (u32::MAX, u32::MAX)),
            Err(SnapshotError::Layout(_))
        ));
        let strip = Strip::new(1, 1, (0, 0)).expect("2x2 at least");
        assert_eq!(strip.cell(), (2, 2));
        let pic = strip.finish(DEFAULT_QSCALE).expect("a black JPEG");
        assert_jpeg(&pic);
    }
}
