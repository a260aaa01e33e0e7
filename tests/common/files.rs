//! Files and media checks shared by the tests: scratch folders, free ports,
//! and what FFmpeg's own tools say about a file.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A scratch folder under the OS temp folder, removed with everything in it
/// when dropped (so a test run leaves nothing behind; keep the value alive as
/// long as the folder is used).
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// The folder's path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A new, empty scratch folder under the OS temp folder (see [`TempDir`]).
pub fn temp_dir(label: &str) -> TempDir {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("castgate-{label}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// A loopback TCP port nobody listens on (bound, then released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A loopback port nobody uses for UDP nor TCP (castgate's media port takes
/// both: UDP, and TCP for ICE-TCP), bound, then released.
pub fn free_udp_port() -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// `ffprobe -show_entries ENTRIES` as `key=value` lines.
pub fn probe(file: &Path, entries: &str) -> String {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", entries])
        .args(["-of", "default=nw=1"])
        .arg(file)
        .output()
        .expect("ffprobe runs");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// `ffprobe` packet count of one stream kind ("v" or "a").
pub fn packets(file: &Path, kind: &str) -> usize {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", kind, "-count_packets"])
        .args(["-show_entries", "stream=nb_read_packets", "-of", "csv=p=0"])
        .arg(file)
        .output()
        .expect("ffprobe runs");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// The container's duration in seconds (0 when unknown).
pub fn duration(file: &Path) -> f64 {
    probe(file, "format=duration")
        .trim()
        .trim_start_matches("duration=")
        .parse()
        .unwrap_or(0.0)
}

/// Decodes the whole file; any stderr output is a failure (exit codes lie).
/// Frames keep their own timestamps and time base (`-fps_mode passthrough
/// -enc_time_base -1`): WebRTC video is variable frame rate, and FFmpeg's
/// default 1/fps output time base reports two frames a millisecond apart as
/// "non monotonically increasing" although the file is fine.
pub fn decodes_cleanly(file: &Path) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-i"])
        .arg(file)
        .args(["-fps_mode", "passthrough", "-enc_time_base", "-1"])
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.trim().is_empty(),
        "{}: {err}",
        file.display()
    );
}

/// The recording files (final or `.part`) under a recordings folder, sorted:
/// `STEM.webm|mkv|mp4[.part]`, not the files made from them (`STEM.remux.mp4`…).
pub fn recordings_in(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for s in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(s.path()).into_iter().flatten().flatten() {
            let p = f.path();
            let name = f.file_name().to_string_lossy().to_string();
            let base = name.strip_suffix(".part").unwrap_or(&name);
            let recording = [".webm", ".mkv", ".mp4"].iter().any(|ext| {
                base.strip_suffix(ext)
                    .is_some_and(|stem| !stem.is_empty() && !stem.contains('.'))
            });
            if recording {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
