//! RTMP receivers and the restream API, for the restreaming tests:
//! `ffmpeg -listen 1` as a one-shot RTMP server and small API calls.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use castgate::server::Server;
use serde_json::Value;

use super::files::free_port;
use super::gateway::{eventually, url};
use super::peer::http_client;

/// The stream key the tests use: it must never show in API output.
pub const KEY: &str = "sEcReT-kEy-42";

/// Whether something listens on 127.0.0.1:`port` (read from /proc, so the
/// one-shot server's single connection is not used up by a probe).
pub fn listening(port: u16) -> bool {
    let want = format!(":{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&want) && f[3] == "0A"
        })
}

/// A one-shot RTMP server writing what it receives to `out` unchanged.
pub struct Receiver {
    /// The ffmpeg process.
    pub child: Child,
    /// The file it writes.
    pub out: PathBuf,
    /// Its port.
    pub port: u16,
}

impl Receiver {
    /// Starts one on a free port, writing `dir/name`.
    pub async fn start(dir: &Path, name: &str) -> Receiver {
        Receiver::start_on(dir, name, free_port()).await
    }

    /// Starts one on `port`.
    pub async fn start_on(dir: &Path, name: &str, port: u16) -> Receiver {
        let out = dir.join(name);
        let child = Command::new("ffmpeg")
            .args(["-v", "error", "-nostdin", "-listen", "1", "-i"])
            .arg(format!("rtmp://127.0.0.1:{port}/live/{KEY}"))
            .args(["-c", "copy", "-y"])
            .arg(&out)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ffmpeg starts");
        assert!(
            eventually(Duration::from_secs(10), || listening(port)).await,
            "ffmpeg never listened on {port}"
        );
        Receiver { child, out, port }
    }

    /// Its URL, with the test key.
    pub fn url(&self) -> String {
        format!("rtmp://127.0.0.1:{}/live/{KEY}", self.port)
    }

    /// Waits for the receiver to exit (the push ended); true if it did.
    pub async fn finished(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `POST /api/streams/{stream}/restreams` with `body`: status and text.
pub async fn post_target(server: &Server, stream: &str, body: &str) -> (u16, String) {
    let resp = http_client()
        .unwrap()
        .post(url(server, &format!("/api/streams/{stream}/restreams")))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

/// GET `path` as JSON.
pub async fn get_json(server: &Server, path: &str) -> Value {
    http_client()
        .unwrap()
        .get(url(server, path))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// One target of `GET /api/restreams` by id (Null when absent).
pub async fn target(server: &Server, id: &str) -> Value {
    let all = get_json(server, "/api/restreams").await;
    all["restreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Polls target `id` every 10 ms until `cond` holds or `within` has passed;
/// the last view (Null when absent).
pub async fn wait_target(
    server: &Server,
    id: &str,
    within: Duration,
    cond: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let t = target(server, id).await;
        if cond(&t) || Instant::now() >= deadline {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The `id` of a target as a POST answered it.
pub fn id_of(body: &str) -> String {
    serde_json::from_str::<Value>(body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A self-signed certificate for 127.0.0.1 and localhost in `dir`: (cert, key).
pub fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let ok = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs")
        .success();
    assert!(ok, "openssl req failed");
    (cert, key)
}
