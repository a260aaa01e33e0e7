//! The real `castgate` binary as a child process: signals and a bounded wait
//! for its exit.

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

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
