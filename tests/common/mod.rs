//! Shared helpers of castgate's integration tests: real WebRTC peers and real test media.

/// A Redis and castgate nodes as child processes: a cluster on loopback.
pub mod cluster;
/// Scratch folders, free ports and FFmpeg-tool checks of files.
pub mod files;
/// An in-process gateway and bounded waits around it.
pub mod gateway;
/// A local webhook receiver.
pub mod hooks;
/// Real encoded test media made with the ffmpeg CLI.
pub mod media;
/// Network namespaces made by a test: other hosts, addresses of their own.
pub mod netns;
/// Real WebRTC peers: WHIP publisher, WHEP viewer.
pub mod peer;
/// The real binary as a child process: signals, bounded exit waits.
pub mod process;
/// HTTP/1.1 by hand over std TCP streams.
pub mod rawhttp;
/// RTMP receivers and restream API calls.
pub mod rtmp;
/// An S3 protocol server (moto) on loopback.
pub mod s3;
