//! FFmpeg's own log messages, routed into `tracing` (target `ffmpeg`) instead
//! of FFmpeg printing them on stderr, with every registered secret (RTMP
//! stream keys) masked first: FFmpeg's protocol code may print the URL it was
//! given, and keys must never reach a log.
//!
//! Levels: FFmpeg errors → `warn` (our own error, with its context, follows at
//! the level it deserves), warnings → `debug`, everything else → `trace`. Set
//! `RUST_LOG=castgate=info,ffmpeg=debug` to see FFmpeg's warnings.

use std::cell::Cell;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::Once;

use ffmpeg_sys_next as sys;
use parking_lot::RwLock;

/// Secrets currently in use, masked in every FFmpeg message.
static SECRETS: RwLock<Vec<(u64, String)>> = RwLock::new(Vec::new());
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
static INSTALL: Once = Once::new();

/// Shortest secret that is masked (shorter ones would mask ordinary words).
const MIN_SECRET_LEN: usize = 4;

/// Keeps a secret masked in FFmpeg's log messages while it lives.
#[derive(Debug)]
pub struct SecretGuard(u64);

impl Drop for SecretGuard {
    fn drop(&mut self) {
        SECRETS.write().retain(|(id, _)| *id != self.0);
    }
}

/// Masks `secret` in every FFmpeg message until the guard is dropped, and
/// each of its `/`, `?`, `&`, `=` separated parts as well (FFmpeg's RTMP code
/// splits a URL path its own way and may print the key alone).
pub fn register_secret(secret: &str) -> SecretGuard {
    let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut secrets = SECRETS.write();
    // Longest first, so a whole secret is masked before its parts.
    let mut parts: Vec<&str> = std::iter::once(secret)
        .chain(secret.split(['/', '?', '&', '=']))
        .filter(|p| p.len() >= MIN_SECRET_LEN)
        .collect();
    parts.sort_by_key(|p| std::cmp::Reverse(p.len()));
    parts.dedup();
    for p in parts {
        secrets.push((id, p.to_string()));
    }
    SecretGuard(id)
}

/// `line` with every registered secret replaced by `****`.
pub fn redact(line: &str) -> String {
    let secrets = SECRETS.read();
    let mut out = line.to_string();
    for (_, s) in secrets.iter() {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), "****");
        }
    }
    out
}

/// Routes FFmpeg's log into `tracing`; idempotent, call before using FFmpeg.
pub fn install() {
    INSTALL.call_once(|| {
        // SAFETY: `callback` matches FFmpeg's callback type and is thread-safe.
        unsafe { sys::av_log_set_callback(Some(callback)) }
    });
}

#[cfg(target_arch = "x86_64")]
type VaList = *mut sys::__va_list_tag;
#[cfg(not(target_arch = "x86_64"))]
type VaList = sys::va_list;

thread_local! {
    /// FFmpeg's line-continuation state (a message may come in pieces).
    static PRINT_PREFIX: Cell<c_int> = const { Cell::new(1) };
}

unsafe extern "C" fn callback(avcl: *mut c_void, level: c_int, fmt: *const c_char, vl: VaList) {
    let wanted = match level {
        l if l <= sys::AV_LOG_ERROR => tracing::enabled!(target: "ffmpeg", tracing::Level::WARN),
        l if l <= sys::AV_LOG_WARNING => tracing::enabled!(target: "ffmpeg", tracing::Level::DEBUG),
        _ => tracing::enabled!(target: "ffmpeg", tracing::Level::TRACE),
    };
    if !wanted || fmt.is_null() {
        return;
    }
    let mut buf = [0 as c_char; 1024];
    let mut prefix = PRINT_PREFIX.with(|p| p.get());
    // SAFETY: FFmpeg's own formatter with its arguments; the buffer size is
    // passed and the result is NUL-terminated (truncated if longer).
    let n = unsafe {
        sys::av_log_format_line2(
            avcl,
            level,
            fmt,
            vl,
            buf.as_mut_ptr(),
            buf.len() as c_int,
            &mut prefix,
        )
    };
    PRINT_PREFIX.with(|p| p.set(prefix));
    if n < 0 {
        return;
    }
    // SAFETY: NUL-terminated by av_log_format_line2.
    let text = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy();
    let text = redact(text.trim_end());
    if text.is_empty() {
        return;
    }
    match level {
        l if l <= sys::AV_LOG_ERROR => tracing::warn!(target: "ffmpeg", "{text}"),
        l if l <= sys::AV_LOG_WARNING => tracing::debug!(target: "ffmpeg", "{text}"),
        _ => tracing::trace!(target: "ffmpeg", "{text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_secrets_are_masked_until_dropped() {
        let key = "live_123456_AbCdEfGh";
        let guard = register_secret(key);
        let line = format!("Cannot open rtmp://example.com/app/{key}: refused");
        assert_eq!(
            redact(&line),
            "Cannot open rtmp://example.com/app/****: refused"
        );
        drop(guard);
        assert_eq!(redact(&line), line);
        // The key alone, as FFmpeg's RTMP code may print it.
        let _g2 = register_secret("inst/live_abcdef?auth=zyxwvu");
        let shown = redact("playpath live_abcdef?auth=zyxwvu app inst");
        assert!(
            !shown.contains("live_abcdef") && !shown.contains("zyxwvu"),
            "{shown}"
        );
        // Too short to mask safely.
        let _g = register_secret("ab");
        assert_eq!(redact("about"), "about");
    }
}
