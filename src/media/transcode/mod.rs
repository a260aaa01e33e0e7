//! Decoding and encoding through FFmpeg for outputs that need another
//! codec than the publisher's: Opus → AAC and VP8/VP9/AV1 → H.264, shared by
//! restreams (RTMP/HLS, live settings) and recordings' MP4 exports (file
//! settings).

pub mod audio;
pub mod video;

/// Why a transcoder could not be set up or failed.
#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    /// FFmpeg refused.
    #[error("{what}: {source}")]
    Ffmpeg {
        /// What was being done.
        what: &'static str,
        /// FFmpeg's error.
        source: ffmpeg_next::Error,
    },
    /// A codec could not be set up (missing, out of memory).
    #[error("{0}")]
    Codec(String),
    /// The input cannot be handled (e.g. a pixel format swscale refuses).
    #[error("{0}")]
    Unsupported(String),
}
