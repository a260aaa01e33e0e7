//! Gives memory back to the operating system after sessions end.
//!
//! glibc's allocator keeps freed memory in per-thread arenas for reuse, so a
//! gateway that served 300 viewers stays at its peak size long after they
//! left. When sessions have ended, `malloc_trim(0)` (off the runtime, at most
//! every few seconds) returns the free pages of every arena: at the first
//! check that sees fewer sessions, and at the [`SETTLE_CHECKS`] checks after
//! it, once what ended sessions leave behind has been freed too (the HTTP
//! connections that set them up close later: their buffers were ≈ 2.5 MiB
//! after 100 viewers left).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Shared;

/// How often the session count is looked at.
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// Checks that trim again after sessions ended (≈ 10 s).
const SETTLE_CHECKS: u32 = 2;

/// Runs until shutdown: trims after the number of sessions went down, and
/// at the next [`SETTLE_CHECKS`] checks.
pub async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut trims = TrimSchedule::default();
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        let sessions = shared.sessions.lock().len();
        if trims.check(sessions) {
            let _ = tokio::task::spawn_blocking(trim).await;
        }
    }
}

/// When to trim, from the session counts seen at successive checks.
#[derive(Debug, Default)]
struct TrimSchedule {
    /// Sessions at the previous check.
    last: usize,
    /// Checks left that trim because sessions ended a little earlier.
    settling: u32,
}

impl TrimSchedule {
    /// Records the count seen now; whether to trim.
    fn check(&mut self, sessions: usize) -> bool {
        let fewer = sessions < self.last;
        let trim = fewer || self.settling > 0;
        self.settling = if fewer {
            SETTLE_CHECKS
        } else {
            self.settling.saturating_sub(1)
        };
        self.last = sessions;
        trim
    }
}

/// Shrinks a table that holds less than a quarter of its room, so a crowd
/// that left does not keep its size (the shards' session tables, the router's).
pub(super) fn shrink_if_sparse<K: Eq + Hash, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 64 && map.len() < map.capacity() / 4 {
        map.shrink_to_fit();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_when_sessions_end_and_while_they_settle() {
        assert_eq!(SETTLE_CHECKS, 2);
        let mut t = TrimSchedule::default();
        let seen: Vec<bool> = [0, 5, 9, 4, 4, 4, 4, 0, 0, 0, 0, 3, 3]
            .into_iter()
            .map(|n| t.check(n))
            .collect();
        assert_eq!(
            seen,
            [
                false, false, false, true, true, true, false, true, true, true, false, false, false
            ]
        );
    }

    #[test]
    fn sessions_ending_at_every_check_trim_at_every_check() {
        let mut t = TrimSchedule::default();
        t.check(10);
        assert!([8, 6, 4, 2, 0].into_iter().all(|n| t.check(n)));
        assert!(t.check(0) && t.check(0), "while the last end settles");
        assert!(!t.check(0));
    }
}
