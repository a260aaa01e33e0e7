//! A cluster on this machine: a real `redis-server` on a free loopback port
//! (nothing persisted; stopping and starting it on the same port is an
//! outage), and castgate nodes as child processes with their own HTTP and
//! UDP ports and folders.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::files::{TempDir, free_port, temp_dir};
use super::process::{Castgate, serve_with, signal};

/// The secret the test nodes share.
pub const SECRET: &str = "cluster-test-secret-0123456789abcdef";

/// A `redis-server` child process.
pub struct Redis {
    child: Option<Child>,
    /// Its loopback port.
    pub port: u16,
}

impl Redis {
    /// Starts one on a free port; returns once it answers.
    pub fn start() -> Redis {
        let mut r = Redis {
            child: None,
            port: free_port(),
        };
        r.resume();
        r
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it again on the same port (empty: nothing was persisted).
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/setup.sh --test installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it (an outage; its data is gone, as with a crashed Redis
    /// without persistence).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// What `redis-cli` prints for `args`.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A castgate node of a test cluster (killed when dropped).
pub struct Node {
    /// The process and its base URL.
    pub gw: Castgate,
    /// Its node id.
    pub id: String,
    /// Its recordings folder.
    pub dir: TempDir,
}

impl Node {
    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gw.http)
    }

    /// GET `path` as JSON.
    pub async fn get(&self, path: &str) -> serde_json::Value {
        reqwest::get(self.url(path))
            .await
            .expect("the node answers")
            .json()
            .await
            .expect("JSON")
    }

    /// The node carrying `stream`, as this node lists it (`None`: not listed).
    pub async fn lists(&self, stream: &str) -> Option<String> {
        let v = self.get("/api/streams").await;
        v["streams"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == stream)
            .map(|s| s["node"].as_str().unwrap_or("").to_string())
    }

    /// Sends `sig` to the process (SIGSTOP, SIGCONT, SIGKILL).
    pub fn signal(&self, sig: libc::c_int) {
        signal(&self.gw.child, sig);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.gw.child.kill();
        let _ = self.gw.child.wait();
    }
}

/// Starts node `id` of the cluster on `redis`, beating every 0.5 s and
/// expiring after 2 s (short, for the tests), with `extra` flags. Its
/// public URL is the default: `http://` + its loopback HTTP address.
pub async fn node(bin: &str, redis: &Redis, id: &str, extra: &[&str]) -> Node {
    let dir = temp_dir(&format!("node-{id}"));
    let url = redis.url();
    let mut args = vec![
        "--cluster-redis",
        url.as_str(),
        "--cluster-secret",
        SECRET,
        "--cluster-node-id",
        id,
        "--cluster-heartbeat",
        "0.5",
        "--cluster-expiry",
        "2",
    ];
    args.extend_from_slice(extra);
    let gw = serve_with(bin, dir.path(), &args, &[]).await;
    Node {
        gw,
        id: id.to_string(),
        dir,
    }
}

/// Polls `check` every 50 ms until it holds or `limit` passes; how long it
/// took, or `None`.
pub async fn within<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}
