//! VP8 / VP9 / AV1 → H.264 for RTMP and HLS, once per stream (shared by all
//! its targets): FFmpeg's decoder for the publisher's codec, then an H.264
//! encoder (libx264 by default) with live settings (`veryfast`,
//! `zerolatency`: no B-frames, no look-ahead), an IDR every `keyint` (2 s) and
//! the configured bitrate. Output access units are Annex-B with SPS/PPS before
//! every IDR, exactly like an H.264 publisher's, so they take the passthrough
//! path from there on.
//!
//! The output size is fixed when the pipeline starts, from the configuration
//! (`restream.video_width` x `video_height`, fitted inside the maximum), not
//! from the publisher's first picture: browsers start small and ramp up
//! (320x180 → 1280x720 in the first seconds), step down under load and
//! change size with a resized shared window. Every picture is scaled to fit
//! and centred on black, so RTMP platforms and HLS players see one size for
//! the whole broadcast. Any pixel format FFmpeg decodes (e.g. VP9 profile
//! 1/2) is converted to 8-bit 4:2:0.

use std::ffi::CString;

use ffmpeg_sys_next as sys;

use super::TranscodeError;
use crate::media::Codec;

/// One encoded H.264 access unit.
#[derive(Debug, Clone)]
pub struct H264Out {
    /// µs on the stream timeline.
    pub us: i64,
    /// IDR.
    pub keyframe: bool,
    /// Annex-B bytes.
    pub data: Vec<u8>,
}

/// What the transcoder makes: encoder, rate, IDR interval, picture size.
#[derive(Debug, Clone)]
pub struct VideoSettings {
    /// FFmpeg encoder name (`libx264`).
    pub encoder: String,
    /// Bits per second.
    pub bitrate: u32,
    /// IDR interval (µs).
    pub keyint_us: i64,
    /// The output picture size (even numbers; see [`output_size`]).
    pub size: (i32, i32),
    /// `Some(crf)` encodes for a file instead of live: constant quality
    /// (x264's CRF) instead of a bit rate, look-ahead allowed, one thread,
    /// and the parameter sets in [`VideoTranscoder::extradata`] instead of
    /// before every IDR (what an MP4 track header needs).
    pub file_crf: Option<u8>,
}

fn err(what: &'static str, code: i32) -> TranscodeError {
    TranscodeError::Ffmpeg {
        what,
        source: ffmpeg_next::Error::from(code),
    }
}

/// Rounds down to an even number, at least 2 (4:2:0 needs even sizes).
fn even(v: f64) -> i32 {
    ((v as i32) & !1).max(2)
}

/// The output size for a configured `w`x`h`: that size, shrunk to fit `max`
/// with its aspect ratio kept, rounded to even numbers.
pub fn output_size(w: u32, h: u32, max: (u32, u32)) -> (i32, i32) {
    let (w, h) = (f64::from(w.max(1)), f64::from(h.max(1)));
    let scale = (f64::from(max.0) / w).min(f64::from(max.1) / h).min(1.0);
    (even(w * scale), even(h * scale))
}

/// Where a `w`x`h` picture goes inside the `out` frame: the largest rectangle
/// with its aspect ratio, centred (x, y, width, height; all even).
pub fn placement(w: i32, h: i32, out: (i32, i32)) -> (i32, i32, i32, i32) {
    let (fw, fh) = (f64::from(w.max(1)), f64::from(h.max(1)));
    let scale = (f64::from(out.0) / fw).min(f64::from(out.1) / fh);
    let (pw, ph) = (even(fw * scale).min(out.0), even(fh * scale).min(out.1));
    (((out.0 - pw) / 2) & !1, ((out.1 - ph) / 2) & !1, pw, ph)
}

/// Decoder + scaler + H.264 encoder. Lives on one thread (FFmpeg pointers).
pub struct VideoTranscoder {
    dec: *mut sys::AVCodecContext,
    enc: *mut sys::AVCodecContext,
    encoder: *const sys::AVCodec,
    frame: *mut sys::AVFrame,
    /// The picture at the output size, when the decoded one must be scaled.
    scaled: *mut sys::AVFrame,
    sws: *mut sys::SwsContext,
    pkt: *mut sys::AVPacket,
    settings: VideoSettings,
    /// Where the last scaled picture went inside `scaled` (to repaint the
    /// borders black when it moves).
    placed: Option<(i32, i32, i32, i32)>,
    last_key_us: Option<i64>,
    last_pts: i64,
    /// Frames encoded.
    pub frames_out: u64,
    /// Frames the decoder could not decode (loss; it resumes at a keyframe).
    pub decode_errors: u64,
    /// Pictures that had to be scaled to the output size.
    pub frames_scaled: u64,
}

impl std::fmt::Debug for VideoTranscoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoTranscoder")
            .field("size", &self.settings.size)
            .finish_non_exhaustive()
    }
}

impl Drop for VideoTranscoder {
    fn drop(&mut self) {
        // SAFETY: owned pointers, freed once; the free functions accept null.
        unsafe {
            sys::avcodec_free_context(&mut self.dec);
            sys::avcodec_free_context(&mut self.enc);
            sys::av_frame_free(&mut self.frame);
            sys::av_frame_free(&mut self.scaled);
            sys::sws_freeContext(self.sws);
            sys::av_packet_free(&mut self.pkt);
        }
    }
}

fn set(dict: &mut *mut sys::AVDictionary, k: &str, v: &str) {
    if let (Ok(k), Ok(v)) = (CString::new(k), CString::new(v)) {
        // SAFETY: valid C strings; av_dict_set copies them.
        unsafe {
            sys::av_dict_set(dict, k.as_ptr(), v.as_ptr(), 0);
        }
    }
}

impl VideoTranscoder {
    /// A decoder for `codec` and the configured encoder, opened now at the
    /// configured output size.
    pub fn new(codec: Codec, settings: VideoSettings) -> Result<VideoTranscoder, TranscodeError> {
        let _ = ffmpeg_next::init();
        let id = match codec {
            Codec::Vp8 => sys::AVCodecID::AV_CODEC_ID_VP8,
            Codec::Vp9 => sys::AVCodecID::AV_CODEC_ID_VP9,
            Codec::Av1 => sys::AVCodecID::AV_CODEC_ID_AV1,
            Codec::H264 | Codec::Opus => {
                return Err(TranscodeError::Codec(format!(
                    "no video transcode needed for {}",
                    codec.name()
                )));
            }
        };
        let name = CString::new(settings.encoder.as_str())
            .map_err(|_| TranscodeError::Codec("the encoder name contains a NUL byte".into()))?;
        let mut t = VideoTranscoder {
            dec: std::ptr::null_mut(),
            enc: std::ptr::null_mut(),
            encoder: std::ptr::null(),
            frame: std::ptr::null_mut(),
            scaled: std::ptr::null_mut(),
            sws: std::ptr::null_mut(),
            pkt: std::ptr::null_mut(),
            settings,
            placed: None,
            last_key_us: None,
            last_pts: i64::MIN,
            frames_out: 0,
            decode_errors: 0,
            frames_scaled: 0,
        };
        // SAFETY: FFmpeg set-up; pointers checked and owned by `t` (freed by Drop).
        unsafe {
            t.encoder = sys::avcodec_find_encoder_by_name(name.as_ptr());
            if t.encoder.is_null() || (*t.encoder).id != sys::AVCodecID::AV_CODEC_ID_H264 {
                return Err(TranscodeError::Codec(format!(
                    "FFmpeg has no H.264 encoder named {:?} (restream.video_encoder)",
                    t.settings.encoder
                )));
            }
            let dcodec = sys::avcodec_find_decoder(id);
            if dcodec.is_null() {
                return Err(TranscodeError::Codec(format!(
                    "FFmpeg has no {} decoder",
                    codec.name()
                )));
            }
            t.dec = sys::avcodec_alloc_context3(dcodec);
            t.frame = sys::av_frame_alloc();
            t.pkt = sys::av_packet_alloc();
            if t.dec.is_null() || t.frame.is_null() || t.pkt.is_null() {
                return Err(TranscodeError::Codec("out of memory".into()));
            }
            (*t.dec).time_base = sys::AVRational {
                num: 1,
                den: 1_000_000,
            };
            (*t.dec).pkt_timebase = (*t.dec).time_base;
            let rc = sys::avcodec_open2(t.dec, dcodec, std::ptr::null_mut());
            if rc < 0 {
                return Err(err("opening the video decoder", rc));
            }
        }
        t.open_encoder()?;
        Ok(t)
    }

    /// The encoder's parameter sets (Annex-B SPS and PPS) when encoding for
    /// a file ([`VideoSettings::file_crf`]); empty when live.
    pub fn extradata(&self) -> Vec<u8> {
        // SAFETY: the encoder is open; extradata is valid for extradata_size bytes.
        unsafe {
            if self.enc.is_null() {
                return Vec::new();
            }
            let e = &*self.enc;
            if e.extradata.is_null() || e.extradata_size <= 0 {
                return Vec::new();
            }
            std::slice::from_raw_parts(e.extradata, e.extradata_size as usize).to_vec()
        }
    }

    /// The output picture size.
    pub fn output_size(&self) -> (i32, i32) {
        self.settings.size
    }

    fn open_encoder(&mut self) -> Result<(), TranscodeError> {
        let (w, h) = self.settings.size;
        let bitrate = self.settings.bitrate;
        let x264 = self.settings.encoder == "libx264";
        // SAFETY: as in `new`; the encoder exists (checked there); a context
        // left by an earlier failed open is freed first.
        unsafe {
            sys::avcodec_free_context(&mut self.enc);
            self.enc = sys::avcodec_alloc_context3(self.encoder);
            if self.enc.is_null() {
                return Err(TranscodeError::Codec("out of memory".into()));
            }
            let e = &mut *self.enc;
            e.width = w;
            e.height = h;
            e.pix_fmt = sys::AVPixelFormat::AV_PIX_FMT_YUV420P;
            e.time_base = sys::AVRational {
                num: 1,
                den: 1_000_000,
            };
            e.framerate = sys::AVRational { num: 30, den: 1 };
            e.gop_size = 600;
            e.max_b_frames = 0;
            let mut opts: *mut sys::AVDictionary = std::ptr::null_mut();
            if let Some(crf) = self.settings.file_crf {
                e.flags |= sys::AV_CODEC_FLAG_GLOBAL_HEADER as i32;
                e.thread_count = 1;
                if x264 {
                    set(&mut opts, "preset", "veryfast");
                    set(&mut opts, "crf", &crf.to_string());
                    set(&mut opts, "forced-idr", "1");
                    set(&mut opts, "x264-params", "scenecut=0");
                }
            } else {
                e.bit_rate = i64::from(bitrate);
                e.rc_max_rate = i64::from(bitrate);
                e.rc_buffer_size = bitrate as i32;
            }
            if x264 && self.settings.file_crf.is_none() {
                set(&mut opts, "preset", "veryfast");
                set(&mut opts, "tune", "zerolatency");
                set(&mut opts, "forced-idr", "1");
                set(&mut opts, "x264-params", "scenecut=0:repeat-headers=1");
            }
            let rc = sys::avcodec_open2(self.enc, self.encoder, &mut opts);
            sys::av_dict_free(&mut opts);
            if rc < 0 {
                return Err(err("opening the H.264 encoder", rc));
            }
        }
        Ok(())
    }

    /// Decodes one frame of the publisher's codec placed at `us` and appends
    /// any H.264 access units now ready.
    pub fn push(
        &mut self,
        us: i64,
        data: &[u8],
        out: &mut Vec<H264Out>,
    ) -> Result<(), TranscodeError> {
        if data.is_empty() {
            return Ok(());
        }
        // SAFETY: pkt/frame are ours; av_new_packet gives len + padding bytes.
        unsafe {
            if sys::av_new_packet(self.pkt, data.len() as i32) < 0 {
                return Err(TranscodeError::Codec("out of memory".into()));
            }
            std::ptr::copy_nonoverlapping(data.as_ptr(), (*self.pkt).data, data.len());
            (*self.pkt).pts = us;
            (*self.pkt).dts = us;
            let rc = sys::avcodec_send_packet(self.dec, self.pkt);
            sys::av_packet_unref(self.pkt);
            if rc < 0 {
                self.decode_errors += 1;
                return Ok(());
            }
            loop {
                let rc = sys::avcodec_receive_frame(self.dec, self.frame);
                if rc < 0 {
                    break;
                }
                let r = self.encode_frame(us, out);
                sys::av_frame_unref(self.frame);
                r?;
            }
        }
        Ok(())
    }

    /// # Safety
    /// `self.frame` holds a decoded picture.
    unsafe fn encode_frame(
        &mut self,
        us: i64,
        out: &mut Vec<H264Out>,
    ) -> Result<(), TranscodeError> {
        // SAFETY: per the contract; encoder pointers are checked/opened here.
        unsafe {
            let f = self.frame;
            let (w, h) = ((*f).width, (*f).height);
            if w <= 0 || h <= 0 {
                self.decode_errors += 1;
                return Ok(());
            }
            let size = self.settings.size;
            let direct =
                (w, h) == size && (*f).format == sys::AVPixelFormat::AV_PIX_FMT_YUV420P as i32;
            let pic = if direct { f } else { self.scale(size)? };
            let mut pts = if (*f).best_effort_timestamp != sys::AV_NOPTS_VALUE {
                (*f).best_effort_timestamp
            } else {
                us
            };
            if pts <= self.last_pts {
                pts = self.last_pts + 1;
            }
            self.last_pts = pts;
            (*pic).pts = pts;
            let key = self
                .last_key_us
                .is_none_or(|k| pts - k >= self.settings.keyint_us);
            (*pic).pict_type = if key {
                self.last_key_us = Some(pts);
                sys::AVPictureType::AV_PICTURE_TYPE_I
            } else {
                sys::AVPictureType::AV_PICTURE_TYPE_NONE
            };
            let rc = sys::avcodec_send_frame(self.enc, pic);
            if rc < 0 {
                return Err(err("encoding H.264", rc));
            }
            self.drain(Some(()), out)
        }
    }

    /// Scales the decoded picture into `self.scaled` (the output size, 4:2:0),
    /// keeping its aspect ratio, centred on black.
    ///
    /// # Safety
    /// `self.frame` holds a decoded picture.
    unsafe fn scale(&mut self, size: (i32, i32)) -> Result<*mut sys::AVFrame, TranscodeError> {
        // SAFETY: per the contract; `scaled` is allocated here at `size` and
        // made writable before it is drawn on (the encoder may hold a reference).
        unsafe {
            let f = self.frame;
            if self.scaled.is_null() {
                self.scaled = sys::av_frame_alloc();
                if self.scaled.is_null() {
                    return Err(TranscodeError::Codec("out of memory".into()));
                }
                (*self.scaled).format = sys::AVPixelFormat::AV_PIX_FMT_YUV420P as i32;
                (*self.scaled).width = size.0;
                (*self.scaled).height = size.1;
                let rc = sys::av_frame_get_buffer(self.scaled, 0);
                if rc < 0 {
                    return Err(err("allocating the scaled picture", rc));
                }
            }
            let rc = sys::av_frame_make_writable(self.scaled);
            if rc < 0 {
                return Err(err("allocating the scaled picture", rc));
            }
            let s = &mut *self.scaled;
            let (x, y, pw, ph) = placement((*f).width, (*f).height, size);
            if self.placed != Some((x, y, pw, ph)) {
                for (plane, value, div) in [(0usize, 16u8, 1), (1, 128, 2), (2, 128, 2)] {
                    let rows = (size.1 / div) as usize;
                    let cols = (size.0 / div) as usize;
                    let stride = s.linesize[plane] as isize;
                    for r in 0..rows {
                        std::ptr::write_bytes(
                            s.data[plane].offset(r as isize * stride),
                            value,
                            cols,
                        );
                    }
                }
                self.placed = Some((x, y, pw, ph));
            }
            if !(0..sys::AVPixelFormat::AV_PIX_FMT_NB as i32).contains(&(*f).format) {
                return Err(TranscodeError::Unsupported(format!(
                    "the decoder gave pixel format {}, which has no name",
                    (*f).format
                )));
            }
            // In range (checked above), so a valid discriminant.
            let src_fmt: sys::AVPixelFormat = std::mem::transmute((*f).format);
            self.sws = sys::sws_getCachedContext(
                self.sws,
                (*f).width,
                (*f).height,
                src_fmt,
                pw,
                ph,
                sys::AVPixelFormat::AV_PIX_FMT_YUV420P,
                sys::SWS_BILINEAR,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null(),
            );
            if self.sws.is_null() {
                return Err(TranscodeError::Unsupported(format!(
                    "cannot convert {}x{} pictures of pixel format {} to H.264's 4:2:0",
                    (*f).width,
                    (*f).height,
                    (*f).format
                )));
            }
            let dst = [
                s.data[0].offset(y as isize * s.linesize[0] as isize + x as isize),
                s.data[1].offset((y / 2) as isize * s.linesize[1] as isize + (x / 2) as isize),
                s.data[2].offset((y / 2) as isize * s.linesize[2] as isize + (x / 2) as isize),
                std::ptr::null_mut(),
            ];
            let dst_stride = [s.linesize[0], s.linesize[1], s.linesize[2], 0];
            let rc = sys::sws_scale(
                self.sws,
                (*f).data.as_ptr() as *const *const u8,
                (*f).linesize.as_ptr(),
                0,
                (*f).height,
                dst.as_ptr(),
                dst_stride.as_ptr(),
            );
            if rc <= 0 {
                return Err(TranscodeError::Codec("scaling a picture failed".into()));
            }
            self.frames_scaled += 1;
            Ok(self.scaled)
        }
    }

    /// Receives packets; `None` first flushes the encoder (end of stream).
    fn drain(&mut self, more: Option<()>, out: &mut Vec<H264Out>) -> Result<(), TranscodeError> {
        // SAFETY: encoder open; pkt ours; data valid for size until unref.
        unsafe {
            if more.is_none() {
                sys::avcodec_send_frame(self.enc, std::ptr::null());
            }
            while sys::avcodec_receive_packet(self.enc, self.pkt) >= 0 {
                let p = &*self.pkt;
                out.push(H264Out {
                    us: p.pts,
                    keyframe: p.flags & sys::AV_PKT_FLAG_KEY != 0,
                    data: std::slice::from_raw_parts(p.data, p.size.max(0) as usize).to_vec(),
                });
                self.frames_out += 1;
                sys::av_packet_unref(self.pkt);
            }
        }
        Ok(())
    }

    /// Encodes what the encoder still holds (end of the stream).
    pub fn finish(&mut self, out: &mut Vec<H264Out>) -> Result<(), TranscodeError> {
        if self.enc.is_null() {
            return Ok(());
        }
        self.drain(None, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_size_is_the_configured_one_fitted_to_the_maximum() {
        assert_eq!(output_size(1280, 720, (1920, 1080)), (1280, 720));
        assert_eq!(output_size(3840, 2160, (1920, 1080)), (1920, 1080));
        assert_eq!(output_size(640, 360, (1920, 240)), (426, 240));
        assert_eq!(output_size(1080, 1920, (1920, 1080)), (606, 1080));
        assert_eq!(output_size(641, 361, (1920, 1080)), (640, 360));
        assert_eq!(output_size(1, 1, (1920, 1080)), (2, 2));
    }

    #[test]
    fn placement_centres_with_the_aspect_kept() {
        // Same aspect: fills the frame.
        assert_eq!(placement(640, 360, (1280, 720)), (0, 0, 1280, 720));
        // 4:3 in 16:9: pillarboxed.
        assert_eq!(placement(320, 240, (1280, 720)), (160, 0, 960, 720));
        // Portrait in landscape.
        assert_eq!(placement(360, 640, (640, 360)), (218, 0, 202, 360));
        let (x, y, w, h) = placement(333, 777, (1278, 718));
        assert!(x % 2 == 0 && y % 2 == 0 && w % 2 == 0 && h % 2 == 0);
        assert!(x + w <= 1278 && y + h <= 718);
    }
}
