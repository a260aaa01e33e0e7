//! A real S3 protocol server on loopback: moto's server mode (installed by
//! `scripts/setup.sh --test` into its own virtual environment). It keeps
//! buckets in memory, enforces S3's part sizes, and by default accepts any
//! access key; a test that needs credentials checked asks for them
//! ([`Moto::start_with_auth`]). Read back without signing (moto does not
//! ask), so the checks do not lean on castgate's client.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::files::free_port;

/// The bucket every test uses.
pub const BUCKET: &str = "castgate-test";

/// The moto release `scripts/setup.sh` installs.
const MOTO_VERSION: &str = "5.2.6";

fn moto_server() -> PathBuf {
    if let Ok(p) = std::env::var("CASTGATE_MOTO_SERVER") {
        return PathBuf::from(p);
    }
    let cache = std::env::var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache")
        });
    let p = cache.join(format!("castgate/moto-{MOTO_VERSION}/bin/moto_server"));
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup.sh --test",
        p.display()
    );
    p
}

/// A moto server child process (killed when dropped).
pub struct Moto {
    child: Child,
    /// Its loopback port.
    pub port: u16,
}

impl Moto {
    /// Starts one on a free port with the test bucket made; returns once it answers.
    pub fn start() -> Moto {
        Self::spawn(&[])
    }

    /// Starts one that checks signatures against its own IAM users (after
    /// the first `free_actions` requests, which create them), with the test
    /// bucket made.
    pub fn start_with_auth(free_actions: u32) -> Moto {
        Self::spawn(&[("INITIAL_NO_AUTH_ACTION_COUNT", free_actions.to_string())])
    }

    fn spawn(env: &[(&str, String)]) -> Moto {
        let port = free_port();
        let mut cmd = Command::new(moto_server());
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .expect("moto_server runs (scripts/setup.sh --test)");
        let moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        moto
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Makes the test bucket.
    pub async fn make_bucket(&self) {
        let r = reqwest::Client::new()
            .put(format!("{}/{BUCKET}", self.endpoint()))
            .send()
            .await
            .expect("moto answers");
        assert!(r.status().is_success(), "making the bucket: {}", r.status());
    }

    /// Stops it (SIGSTOP): connections hang, as with a storage outage.
    pub fn pause(&self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGSTOP) };
    }

    /// Lets it go on (SIGCONT).
    pub fn resume(&self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGCONT) };
    }

    /// An object's bytes and user metadata (`None`: no such object), read
    /// with botocore (moto's own dependency) so that the check does not
    /// lean on castgate's S3 client, and signed (moto refuses unsigned reads
    /// of objects put in one request).
    pub async fn object(
        &self,
        key: &str,
    ) -> Option<(Vec<u8>, std::collections::HashMap<String, String>)> {
        const READ: &str = "import boto3, json, sys\n\
            s3 = boto3.client('s3', endpoint_url=sys.argv[1], aws_access_key_id='test', \
            aws_secret_access_key='test', region_name='us-east-1')\n\
            try:\n    r = s3.get_object(Bucket=sys.argv[2], Key=sys.argv[3])\n\
            except s3.exceptions.NoSuchKey:\n    sys.exit(3)\n\
            sys.stdout.buffer.write(json.dumps(r['Metadata']).encode() + b'\\n' + r['Body'].read())\n";
        let python = moto_server().with_file_name("python");
        let (endpoint, key) = (self.endpoint(), key.to_string());
        let out = tokio::task::spawn_blocking(move || {
            Command::new(python)
                .args(["-c", READ, &endpoint, BUCKET, &key])
                .output()
                .expect("moto's python runs")
        })
        .await
        .unwrap();
        if out.status.code() == Some(3) {
            return None;
        }
        assert!(
            out.status.success(),
            "reading {}: {}",
            BUCKET,
            String::from_utf8_lossy(&out.stderr)
        );
        let split = out
            .stdout
            .iter()
            .position(|&b| b == b'\n')
            .expect("metadata line");
        let meta: std::collections::HashMap<String, String> =
            serde_json::from_slice(&out.stdout[..split]).expect("metadata JSON");
        Some((out.stdout[split + 1..].to_vec(), meta))
    }

    /// The keys in the bucket.
    pub async fn keys(&self) -> Vec<String> {
        let text = reqwest::get(format!("{}/{BUCKET}?list-type=2", self.endpoint()))
            .await
            .expect("moto answers")
            .text()
            .await
            .unwrap();
        tags(&text, "Key")
    }

    /// The ids of the multipart uploads open in the bucket.
    pub async fn open_uploads(&self) -> Vec<String> {
        let text = reqwest::get(format!("{}/{BUCKET}?uploads", self.endpoint()))
            .await
            .expect("moto answers")
            .text()
            .await
            .unwrap();
        tags(&text, "UploadId")
    }
}

/// The texts of every `<tag>…</tag>` in `xml`.
fn tags(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    xml.split(&open)
        .skip(1)
        .filter_map(|s| s.split_once(&close).map(|(v, _)| v.to_string()))
        .collect()
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.resume();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
