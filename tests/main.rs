//! castgate's end-to-end tests, one test binary: every file beside this one is a
//! module (one capability each, its own doc comment says what it proves), and
//! `common/` holds the real peers, media, servers and processes they share.
//! One binary instead of one per file: each test binary links the whole crate
//! (FFmpeg, str0m, object_store), and twenty-odd links cost CI minutes.
//! Run one file's tests with `cargo test --test e2e storage::`.

mod common;

mod access;
mod bad_input;
mod cluster;
mod controls;
mod deploy;
mod floors;
mod hls;
mod http_limits;
mod ice_tcp;
mod keyframes;
mod lifecycle;
mod limits;
mod load;
mod mp4;
mod openapi;
mod ops;
mod recording;
mod recording_integrity;
mod reload;
mod restream;
mod restream_resilience;
mod secure_defaults;
mod simulcast;
mod snapshot;
mod storage;
mod whip_whep;
