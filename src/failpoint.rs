//! Fail points: named steps where the process can be made to crash on
//! purpose, so tests can prove that a crash at each step leaves a state
//! start-up handles (a recording's finalization, say) without relying on
//! timing. `CASTGATE_FAILPOINT=<name>` in the environment aborts the process
//! when it reaches the step `<name>`; unset (always, outside such tests),
//! every [`hit`] is a comparison with nothing.

use std::sync::OnceLock;

/// The environment variable naming the step to crash at.
pub const VAR: &str = "CASTGATE_FAILPOINT";

fn armed() -> Option<&'static str> {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    ARMED
        .get_or_init(|| std::env::var(VAR).ok().filter(|v| !v.is_empty()))
        .as_deref()
}

/// Aborts the process (as a crash would: no clean-up, no flush) if `step`
/// is the armed fail point.
pub fn hit(step: &str) {
    if armed() == Some(step) {
        eprintln!("castgate: fail point {step:?} reached: aborting");
        std::process::abort();
    }
}
