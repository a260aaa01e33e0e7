//! Gives memory back to the operating system after sessions end.
//!
//! glibc's allocator keeps freed memory in per-thread arenas for reuse, so a
//! gateway that served 300 viewers stays at its peak size long after they
//! left. When sessions have ended, one `malloc_trim(0)` (off the runtime, at
//! most every few seconds) returns the free pages of every arena.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Shared;

/// How often the session count is looked at.
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// Runs until shutdown: trims after the number of sessions went down.
pub async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = 0usize;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        let now = shared.sessions.lock().len();
        if now < last {
            let _ = tokio::task::spawn_blocking(trim).await;
        }
        last = now;
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only releases free memory; no pointer is touched.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
