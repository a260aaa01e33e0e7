//! castgate: a headless WebRTC recording and restreaming gateway.
//!
//! Data moves one way through the crate: [`http`] takes WHIP/WHEP requests,
//! [`rtc`] runs the WebRTC sessions on one UDP port, and [`stream`] fans each
//! publisher's frames out to its viewers, [`record`]ers and [`restream`] targets.
//! [`server`] wires them together; [`config`] says how. [`outbound`] decides
//! where castgate may connect on a request's behalf.

pub mod address;
pub mod cluster;
pub mod config;
pub mod events;
pub mod failpoint;
pub mod ffmpeg_log;
pub mod http;
pub mod media;
pub mod metrics;
pub mod names;
pub mod outbound;
pub mod record;
pub mod restream;
pub mod rtc;
pub mod server;
pub mod stream;
