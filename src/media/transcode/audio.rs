//! Opus → AAC for RTMP/FLV, once per stream (shared by all its targets).
//!
//! Opus frames (20 ms = 960 samples at 48 kHz) are decoded by FFmpeg's Opus
//! decoder to planar float stereo, buffered, and fed to FFmpeg's native `aac`
//! encoder in its 1024-sample frames. Input positions come from the stream
//! timeline, so a DTX gap (or any hole in the audio) is filled with silence
//! and audio never drifts from video. Output timestamps are the encoder's own,
//! which already subtract its 1024-sample priming: a player that decodes from
//! the first packet puts real sample 0 at timestamp 0.

use ffmpeg_sys_next as sys;

use super::TranscodeError;
use crate::media::{extradata, opus};

/// Sample rate in and out.
pub const RATE: i64 = 48_000;
/// AAC frame length.
const AAC_FRAME: usize = 1024;
/// Longest hole filled with silence; a longer one restarts the audio clock.
const MAX_GAP: i64 = 10 * RATE;

/// One encoded AAC frame.
#[derive(Debug, Clone)]
pub struct AacPacket {
    /// Presentation time in 1/48000 s on the stream timeline (may be
    /// negative for the priming frame).
    pub pts: i64,
    /// Samples it covers.
    pub duration: i64,
    /// Raw AAC (no ADTS).
    pub data: Vec<u8>,
}

fn err(what: &'static str, code: i32) -> TranscodeError {
    TranscodeError::Ffmpeg {
        what,
        source: ffmpeg_next::Error::from(code),
    }
}

/// Decoder + sample buffer + encoder. Lives on one thread (FFmpeg pointers).
pub struct Transcoder {
    dec: *mut sys::AVCodecContext,
    enc: *mut sys::AVCodecContext,
    frame: *mut sys::AVFrame,
    pkt: *mut sys::AVPacket,
    left: Vec<f32>,
    right: Vec<f32>,
    /// Timeline position (samples) of `left[0]`.
    start: i64,
    /// Timeline position just after the last buffered sample.
    end: Option<i64>,
    /// Samples of silence inserted for gaps (DTX, loss).
    pub silence_samples: u64,
    /// Opus packets that failed to decode (replaced by silence).
    pub decode_errors: u64,
}

impl std::fmt::Debug for Transcoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transcoder").finish_non_exhaustive()
    }
}

impl Drop for Transcoder {
    fn drop(&mut self) {
        // SAFETY: each pointer is owned by us and freed once; the free
        // functions accept null.
        unsafe {
            sys::avcodec_free_context(&mut self.dec);
            sys::avcodec_free_context(&mut self.enc);
            sys::av_frame_free(&mut self.frame);
            sys::av_packet_free(&mut self.pkt);
        }
    }
}

impl Transcoder {
    /// Opens the Opus decoder and an AAC-LC encoder (48 kHz stereo, `bitrate` bits/s).
    pub fn new(bitrate: u32) -> Result<Transcoder, TranscodeError> {
        let _ = ffmpeg_next::init();
        let mut t = Transcoder {
            dec: std::ptr::null_mut(),
            enc: std::ptr::null_mut(),
            frame: std::ptr::null_mut(),
            pkt: std::ptr::null_mut(),
            left: Vec::new(),
            right: Vec::new(),
            start: 0,
            end: None,
            silence_samples: 0,
            decode_errors: 0,
        };
        // SAFETY: plain FFmpeg set-up calls; every pointer is checked before use
        // and owned by `t`, whose Drop frees it on any early return.
        unsafe {
            let dcodec = sys::avcodec_find_decoder(sys::AVCodecID::AV_CODEC_ID_OPUS);
            if dcodec.is_null() {
                return Err(TranscodeError::Codec("FFmpeg has no Opus decoder".into()));
            }
            t.dec = sys::avcodec_alloc_context3(dcodec);
            if t.dec.is_null() {
                return Err(TranscodeError::Codec("out of memory".into()));
            }
            (*t.dec).sample_rate = RATE as i32;
            sys::av_channel_layout_default(&mut (*t.dec).ch_layout, 2);
            // Stereo, no pre-skip: the decoder's output starts at the first sample.
            if let Some((buf, len)) = extradata::copy(&opus::head(2, 0))
                .map_err(|e| TranscodeError::Codec(e.to_string()))?
            {
                (*t.dec).extradata = buf;
                (*t.dec).extradata_size = len;
            }
            let rc = sys::avcodec_open2(t.dec, dcodec, std::ptr::null_mut());
            if rc < 0 {
                return Err(err("opening the Opus decoder", rc));
            }

            let ecodec = sys::avcodec_find_encoder_by_name(c"aac".as_ptr());
            if ecodec.is_null() {
                return Err(TranscodeError::Codec("FFmpeg has no aac encoder".into()));
            }
            t.enc = sys::avcodec_alloc_context3(ecodec);
            if t.enc.is_null() {
                return Err(TranscodeError::Codec("out of memory".into()));
            }
            (*t.enc).sample_rate = RATE as i32;
            sys::av_channel_layout_default(&mut (*t.enc).ch_layout, 2);
            (*t.enc).sample_fmt = sys::AVSampleFormat::AV_SAMPLE_FMT_FLTP;
            (*t.enc).bit_rate = i64::from(bitrate);
            (*t.enc).time_base = sys::AVRational {
                num: 1,
                den: RATE as i32,
            };
            (*t.enc).flags |= sys::AV_CODEC_FLAG_GLOBAL_HEADER as i32;
            let rc = sys::avcodec_open2(t.enc, ecodec, std::ptr::null_mut());
            if rc < 0 {
                return Err(err("opening the AAC encoder", rc));
            }
            t.frame = sys::av_frame_alloc();
            t.pkt = sys::av_packet_alloc();
            if t.frame.is_null() || t.pkt.is_null() {
                return Err(TranscodeError::Codec("out of memory".into()));
            }
        }
        Ok(t)
    }

    /// The AudioSpecificConfig for the FLV sequence header.
    pub fn extradata(&self) -> Vec<u8> {
        // SAFETY: the encoder is open; extradata is valid for extradata_size bytes.
        unsafe {
            let e = &*self.enc;
            if e.extradata.is_null() || e.extradata_size <= 0 {
                return Vec::new();
            }
            std::slice::from_raw_parts(e.extradata, e.extradata_size as usize).to_vec()
        }
    }

    /// Samples the encoder holds back (its priming), in 1/48000 s.
    pub fn priming(&self) -> i64 {
        // SAFETY: plain field read on the open encoder.
        i64::from(unsafe { (*self.enc).initial_padding })
    }

    /// Decodes one Opus packet that belongs at `pos` (1/48000 s on the
    /// stream timeline) and appends every AAC frame now complete to `out`.
    pub fn push(
        &mut self,
        pos: i64,
        opus: &[u8],
        out: &mut Vec<AacPacket>,
    ) -> Result<(), TranscodeError> {
        let end = *self.end.get_or_insert_with(|| {
            self.start = pos;
            pos
        });
        let gap = pos - end;
        if gap > MAX_GAP {
            // A very long hole (the publisher paused audio): restart the clock
            // after what is buffered instead of buffering minutes of silence.
            let pad = (AAC_FRAME - self.left.len() % AAC_FRAME) % AAC_FRAME;
            self.silence(pad);
            self.encode_ready(out)?;
            self.start = pos;
            self.end = Some(pos);
        } else if gap > 480 {
            // DTX or loss: keep the clock by playing silence.
            self.silence(gap as usize);
        }
        let decoded = self.decode(opus);
        if decoded == 0 {
            self.decode_errors += 1;
            self.silence(960);
        }
        self.encode_ready(out)
    }

    /// Encodes what is buffered (padded with silence to a whole frame) and
    /// everything the encoder still holds; call once at the end.
    pub fn finish(&mut self, out: &mut Vec<AacPacket>) -> Result<(), TranscodeError> {
        if self.end.is_none() {
            return Ok(());
        }
        let pad = (AAC_FRAME - self.left.len() % AAC_FRAME) % AAC_FRAME;
        if !self.left.is_empty() {
            self.silence(pad);
        }
        self.encode_ready(out)?;
        // SAFETY: a null frame puts the open encoder in draining mode.
        let rc = unsafe { sys::avcodec_send_frame(self.enc, std::ptr::null()) };
        if rc < 0 {
            return Err(err("flushing the AAC encoder", rc));
        }
        self.receive(out);
        self.end = None;
        Ok(())
    }

    fn silence(&mut self, n: usize) {
        self.left.resize(self.left.len() + n, 0.0);
        self.right.resize(self.right.len() + n, 0.0);
        self.silence_samples += n as u64;
        self.end = Some(self.start + self.left.len() as i64);
    }

    /// Returns the number of samples decoded.
    fn decode(&mut self, data: &[u8]) -> usize {
        if data.is_empty() {
            return 0;
        }
        let mut total = 0;
        // SAFETY: pkt/frame are ours; av_new_packet allocates len + padding;
        // frame planes are read within nb_samples for the format checked.
        unsafe {
            if sys::av_new_packet(self.pkt, data.len() as i32) < 0 {
                return 0;
            }
            std::ptr::copy_nonoverlapping(data.as_ptr(), (*self.pkt).data, data.len());
            let rc = sys::avcodec_send_packet(self.dec, self.pkt);
            sys::av_packet_unref(self.pkt);
            if rc < 0 {
                return 0;
            }
            while sys::avcodec_receive_frame(self.dec, self.frame) >= 0 {
                let f = &*self.frame;
                let n = f.nb_samples.max(0) as usize;
                let channels = f.ch_layout.nb_channels.max(1) as usize;
                match f.format {
                    x if x == sys::AVSampleFormat::AV_SAMPLE_FMT_FLTP as i32 => {
                        let l = std::slice::from_raw_parts(f.data[0] as *const f32, n);
                        let r = if channels > 1 {
                            std::slice::from_raw_parts(f.data[1] as *const f32, n)
                        } else {
                            l
                        };
                        self.left.extend_from_slice(l);
                        self.right.extend_from_slice(r);
                    }
                    x if x == sys::AVSampleFormat::AV_SAMPLE_FMT_FLT as i32 => {
                        let s = std::slice::from_raw_parts(f.data[0] as *const f32, n * channels);
                        for c in s.chunks(channels) {
                            self.left.push(c[0]);
                            self.right.push(*c.get(1).unwrap_or(&c[0]));
                        }
                    }
                    x if x == sys::AVSampleFormat::AV_SAMPLE_FMT_S16 as i32 => {
                        let s = std::slice::from_raw_parts(f.data[0] as *const i16, n * channels);
                        for c in s.chunks(channels) {
                            self.left.push(f32::from(c[0]) / 32768.0);
                            self.right
                                .push(f32::from(*c.get(1).unwrap_or(&c[0])) / 32768.0);
                        }
                    }
                    _ => {
                        self.left.resize(self.left.len() + n, 0.0);
                        self.right.resize(self.right.len() + n, 0.0);
                    }
                }
                total += n;
                sys::av_frame_unref(self.frame);
            }
        }
        self.end = Some(self.start + self.left.len() as i64);
        total
    }

    fn encode_ready(&mut self, out: &mut Vec<AacPacket>) -> Result<(), TranscodeError> {
        while self.left.len() >= AAC_FRAME {
            // SAFETY: the frame gets fresh buffers for 1024 FLTP stereo samples,
            // which we fill within bounds before handing it to the encoder.
            unsafe {
                let f = self.frame;
                (*f).nb_samples = AAC_FRAME as i32;
                (*f).format = sys::AVSampleFormat::AV_SAMPLE_FMT_FLTP as i32;
                (*f).sample_rate = RATE as i32;
                sys::av_channel_layout_default(&mut (*f).ch_layout, 2);
                (*f).pts = self.start;
                let rc = sys::av_frame_get_buffer(f, 0);
                if rc < 0 {
                    return Err(err("allocating an audio frame", rc));
                }
                std::ptr::copy_nonoverlapping(
                    self.left.as_ptr(),
                    (*f).data[0] as *mut f32,
                    AAC_FRAME,
                );
                std::ptr::copy_nonoverlapping(
                    self.right.as_ptr(),
                    (*f).data[1] as *mut f32,
                    AAC_FRAME,
                );
                let rc = sys::avcodec_send_frame(self.enc, f);
                sys::av_frame_unref(f);
                if rc < 0 {
                    return Err(err("encoding AAC", rc));
                }
                self.receive(out);
            }
            self.left.drain(..AAC_FRAME);
            self.right.drain(..AAC_FRAME);
            self.start += AAC_FRAME as i64;
        }
        Ok(())
    }

    fn receive(&mut self, out: &mut Vec<AacPacket>) {
        // SAFETY: pkt is ours; data is valid for size bytes until unref.
        unsafe {
            while sys::avcodec_receive_packet(self.enc, self.pkt) >= 0 {
                let p = &*self.pkt;
                let data = std::slice::from_raw_parts(p.data, p.size.max(0) as usize).to_vec();
                out.push(AacPacket {
                    pts: p.pts,
                    duration: if p.duration > 0 {
                        p.duration
                    } else {
                        AAC_FRAME as i64
                    },
                    data,
                });
                sys::av_packet_unref(self.pkt);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoder_opens_and_fills_gaps() {
        let mut t = Transcoder::new(128_000).expect("opus decoder and aac encoder");
        assert!(!t.extradata().is_empty(), "AudioSpecificConfig");
        let mut out = Vec::new();
        // A bogus packet decodes to nothing and is replaced by silence; a gap
        // of 1 s is filled, so ~1.04 s of audio is buffered and encoded.
        t.push(0, &[0xff, 0xff, 0xff], &mut out).unwrap();
        t.push(48_000, &[0xff, 0xff, 0xff], &mut out).unwrap();
        assert!(t.silence_samples >= 48_000);
        assert!(out.len() >= 40, "got {} AAC frames", out.len());
        assert!(out.windows(2).all(|w| w[1].pts > w[0].pts));
        // The encoder's priming is already taken off its timestamps.
        assert_eq!(out[0].pts, -t.priming(), "{:?}", out[0].pts);
        let before = out.len();
        t.finish(&mut out).unwrap();
        assert!(
            out.len() > before,
            "the encoder's tail comes out at the end"
        );
    }
}
