//! One FFmpeg output of a stream's H.264 + AAC packets: an FLV push over
//! RTMP/RTMPS ([`MuxOutput::rtmp`]) or an HLS playlist with its segments
//! ([`MuxOutput::hls`]). The RTMP push is set up for the network:
//!
//! * an interrupt callback on the output's `AVFormatContext` (set before the
//!   connection is opened), so a target can be stopped at any moment, even in
//!   the middle of a connect or a blocked write;
//! * `rw_timeout`, so a stalled network write fails instead of hanging;
//! * `rtmps://` verifies the server certificate (`tls_verify=1` + the CA file);
//! * `flvflags=no_duration_filesize`: the output cannot seek back.
//!
//! H.264 is passed through: the SPS/PPS (Annex-B) go in as extradata and FFmpeg's
//! FLV muxer writes them as the AVC sequence header (avcC) and turns each
//! Annex-B access unit into length-prefixed NAL units. New parameter sets are
//! handed over as `NEW_EXTRADATA` side data, which makes the muxer write a new
//! sequence header.

use std::ffi::CString;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use ffmpeg_sys_next as sys;

use super::RestreamError;
use crate::media::extradata;

/// Lets another thread (or a deadline) break FFmpeg out of any blocking call.
#[derive(Debug)]
pub struct Interrupt {
    origin: Instant,
    abort: AtomicBool,
    /// Milliseconds after `origin` after which I/O is abandoned (0 = none).
    deadline_ms: AtomicU64,
}

impl Default for Interrupt {
    fn default() -> Self {
        Interrupt {
            origin: Instant::now(),
            abort: AtomicBool::new(false),
            deadline_ms: AtomicU64::new(0),
        }
    }
}

impl Interrupt {
    /// Abandon all I/O now.
    pub fn abort(&self) {
        self.abort.store(true, Ordering::Release);
    }

    /// Whether [`Interrupt::abort`] was called.
    pub fn aborted(&self) -> bool {
        self.abort.load(Ordering::Acquire)
    }

    /// Abandon I/O that is still going on after `d` from now.
    pub fn set_deadline(&self, d: std::time::Duration) {
        let at = self.origin.elapsed() + d;
        self.deadline_ms
            .store((at.as_millis() as u64).max(1), Ordering::Release);
    }

    /// No deadline.
    pub fn clear_deadline(&self) {
        self.deadline_ms.store(0, Ordering::Release);
    }

    fn should_stop(&self) -> bool {
        if self.aborted() {
            return true;
        }
        let d = self.deadline_ms.load(Ordering::Acquire);
        d != 0 && self.origin.elapsed().as_millis() as u64 > d
    }
}

unsafe extern "C" fn interrupt_cb(opaque: *mut std::ffi::c_void) -> std::ffi::c_int {
    if opaque.is_null() {
        return 0;
    }
    // SAFETY: opaque is `Arc::as_ptr` of an `Interrupt` the output keeps alive
    // for as long as its context exists.
    let i = unsafe { &*(opaque as *const Interrupt) };
    i32::from(i.should_stop())
}

/// The video track's set-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoSetup {
    /// Annex-B SPS + PPS.
    pub extradata: Vec<u8>,
    /// Picture size (0 if unknown).
    pub width: u32,
    /// Picture size (0 if unknown).
    pub height: u32,
}

/// The audio track's set-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioSetup {
    /// AAC AudioSpecificConfig.
    pub extradata: Vec<u8>,
    /// Bits per second.
    pub bitrate: u32,
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct OutputOptions {
    /// `rw_timeout` in microseconds.
    pub rw_timeout_us: i64,
    /// Verify TLS (rtmps) against this CA file.
    pub tls_ca_file: Option<String>,
    /// The RTMP `tcUrl` to send, when the URL's host was replaced by the
    /// checked address (the server still learns the name it was asked by).
    pub tcurl: Option<String>,
}

/// An open output: an FLV push (RTMP/RTMPS) or HLS.
pub struct MuxOutput {
    ctx: *mut sys::AVFormatContext,
    interrupt: Arc<Interrupt>,
    video: Option<(i32, sys::AVRational)>,
    audio: Option<(i32, sys::AVRational)>,
    pkt: *mut sys::AVPacket,
    io_open: bool,
}

impl std::fmt::Debug for MuxOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MuxOutput").finish_non_exhaustive()
    }
}

fn err(what: &'static str, code: i32) -> RestreamError {
    RestreamError::Ffmpeg {
        what,
        source: ffmpeg_next::Error::from(code),
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

impl Drop for MuxOutput {
    fn drop(&mut self) {
        // SAFETY: we own ctx and pkt; pb is closed once (avio_closep nulls it).
        unsafe {
            if !self.ctx.is_null() {
                if self.io_open {
                    sys::avio_closep(&mut (*self.ctx).pb);
                }
                sys::avformat_free_context(self.ctx);
                self.ctx = std::ptr::null_mut();
            }
            sys::av_packet_free(&mut self.pkt);
        }
    }
}

impl MuxOutput {
    /// Connects to `url` (RTMP/RTMPS) and writes the FLV header and
    /// sequence headers. Blocks (bounded by `rw_timeout` and `interrupt`).
    pub fn rtmp(
        url: &str,
        video: Option<&VideoSetup>,
        audio: Option<&AudioSetup>,
        opts: &OutputOptions,
        interrupt: Arc<Interrupt>,
    ) -> Result<MuxOutput, RestreamError> {
        Self::open_format(
            c"flv",
            url,
            video,
            audio,
            Some(opts),
            &[("flvflags", "no_duration_filesize".to_string())],
            interrupt,
        )
    }

    /// Starts FFmpeg's `hls` muxer writing `playlist` (its segments next to
    /// it) with the muxer options `mux` (`hls_time`, `hls_flags`, …). The
    /// muxer opens its files itself; I/O is local, so no network options.
    pub fn hls(
        playlist: &str,
        video: Option<&VideoSetup>,
        audio: Option<&AudioSetup>,
        mux: &[(&str, String)],
        interrupt: Arc<Interrupt>,
    ) -> Result<MuxOutput, RestreamError> {
        Self::open_format(c"hls", playlist, video, audio, None, mux, interrupt)
    }

    fn open_format(
        format: &std::ffi::CStr,
        url: &str,
        video: Option<&VideoSetup>,
        audio: Option<&AudioSetup>,
        io: Option<&OutputOptions>,
        mux: &[(&str, String)],
        interrupt: Arc<Interrupt>,
    ) -> Result<MuxOutput, RestreamError> {
        let _ = ffmpeg_next::init();
        let c_url = CString::new(url).map_err(|_| RestreamError::Codec("bad URL".into()))?;
        let mut out = MuxOutput {
            ctx: std::ptr::null_mut(),
            interrupt,
            video: None,
            audio: None,
            pkt: std::ptr::null_mut(),
            io_open: false,
        };
        // SAFETY: FFmpeg set-up; every pointer is checked, owned by `out` and
        // released by its Drop on any early return.
        unsafe {
            out.pkt = sys::av_packet_alloc();
            let rc = sys::avformat_alloc_output_context2(
                &mut out.ctx,
                std::ptr::null(),
                format.as_ptr(),
                c_url.as_ptr(),
            );
            if rc < 0 || out.ctx.is_null() || out.pkt.is_null() {
                return Err(err("creating the muxer", rc.min(-1)));
            }
            (*out.ctx).interrupt_callback = sys::AVIOInterruptCB {
                callback: Some(interrupt_cb),
                opaque: Arc::as_ptr(&out.interrupt) as *mut std::ffi::c_void,
            };
            if let Some(v) = video {
                let st = sys::avformat_new_stream(out.ctx, std::ptr::null());
                if st.is_null() {
                    return Err(RestreamError::Codec("cannot add the video track".into()));
                }
                let par = (*st).codecpar;
                (*par).codec_type = sys::AVMediaType::AVMEDIA_TYPE_VIDEO;
                (*par).codec_id = sys::AVCodecID::AV_CODEC_ID_H264;
                (*par).width = v.width as i32;
                (*par).height = v.height as i32;
                extradata::set(par, &v.extradata)
                    .map_err(|e| RestreamError::Codec(e.to_string()))?;
                (*st).time_base = sys::AVRational { num: 1, den: 1000 };
                out.video = Some(((*st).index, (*st).time_base));
            }
            if let Some(a) = audio {
                let st = sys::avformat_new_stream(out.ctx, std::ptr::null());
                if st.is_null() {
                    return Err(RestreamError::Codec("cannot add the audio track".into()));
                }
                let par = (*st).codecpar;
                (*par).codec_type = sys::AVMediaType::AVMEDIA_TYPE_AUDIO;
                (*par).codec_id = sys::AVCodecID::AV_CODEC_ID_AAC;
                (*par).sample_rate = 48_000;
                (*par).bit_rate = i64::from(a.bitrate);
                (*par).frame_size = 1024;
                sys::av_channel_layout_default(&mut (*par).ch_layout, 2);
                extradata::set(par, &a.extradata)
                    .map_err(|e| RestreamError::Codec(e.to_string()))?;
                (*st).time_base = sys::AVRational { num: 1, den: 1000 };
                out.audio = Some(((*st).index, (*st).time_base));
            }

            // Muxers such as `hls` open (and close) their own files.
            if let Some(opts) = io.filter(|_| (*(*out.ctx).oformat).flags & sys::AVFMT_NOFILE == 0)
            {
                let mut io_opts: *mut sys::AVDictionary = std::ptr::null_mut();
                set(&mut io_opts, "rw_timeout", &opts.rw_timeout_us.to_string());
                if let Some(ca) = &opts.tls_ca_file {
                    set(&mut io_opts, "tls_verify", "1");
                    set(&mut io_opts, "ca_file", ca);
                }
                if let Some(tcurl) = &opts.tcurl {
                    set(&mut io_opts, "rtmp_tcurl", tcurl);
                }
                let rc = sys::avio_open2(
                    &mut (*out.ctx).pb,
                    c_url.as_ptr(),
                    sys::AVIO_FLAG_WRITE,
                    &(*out.ctx).interrupt_callback,
                    &mut io_opts,
                );
                sys::av_dict_free(&mut io_opts);
                if rc < 0 {
                    return Err(err(
                        if opts.tls_ca_file.is_some() {
                            "connecting over TLS (server certificate verified against restream.ca_file)"
                        } else {
                            "connecting"
                        },
                        rc,
                    ));
                }
                out.io_open = true;
                // Every packet to the network at once (FFmpeg would otherwise
                // hold up to 32 KiB in the I/O buffer: tens of ms at 2.5 Mbit/s).
                (*out.ctx).flush_packets = 1;
            }

            let mut mux_opts: *mut sys::AVDictionary = std::ptr::null_mut();
            for (k, v) in mux {
                set(&mut mux_opts, k, v);
            }
            // Audio and video arrive already interleaved; never hold video
            // long for an audio packet.
            (*out.ctx).max_interleave_delta = 500_000;
            let rc = sys::avformat_write_header(out.ctx, &mut mux_opts);
            sys::av_dict_free(&mut mux_opts);
            if rc < 0 {
                return Err(err("writing the header", rc));
            }
            // The muxer may change time bases in write_header.
            for slot in [&mut out.video, &mut out.audio].into_iter().flatten() {
                let st = *(*out.ctx).streams.add(slot.0 as usize);
                slot.1 = (*st).time_base;
            }
            if !(*out.ctx).pb.is_null() {
                sys::avio_flush((*out.ctx).pb);
            }
        }
        Ok(out)
    }

    /// Writes one packet at `ts_us` (µs from the output's start) lasting `dur_us`.
    /// `new_extradata` announces new H.264 parameter sets.
    pub fn write(
        &mut self,
        video: bool,
        keyframe: bool,
        ts_us: i64,
        dur_us: i64,
        data: &[u8],
        new_extradata: Option<&[u8]>,
    ) -> Result<(), RestreamError> {
        let Some((index, tb)) = (if video { self.video } else { self.audio }) else {
            return Ok(());
        };
        let scale = |us: i64| {
            (i128::from(us) * i128::from(tb.den.max(1)) / (1_000_000 * i128::from(tb.num.max(1))))
                as i64
        };
        // SAFETY: pkt is ours; av_new_packet gives len + padding bytes; side
        // data is allocated by FFmpeg with the asked size.
        unsafe {
            let rc = sys::av_new_packet(self.pkt, data.len() as i32);
            if rc < 0 {
                return Err(err("allocating a packet", rc));
            }
            std::ptr::copy_nonoverlapping(data.as_ptr(), (*self.pkt).data, data.len());
            (*self.pkt).stream_index = index;
            let ts = scale(ts_us);
            (*self.pkt).pts = ts;
            (*self.pkt).dts = ts;
            (*self.pkt).duration = scale(dur_us);
            if keyframe {
                (*self.pkt).flags |= sys::AV_PKT_FLAG_KEY;
            }
            if let Some(x) = new_extradata {
                let side = sys::av_packet_new_side_data(
                    self.pkt,
                    sys::AVPacketSideDataType::AV_PKT_DATA_NEW_EXTRADATA,
                    x.len(),
                );
                if !side.is_null() {
                    std::ptr::copy_nonoverlapping(x.as_ptr(), side, x.len());
                }
            }
            let rc = sys::av_interleaved_write_frame(self.ctx, self.pkt);
            sys::av_packet_unref(self.pkt);
            if rc < 0 {
                return Err(err("sending", rc));
            }
        }
        Ok(())
    }

    /// Bytes handed to the network so far.
    pub fn bytes(&self) -> u64 {
        // SAFETY: pb is open while the output exists.
        unsafe {
            let pb = (*self.ctx).pb;
            if pb.is_null() {
                return 0;
            }
            sys::avio_seek(pb, 0, libc::SEEK_CUR).max(0) as u64
        }
    }

    /// Writes what the muxer holds and the FLV trailer, then closes.
    pub fn finish(mut self) -> Result<(), RestreamError> {
        // SAFETY: the context is open with its header written.
        let rc = unsafe { sys::av_write_trailer(self.ctx) };
        // SAFETY: as in Drop; done here so close errors are not lost silently.
        unsafe {
            if self.io_open {
                sys::avio_closep(&mut (*self.ctx).pb);
                self.io_open = false;
            }
        }
        if rc < 0 {
            return Err(err("finishing the stream", rc));
        }
        Ok(())
    }
}
