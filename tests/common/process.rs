//! The real `castgate` binary as a child process: signals and a bounded wait
//! for its exit.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::files::{free_port, free_udp_port};

/// Sends `signal` (e.g. `libc::SIGTERM`, `libc::SIGHUP`) to `child`.
pub fn signal(child: &Child, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
}

/// Waits up to `limit` for `child` to exit (panics past it, naming `after`,
/// e.g. "SIGTERM"); its exit status.
pub async fn wait_exit(child: &mut Child, limit: Duration, after: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "no exit within {limit:?} of {after}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The castgate binary serving on free loopback ports (killed when dropped,
/// so a failing test leaves no process behind).
pub struct Castgate {
    /// The process.
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub http: String,
}

impl Drop for Castgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Castgate {
    /// A VP8 + Opus publisher of `name` on this process.
    pub async fn publisher(&self, name: &str) -> super::peer::Publisher {
        super::peer::Publisher::connect(
            &format!("{}/whip/{name}", self.http),
            super::peer::PeerOptions::new(Some(super::peer::VideoCodec::Vp8), true),
        )
        .await
        .expect("the publisher connects")
    }
}

/// Starts the castgate binary `bin` (`env!("CARGO_BIN_EXE_castgate")`)
/// recording into `dir`, with the extra environment `env` (e.g. a fail
/// point), once `/healthz` answers.
pub async fn serve_recordings(bin: &str, dir: &Path, env: &[(&str, &str)]) -> Castgate {
    serve_with(bin, dir, &[], env).await
}

/// [`serve_recordings`] with the extra flags `args`.
pub async fn serve_with(bin: &str, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Castgate {
    let http = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--http-listen", &http])
        .args(["--udp-listen", &format!("127.0.0.1:{}", free_udp_port())])
        .arg("--record-dir")
        .arg(dir)
        .args(args)
        .env("RUST_LOG", "castgate=warn")
        .env_remove("CASTGATE_FAILPOINT")
        .stdout(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("castgate starts");
    let base = format!("http://{http}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::get(format!("{base}/healthz")).await.is_err() {
        assert!(Instant::now() < deadline, "castgate never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Castgate { child, http: base }
}
