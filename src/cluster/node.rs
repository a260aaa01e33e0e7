//! This node as the cluster sees it: its id (stable across restarts), and
//! the record it keeps in Redis, refreshed by every heartbeat.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::stream::StreamInfo;

/// A node's record in Redis (`castgate:node:{id}`), expiring when the node
/// stops beating.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node id.
    pub id: String,
    /// Random per process start.
    pub incarnation: String,
    /// Base URL (HTTP: WHIP, WHEP, API).
    pub url: String,
    /// Media addresses announced to WebRTC clients (`ip:port`).
    pub media: Vec<String>,
    /// castgate's version.
    pub version: String,
    /// When this process started (Unix milliseconds).
    pub started_ms: u64,
    /// When this record was written (Unix milliseconds).
    pub seen_ms: u64,
    /// What the node carries.
    pub load: Load,
    /// The streams it is the origin of, as its `GET /api/streams` shows them.
    pub streams: Vec<StreamInfo>,
}

/// A node's load, for `GET /api/cluster` and placement.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Load {
    /// WebRTC sessions (publishers and viewers).
    pub sessions: usize,
    /// Publisher sessions.
    pub publishers: usize,
    /// Viewer sessions.
    pub viewers: usize,
    /// Live streams it is the origin of.
    pub streams: usize,
    /// CPU used by the process since the last heartbeat, in percent of one
    /// core (200 = two cores busy); `None` where it cannot be read.
    pub cpu_percent: Option<f64>,
}

/// The file in the recordings folder that keeps a node id chosen by default.
pub const NODE_ID_FILE: &str = ".castgate-node-id";

/// Why the node id could not be settled.
#[derive(Debug, thiserror::Error)]
pub enum NodeIdError {
    /// The id file could not be read or written.
    #[error("cluster node id file {path}: {source}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The id file holds something that cannot name a node.
    #[error("cluster node id file {0}: not a node id (1 to 64 letters, digits, '-', '_', '.')")]
    Invalid(std::path::PathBuf),
}

/// This node's id: `configured` if set; else the one kept in `dir`'s
/// [`NODE_ID_FILE`]; else one made from `host` and `port`, kept there for
/// the next start (a container's host name changes, the folder does not).
/// Reads and writes a file: call off the async workers.
pub fn settle_id(
    configured: Option<&str>,
    dir: &Path,
    host: &str,
    port: u16,
) -> Result<String, NodeIdError> {
    if let Some(id) = configured {
        return Ok(id.to_string());
    }
    let path = dir.join(NODE_ID_FILE);
    let file = |source| NodeIdError::File {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            let id = s.trim().to_string();
            if crate::config::valid_node_id(&id) {
                return Ok(id);
            }
            return Err(NodeIdError::Invalid(path));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(file(e)),
    }
    let mut id: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(48)
        .collect();
    if id.trim_matches('-').is_empty() {
        id = "node".into();
    }
    let id = format!("{}-{port}", id.trim_matches('-'));
    std::fs::create_dir_all(dir).map_err(file)?;
    let tmp = dir.join(format!("{NODE_ID_FILE}.tmp"));
    std::fs::write(&tmp, format!("{id}\n")).map_err(file)?;
    std::fs::rename(&tmp, &path).map_err(file)?;
    Ok(id)
}

/// This machine's host name (`node` when it cannot be read).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "node".into())
}

/// CPU time this process has used (user + system), in seconds; `None`
/// where `/proc` is not there.
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces, in parentheses).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf only reads a constant of the system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then(|| (utime + stime) / ticks as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_default_id_is_made_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("castgate-node-id-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let id = settle_id(None, &dir, "Web_Host.example", 8080).unwrap();
        assert_eq!(id, "web-host-example-8080");
        // A new host name (a container restarted) keeps the kept id.
        assert_eq!(settle_id(None, &dir, "other", 9090).unwrap(), id);
        // A configured id wins and is not written.
        assert_eq!(settle_id(Some("edge-1"), &dir, "x", 1).unwrap(), "edge-1");
        assert_eq!(settle_id(None, &dir, "x", 1).unwrap(), id);
        std::fs::write(dir.join(NODE_ID_FILE), "not valid!\n").unwrap();
        assert!(matches!(
            settle_id(None, &dir, "x", 1),
            Err(NodeIdError::Invalid(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cpu_time_is_read_from_proc() {
        let t = cpu_seconds().expect("Linux has /proc/self/stat");
        assert!(t >= 0.0);
    }
}
