//! The server's CPU time and memory from `/proc/PID/stat` and `/proc/PID/status` (Linux).

use anyhow::{Context, bail};

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// User + system CPU seconds since the process started.
    pub cpu_s: f64,
    /// Resident memory now (VmRSS, KiB).
    pub rss_kb: u64,
    /// Peak resident memory since the process started (VmHWM, KiB).
    pub hwm_kb: u64,
}

/// Reads `/proc/PID/stat` and `/proc/PID/status`.
pub fn read(pid: u32) -> anyhow::Result<Reading> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("no process {pid} (reading /proc/{pid}/stat)"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let ticks = cpu_ticks(&stat)?;
    Ok(Reading {
        cpu_s: ticks as f64 / clock_ticks_per_sec(),
        rss_kb: status_kb(&status, "VmRSS").unwrap_or(0),
        hwm_kb: status_kb(&status, "VmHWM").unwrap_or(0),
    })
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line, in clock ticks.
pub fn cpu_ticks(stat: &str) -> anyhow::Result<u64> {
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let Some(end) = stat.rfind(')') else {
        bail!("unexpected /proc stat format");
    };
    let fields: Vec<&str> = stat[end + 1..].split_whitespace().collect();
    // After ')' the first field is the state (field 3): utime is field 14 → index 11.
    let num = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .context("unexpected /proc stat format")
    };
    Ok(num(11)? + num(12)?)
}

/// A `Name:   123 kB` value of `/proc/PID/status`.
pub fn status_kb(status: &str, name: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        l.strip_prefix(name)?
            .strip_prefix(':')?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// `sysconf(_SC_CLK_TCK)` (100 on Linux when unknown).
fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf only reads a constant of the C library.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 { v as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_a_tricky_name() {
        let stat = "42 (cast gate) (x)) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 1 2 3";
        assert_eq!(cpu_ticks(stat).unwrap(), 300);
        assert!(cpu_ticks("garbage").is_err());
    }

    #[test]
    fn parses_status() {
        let s = "Name:\tcastgate\nVmHWM:\t  51200 kB\nVmRSS:\t   40960 kB\n";
        assert_eq!(status_kb(s, "VmRSS"), Some(40960));
        assert_eq!(status_kb(s, "VmHWM"), Some(51200));
        assert_eq!(status_kb(s, "VmSwap"), None);
    }

    #[test]
    fn reads_this_process() {
        let r = read(std::process::id()).unwrap();
        assert!(r.rss_kb > 0 && r.hwm_kb >= r.rss_kb / 2);
        assert!(read(u32::MAX).is_err());
    }
}
