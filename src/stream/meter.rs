//! Bytes and frames counted over one-second windows: the bitrates and frame
//! rates the API shows, and what simulcast layers are ranked and chosen by.

use std::time::{Duration, Instant};

/// Rates go to zero when nothing flowed for this long.
const STALE_AFTER: Duration = Duration::from_secs(3);

/// A bitrate and frame-rate meter over one-second windows.
#[derive(Debug, Clone)]
pub struct Meter {
    window_start: Instant,
    bytes: u64,
    frames: u64,
    last_bps: f64,
    last_fps: f64,
    last_at: Instant,
}

impl Meter {
    /// A meter whose first window starts at `now`.
    pub fn new(now: Instant) -> Meter {
        Meter {
            window_start: now,
            bytes: 0,
            frames: 0,
            last_bps: 0.0,
            last_fps: 0.0,
            last_at: now,
        }
    }

    /// Counts `bytes` and `frames` that arrived at `now`.
    pub fn add(&mut self, now: Instant, bytes: usize, frames: u64) {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= Duration::from_secs(1) {
            let secs = elapsed.as_secs_f64();
            self.last_bps = self.bytes as f64 * 8.0 / secs;
            self.last_fps = self.frames as f64 / secs;
            self.last_at = now;
            self.window_start = now;
            self.bytes = 0;
            self.frames = 0;
        }
        self.bytes += bytes as u64;
        self.frames += frames;
    }

    /// (bits per second, frames per second) of the last whole window, zero
    /// when nothing flowed lately.
    pub fn rates(&self, now: Instant) -> (f64, f64) {
        if now.saturating_duration_since(self.last_at) > STALE_AFTER {
            return (0.0, 0.0);
        }
        (self.last_bps, self.last_fps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_those_of_the_last_whole_second() {
        let t0 = Instant::now();
        let mut m = Meter::new(t0);
        for i in 0..30 {
            m.add(t0 + Duration::from_millis(i * 33), 1000, 1);
        }
        assert_eq!(m.rates(t0), (0.0, 0.0), "no whole window yet");
        m.add(t0 + Duration::from_secs(1), 1000, 1);
        let (bps, fps) = m.rates(t0 + Duration::from_secs(1));
        assert_eq!(bps, 30.0 * 8000.0);
        assert_eq!(fps, 30.0);
        assert_eq!(m.rates(t0 + Duration::from_secs(5)), (0.0, 0.0), "stale");
    }
}
