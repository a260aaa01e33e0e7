//! castgate's own media, the lowest floor: the [`Frame`] that flows from
//! publishers to every sink, its codecs and sender clock, and what the
//! recorder and the restreamer both need to know about codecs — picture
//! sizes ([`probe`]), H.264 Annex-B and parameter sets ([`h264`]), AV1 OBUs
//! ([`av1`]), the Opus header ([`opus`]), codec data for FFmpeg
//! ([`extradata`]), the shared timeline with its A/V interleaver
//! ([`timeline`]) and pictures of a stream as JPEG ([`snapshot`]).
//!
//! It imports nothing else of castgate: the hub (`stream`), `record`,
//! `restream` and `rtc` build on it.

pub mod av1;
pub mod extradata;
pub mod frame;
pub mod h264;
pub mod opus;
pub mod probe;
pub mod snapshot;
pub mod timeline;
pub mod transcode;

pub use frame::{Codec, CodecParams, Frame, MediaKind, SenderClock};
