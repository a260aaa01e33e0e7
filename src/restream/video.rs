//! VP8 / VP9 / AV1 → H.264 for RTMP, once per stream (shared by all its
//! targets): FFmpeg's decoder for the publisher's codec, then libx264 with
//! live settings (`veryfast`, `zerolatency`: no B-frames, no look-ahead), an
//! IDR every `keyint` (2 s) and the configured bitrate. Output access units
//! are Annex-B with SPS/PPS before every IDR, exactly like an H.264
//! publisher's, so they take the passthrough path from there on.
//!
//! Limits (for now): 8-bit 4:2:0 input only, and a change of the publisher's
//! picture size reopens the encoder at the new size (a new sequence header
//! follows) instead of scaling to a steady size.

use std::ffi::CString;

use ffmpeg_sys_next as sys;

use super::RestreamError;
use crate::stream::Codec;

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

fn err(what: &'static str, code: i32) -> RestreamError {
    RestreamError::Ffmpeg {
        what,
        source: ffmpeg_next::Error::from(code),
    }
}

/// Decoder + libx264 encoder. Lives on one thread (FFmpeg pointers).
pub struct VideoTranscoder {
    dec: *mut sys::AVCodecContext,
    enc: *mut sys::AVCodecContext,
    frame: *mut sys::AVFrame,
    pkt: *mut sys::AVPacket,
    size: (i32, i32),
    bitrate: u32,
    keyint_us: i64,
    last_key_us: Option<i64>,
    last_pts: i64,
    /// Frames encoded.
    pub frames_out: u64,
    /// Frames the decoder could not decode (loss; it resumes at a keyframe).
    pub decode_errors: u64,
}

impl std::fmt::Debug for VideoTranscoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoTranscoder").finish_non_exhaustive()
    }
}

impl Drop for VideoTranscoder {
    fn drop(&mut self) {
        // SAFETY: owned pointers, freed once; the free functions accept null.
        unsafe {
            sys::avcodec_free_context(&mut self.dec);
            sys::avcodec_free_context(&mut self.enc);
            sys::av_frame_free(&mut self.frame);
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
    /// A decoder for `codec`; the encoder opens at the first decoded picture.
    pub fn new(
        codec: Codec,
        bitrate: u32,
        keyint_us: i64,
    ) -> Result<VideoTranscoder, RestreamError> {
        let _ = ffmpeg_next::init();
        let id = match codec {
            Codec::Vp8 => sys::AVCodecID::AV_CODEC_ID_VP8,
            Codec::Vp9 => sys::AVCodecID::AV_CODEC_ID_VP9,
            Codec::Av1 => sys::AVCodecID::AV_CODEC_ID_AV1,
            Codec::H264 | Codec::Opus => {
                return Err(RestreamError::Codec(format!(
                    "no video transcode needed for {}",
                    codec.name()
                )));
            }
        };
        let mut t = VideoTranscoder {
            dec: std::ptr::null_mut(),
            enc: std::ptr::null_mut(),
            frame: std::ptr::null_mut(),
            pkt: std::ptr::null_mut(),
            size: (0, 0),
            bitrate,
            keyint_us,
            last_key_us: None,
            last_pts: i64::MIN,
            frames_out: 0,
            decode_errors: 0,
        };
        // SAFETY: FFmpeg set-up; pointers checked and owned by `t` (freed by Drop).
        unsafe {
            let dcodec = sys::avcodec_find_decoder(id);
            if dcodec.is_null() {
                return Err(RestreamError::Codec(format!(
                    "FFmpeg has no {} decoder",
                    codec.name()
                )));
            }
            t.dec = sys::avcodec_alloc_context3(dcodec);
            t.frame = sys::av_frame_alloc();
            t.pkt = sys::av_packet_alloc();
            if t.dec.is_null() || t.frame.is_null() || t.pkt.is_null() {
                return Err(RestreamError::Codec("out of memory".into()));
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
        Ok(t)
    }

    fn open_encoder(&mut self, w: i32, h: i32) -> Result<(), RestreamError> {
        // SAFETY: as in `new`; the previous encoder (if any) is freed first.
        unsafe {
            sys::avcodec_free_context(&mut self.enc);
            let ecodec = sys::avcodec_find_encoder_by_name(c"libx264".as_ptr());
            if ecodec.is_null() {
                return Err(RestreamError::Codec("FFmpeg has no libx264 encoder".into()));
            }
            self.enc = sys::avcodec_alloc_context3(ecodec);
            if self.enc.is_null() {
                return Err(RestreamError::Codec("out of memory".into()));
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
            e.bit_rate = i64::from(self.bitrate);
            e.rc_max_rate = i64::from(self.bitrate);
            e.rc_buffer_size = self.bitrate as i32;
            e.gop_size = 600;
            e.max_b_frames = 0;
            let mut opts: *mut sys::AVDictionary = std::ptr::null_mut();
            set(&mut opts, "preset", "veryfast");
            set(&mut opts, "tune", "zerolatency");
            set(&mut opts, "forced-idr", "1");
            set(&mut opts, "x264-params", "scenecut=0:repeat-headers=1");
            let rc = sys::avcodec_open2(self.enc, ecodec, &mut opts);
            sys::av_dict_free(&mut opts);
            if rc < 0 {
                return Err(err("opening libx264", rc));
            }
        }
        self.size = (w, h);
        self.last_key_us = None;
        Ok(())
    }

    /// Decodes one frame of the publisher's codec placed at `us` and appends
    /// any H.264 access units now ready.
    pub fn push(
        &mut self,
        us: i64,
        data: &[u8],
        out: &mut Vec<H264Out>,
    ) -> Result<(), RestreamError> {
        if data.is_empty() {
            return Ok(());
        }
        // SAFETY: pkt/frame are ours; av_new_packet gives len + padding bytes.
        unsafe {
            if sys::av_new_packet(self.pkt, data.len() as i32) < 0 {
                return Err(RestreamError::Codec("out of memory".into()));
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
    ) -> Result<(), RestreamError> {
        // SAFETY: per the contract; encoder pointers are checked/opened here.
        unsafe {
            let f = self.frame;
            if (*f).format != sys::AVPixelFormat::AV_PIX_FMT_YUV420P as i32 {
                return Err(RestreamError::Unsupported(
                    "only 8-bit 4:2:0 video can be transcoded to H.264".into(),
                ));
            }
            let (w, h) = ((*f).width, (*f).height);
            if (w, h) != self.size || self.enc.is_null() {
                if !self.enc.is_null() {
                    self.drain(None, out)?;
                }
                self.open_encoder(w, h)?;
            }
            let mut pts = if (*f).best_effort_timestamp != sys::AV_NOPTS_VALUE {
                (*f).best_effort_timestamp
            } else {
                us
            };
            if pts <= self.last_pts {
                pts = self.last_pts + 1;
            }
            self.last_pts = pts;
            (*f).pts = pts;
            let key = self.last_key_us.is_none_or(|k| pts - k >= self.keyint_us);
            (*f).pict_type = if key {
                self.last_key_us = Some(pts);
                sys::AVPictureType::AV_PICTURE_TYPE_I
            } else {
                sys::AVPictureType::AV_PICTURE_TYPE_NONE
            };
            let rc = sys::avcodec_send_frame(self.enc, f);
            if rc < 0 {
                return Err(err("encoding H.264", rc));
            }
            self.drain(Some(()), out)
        }
    }

    /// Receives packets; `None` first flushes the encoder (end or reopen).
    fn drain(&mut self, more: Option<()>, out: &mut Vec<H264Out>) -> Result<(), RestreamError> {
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
    pub fn finish(&mut self, out: &mut Vec<H264Out>) -> Result<(), RestreamError> {
        if self.enc.is_null() {
            return Ok(());
        }
        self.drain(None, out)
    }
}
