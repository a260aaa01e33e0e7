//! The result of a run: one JSON object (`--json`) or a text report. The JSON keys are
//! an interface scripts rely on (issue 7); new keys may be added, none renamed.

use serde::Serialize;

use crate::stats::Percentiles;

/// Everything a run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Base URL loaded.
    pub url: String,
    /// Video codec sent.
    pub codec: String,
    /// Picture size of the clip.
    pub size: String,
    /// Video bitrate asked for (kbit/s).
    pub bitrate_kbps: u32,
    /// Video bitrate the clip really has (kbit/s).
    pub clip_video_kbps: f64,
    /// Audio bitrate of the clip (kbit/s).
    pub clip_audio_kbps: f64,
    /// Publishers asked for.
    pub publishers: usize,
    /// Viewers per stream asked for (0 in churn mode).
    pub viewers_per_stream: usize,
    /// Sessions (publishers + viewers) that connected and lasted.
    pub sessions_ok: u64,
    /// Sessions refused, not connected, or ended by the server early.
    pub sessions_failed: u64,
    /// Publishers that connected.
    pub publishers_ok: u64,
    /// Viewers that connected.
    pub viewers_ok: u64,
    /// Viewers that failed.
    pub viewers_failed: u64,
    /// Most viewers connected at once.
    pub viewers_peak: u64,
    /// Distinct failure messages with their counts (at most 10).
    pub errors: Vec<(String, u64)>,
    /// Distinct RTP packets received by all viewers over the whole run.
    pub packets_received: u64,
    /// Packets missing (sequence gaps not repaired by retransmission).
    pub packets_lost: u64,
    /// `packets_lost` in % of the packets expected.
    pub loss_pct: f64,
    /// The largest loss of a single viewer (%).
    pub loss_pct_max_viewer: f64,
    /// Video frames that arrived whole.
    pub frames_complete: u64,
    /// Video frames with packets missing.
    pub frames_incomplete: u64,
    /// Complete keyframes received.
    pub keyframes_received: u64,
    /// Video packets of frames whose RTP time was older than a frame the viewer already
    /// had (the server sent frames out of timestamp order); not checked for completeness.
    pub packets_out_of_order: u64,
    /// NACKs sent by the viewers.
    pub nacks_sent: u64,
    /// Packets the viewers received more than once (retransmissions).
    pub retransmissions_received: u64,
    /// NACKs the publishers received.
    pub publisher_nacks_received: u64,
    /// Keyframe requests the publishers received.
    pub publisher_keyframe_requests: u64,
    /// Times a publisher jumped to a keyframe to answer one.
    pub publisher_keyframe_jumps: u64,
    /// Media frames the publishers sent later than 50 ms after their due time (the
    /// load tool itself was short of CPU).
    pub publisher_late_frames: u64,
    /// WHEP POST → ICE + DTLS connected.
    pub connect_ms: Percentiles,
    /// WHEP POST → first complete keyframe.
    pub first_frame_ms: Percentiles,
    /// Publisher send → frame complete at a viewer, every frame at every viewer, within
    /// the measurement window.
    pub delay_ms: Percentiles,
    /// The same, keyframes only.
    pub delay_ms_keyframes: Percentiles,
    /// The same, other frames only.
    pub delay_ms_delta: Percentiles,
    /// Per frame: publisher send → complete at the LAST viewer (fan-out time seen from
    /// outside), keyframes.
    pub fanout_ms_keyframes: Percentiles,
    /// The same, other frames.
    pub fanout_ms_delta: Percentiles,
    /// Viewer sessions set up per second (connected viewers / first POST → last connect).
    pub setup_per_s: f64,
    /// Seconds of the measurement window (steady load, or the churn period).
    pub window_s: f64,
    /// Packets received by the viewers within the window.
    pub window_packets: u64,
    /// CPU seconds this tool used within the window.
    pub load_cpu_s: f64,
    /// Server CPU seconds within the window (`--server-pid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_s: Option<f64>,
    /// Server CPU in % of one core within the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_pct: Option<f64>,
    /// Server CPU µs per packet received by the viewers within the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_us_per_packet: Option<f64>,
    /// Server resident memory before any session of this run (KiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_rss_start_kb: Option<u64>,
    /// Server resident memory with the publishers streaming, before the viewers (KiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_rss_before_viewers_kb: Option<u64>,
    /// Highest server resident memory sampled during the run (KiB, every 200 ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_peak_rss_kb: Option<u64>,
    /// Server resident memory after every session ended, the tool's HTTP
    /// connections closed and `--settle` passed (KiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_rss_end_kb: Option<u64>,
    /// (peak RSS − RSS before viewers) / most viewers connected at once (KiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_rss_per_viewer_kb: Option<f64>,
}

impl Report {
    /// The human-readable report.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let mut line = |l: String| {
            s.push_str(&l);
            s.push('\n');
        };
        line(format!(
            "castgate-load → {}: {} publisher(s) × {} viewer(s), {} {} at {} kbit/s (clip: {:.0} kbit/s video + {:.0} kbit/s Opus)",
            self.url,
            self.publishers,
            self.viewers_per_stream,
            self.codec,
            self.size,
            self.bitrate_kbps,
            self.clip_video_kbps,
            self.clip_audio_kbps
        ));
        line(format!(
            "sessions: {} ok, {} failed (publishers {} ok; viewers {} ok, {} failed, peak {} at once); setup {:.0}/s",
            self.sessions_ok,
            self.sessions_failed,
            self.publishers_ok,
            self.viewers_ok,
            self.viewers_failed,
            self.viewers_peak,
            self.setup_per_s
        ));
        for (e, n) in &self.errors {
            line(format!("  {n} × {e}"));
        }
        line(format!(
            "packets: {} received, {} lost ({:.3} %, worst viewer {:.3} %), {} out of timestamp order; frames {} complete, {} incomplete, {} keyframes",
            self.packets_received,
            self.packets_lost,
            self.loss_pct,
            self.loss_pct_max_viewer,
            self.packets_out_of_order,
            self.frames_complete,
            self.frames_incomplete,
            self.keyframes_received
        ));
        line(format!(
            "repair: {} NACKs sent, {} retransmissions received; publishers: {} NACKs, {} keyframe requests, {} jumps to a keyframe, {} late frames",
            self.nacks_sent,
            self.retransmissions_received,
            self.publisher_nacks_received,
            self.publisher_keyframe_requests,
            self.publisher_keyframe_jumps,
            self.publisher_late_frames
        ));
        line(format!(
            "connect (POST → DTLS up): {}",
            self.connect_ms.text()
        ));
        line(format!(
            "first keyframe (POST → complete): {}",
            self.first_frame_ms.text()
        ));
        line(format!("one-way delay: {}", self.delay_ms.text()));
        line(format!("  keyframes: {}", self.delay_ms_keyframes.text()));
        line(format!("  other frames: {}", self.delay_ms_delta.text()));
        line(format!(
            "fan-out (send → last viewer): keyframes {}; other frames {}",
            self.fanout_ms_keyframes.text(),
            self.fanout_ms_delta.text()
        ));
        line(format!(
            "window: {:.1} s, {} packets ({:.0}/s); this tool used {:.2} CPU-s",
            self.window_s,
            self.window_packets,
            self.window_packets as f64 / self.window_s.max(0.001),
            self.load_cpu_s
        ));
        if let (Some(cpu), Some(pct), Some(us)) = (
            self.server_cpu_s,
            self.server_cpu_pct,
            self.server_cpu_us_per_packet,
        ) {
            line(format!(
                "server CPU: {cpu:.2} s in the window ({pct:.0} % of one core) = {us:.2} µs per packet"
            ));
        }
        if let (Some(a), Some(b), Some(p), Some(e)) = (
            self.server_rss_start_kb,
            self.server_rss_before_viewers_kb,
            self.server_peak_rss_kb,
            self.server_rss_end_kb,
        ) {
            line(format!(
                "server memory: {a} KiB at start, {b} KiB before viewers, peak {p} KiB, {e} KiB after; {:.0} KiB per viewer",
                self.server_rss_per_viewer_kb.unwrap_or(0.0)
            ));
        }
        s
    }
}
