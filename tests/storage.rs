//! Recordings in object storage, against a real S3 protocol server on
//! loopback (moto's server mode): multipart uploads checked by SHA-256,
//! downloads (whole and Range) through castgate from the bucket, a second
//! node serving what the first stored, an outage of the storage server, a
//! crash in the middle of an upload, and credentials it refuses.

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::files::{TempDir, temp_dir};
use common::media::{EncodedFrame, h264_frames_heavy, opus_packets, video_frames};
use common::peer::{PeerOptions, Publisher, VideoCodec};
use common::process::{Castgate, serve_with, wait_exit};
use common::s3::{BUCKET, Moto};
use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_castgate");
const KEYS: [(&str, &str); 2] = [
    ("AWS_ACCESS_KEY_ID", "castgate-test"),
    ("AWS_SECRET_ACCESS_KEY", "castgate-test-secret"),
];

/// A castgate recording into `moto`'s test bucket (`extra` TOML lines go
/// in its `[storage]` table), with `env` set.
async fn node(moto: &Moto, dir: &TempDir, extra: &str, env: &[(&str, &str)]) -> Castgate {
    let config = dir.path().join("castgate.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\nkind = \"s3\"\nendpoint = \"{}\"\nbucket = \"{BUCKET}\"\n\
             refresh_secs = 1\ntimeout_secs = 3\nretry_max_secs = 2\n{extra}\n",
            moto.endpoint()
        ),
    )
    .unwrap();
    let recordings = dir.path().join("recordings");
    let mut all: Vec<(&str, &str)> = KEYS.to_vec();
    all.extend_from_slice(env);
    serve_with(
        BIN,
        &recordings,
        &["--config", config.to_str().unwrap()],
        &all,
    )
    .await
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

async fn json(url: &str) -> serde_json::Value {
    reqwest::get(url)
        .await
        .expect("castgate answers")
        .json()
        .await
        .expect("JSON")
}

/// The recordings castgate lists.
async fn recordings(gw: &Castgate) -> Vec<serde_json::Value> {
    json(&format!("{}/api/recordings", gw.http)).await["recordings"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits (up to `limit`) until the one recording castgate lists satisfies
/// `check`; returns it.
async fn recording_when(
    gw: &Castgate,
    limit: Duration,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        let list = recordings(gw).await;
        if let Some(r) = list.iter().find(|r| check(r)) {
            return r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no recording came to the expected state; listed: {list:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Connects an H.264 + Opus publisher at `whip_url` and plays `clip` to
/// it in real time; the stream goes on until the publisher is deleted.
async fn play_clip(whip_url: &str, clip: (Vec<EncodedFrame>, Vec<EncodedFrame>)) -> Publisher {
    let p = Publisher::connect(whip_url, PeerOptions::new(Some(VideoCodec::H264), true))
        .await
        .expect("publisher connects");
    p.play(&clip.0, &clip.1).await.expect("frames sent");
    p
}

/// 2 s of the light H.264 test pattern and Opus.
async fn short_clip() -> (Vec<EncodedFrame>, Vec<EncodedFrame>) {
    tokio::task::spawn_blocking(|| (video_frames(VideoCodec::H264, 2), opus_packets(2)))
        .await
        .unwrap()
}

/// Publishes `seconds` of heavy H.264 (about 2.6 MB a second) and Opus on
/// `name`, then ends the stream.
async fn publish_heavy(gw: &Castgate, name: &str, seconds: u32) {
    let clip = tokio::task::spawn_blocking(move || {
        (h264_frames_heavy(seconds, 20_000), opus_packets(seconds))
    })
    .await
    .unwrap();
    let p = play_clip(&format!("{}/whip/{name}", gw.http), clip).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    p.delete().await.expect("publisher ends");
}

/// Downloads `path` of castgate with an optional Range header: status and body.
async fn download(gw: &Castgate, path: &str, range: Option<&str>) -> (u16, Vec<u8>) {
    let mut req = reqwest::Client::new().get(format!("{}{path}", gw.http));
    if let Some(r) = range {
        req = req.header("range", r);
    }
    let resp = req.send().await.expect("castgate answers");
    let status = resp.status().as_u16();
    (status, resp.bytes().await.unwrap().to_vec())
}

/// The stored object is the file, byte for byte: whole and in ranges.
async fn serves_the_object(gw: &Castgate, id: &str, object: &[u8]) {
    let path = format!("/recordings/{id}/download");
    let (status, whole) = download(gw, &path, None).await;
    assert_eq!(status, 200);
    assert!(
        whole == object,
        "the download differs from the stored object"
    );
    let (status, part) = download(gw, &path, Some("bytes=1000-1999")).await;
    assert_eq!(status, 206);
    assert_eq!(part, object[1000..2000]);
    let (status, tail) = download(gw, &path, Some("bytes=-777")).await;
    assert_eq!(status, 206);
    assert_eq!(tail, object[object.len() - 777..]);
    let (status, _) = download(gw, &path, Some(&format!("bytes={}-", object.len() + 10))).await;
    assert_eq!(status, 416, "a range past the end is refused");
    let (status, whole) = download(gw, &path, Some("bytes=0-1,5-6")).await;
    assert_eq!(status, 200, "several ranges: the whole file");
    assert_eq!(whole.len(), object.len());
    let head = reqwest::Client::new()
        .head(format!("{}{path}", gw.http))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status().as_u16(), 200);
    assert_eq!(
        head.headers()["content-length"].to_str().unwrap(),
        object.len().to_string()
    );
}

fn local_file(dir: &TempDir, rec: &serde_json::Value) -> std::path::PathBuf {
    dir.path()
        .join("recordings")
        .join(rec["stream"].as_str().unwrap())
        .join(rec["file"].as_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_recording_is_stored_checked_and_served_by_any_node() {
    let moto = Moto::start();
    moto.make_bucket().await;
    let dir_a = temp_dir("storage-a");
    let a = node(&moto, &dir_a, "", &[]).await;
    publish_heavy(&a, "cam", 6).await;

    let rec = recording_when(&a, Duration::from_secs(60), |r| r["storage"] == "stored").await;
    let id = rec["id"].as_str().unwrap().to_string();
    let key = format!("cam/{}", rec["file"].as_str().unwrap());
    let (object, metadata) = moto
        .object(&key)
        .await
        .expect("the object is in the bucket");
    assert!(
        object.len() >= 12 * 1024 * 1024,
        "the recording should be large enough to go in several parts: {} bytes",
        object.len()
    );
    let sha = sha256_hex(&object);
    assert_eq!(
        rec["sha256"].as_str(),
        Some(sha.as_str()),
        "catalog SHA-256 = the object's"
    );
    assert_eq!(
        metadata.get("sha256").map(String::as_str),
        Some(sha.as_str()),
        "the object carries the file's SHA-256"
    );
    assert_eq!(rec["size_bytes"].as_u64(), Some(object.len() as u64));
    let keys = moto.keys().await;
    assert!(
        keys.contains(&format!("{key}.json")),
        "the sidecar is beside it: {keys:?}"
    );
    assert!(
        moto.open_uploads().await.is_empty(),
        "no multipart upload left open"
    );
    assert!(
        !local_file(&dir_a, &rec).exists(),
        "the local copy is gone once stored"
    );
    serves_the_object(&a, &id, &object).await;

    // A second node with the same bucket and an empty disk.
    let dir_b = temp_dir("storage-b");
    let b = node(&moto, &dir_b, "", &[]).await;
    let on_b = recording_when(&b, Duration::from_secs(20), |r| r["id"] == id.as_str()).await;
    assert_eq!(on_b["storage"], "stored");
    assert_eq!(on_b["sha256"].as_str(), Some(sha.as_str()));
    serves_the_object(&b, &id, &object).await;

    // A node that sends downloads to the bucket: a presigned URL that
    // serves the same bytes, Range included.
    let dir_c = temp_dir("storage-c");
    let c = node(&moto, &dir_c, "delivery = \"redirect\"", &[]).await;
    recording_when(&c, Duration::from_secs(20), |r| r["id"] == id.as_str()).await;
    let no_follow = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_follow
        .get(format!("{}/recordings/{id}/download", c.http))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 307);
    let presigned = r.headers()["location"].to_str().unwrap().to_string();
    assert!(
        presigned.starts_with(&moto.endpoint()) && presigned.contains("X-Amz-Signature="),
        "a presigned URL of the bucket: {presigned}"
    );
    let got = no_follow.get(&presigned).send().await.unwrap();
    assert_eq!(got.status().as_u16(), 200);
    assert!(
        got.bytes().await.unwrap() == object,
        "the presigned URL serves the object"
    );
    let part = no_follow
        .get(&presigned)
        .header("range", "bytes=5000-5999")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status().as_u16(), 206);
    assert_eq!(part.bytes().await.unwrap(), object[5000..6000]);
    drop(c);

    // Deleted on B: gone from the bucket, and from A's list after its next look.
    let r = reqwest::Client::new()
        .delete(format!("{}/api/recordings/{id}", b.http))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert!(
        moto.keys().await.is_empty(),
        "file and sidecar deleted: {:?}",
        moto.keys().await
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !recordings(&a).await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "A still lists a deleted recording"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_through_a_storage_outage_completes() {
    let moto = Moto::start();
    moto.make_bucket().await;
    let dir = temp_dir("storage-outage");
    let gw = node(&moto, &dir, "", &[]).await;
    // The storage server stops answering before the file is finished.
    let publishing = publish_heavy(&gw, "cam", 5);
    let pause = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        moto.pause();
        Instant::now()
    };
    let ((), paused_at) = tokio::join!(publishing, pause);

    let failing = recording_when(&gw, Duration::from_secs(60), |r| {
        r["storage"] == "upload_retrying"
    })
    .await;
    assert!(
        failing["storage_error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "a retrying upload says why: {failing}"
    );
    assert!(
        local_file(&dir, &failing).exists(),
        "the local file is kept meanwhile"
    );
    // Down for a minute in all; then back.
    tokio::time::sleep_until((paused_at + Duration::from_secs(60)).into()).await;
    let metrics = reqwest::get(format!("{}/metrics", gw.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let failed = metric(&metrics, "castgate_storage_upload_failures_total");
    assert!(
        failed >= 3.0,
        "a minute of attempts, each failing: {failed}"
    );
    assert_eq!(metric(&metrics, "castgate_storage_uploads_pending"), 1.0);
    moto.resume();

    let rec = recording_when(&gw, Duration::from_secs(60), |r| r["storage"] == "stored").await;
    let key = format!("cam/{}", rec["file"].as_str().unwrap());
    let (object, _) = moto.object(&key).await.expect("stored after the outage");
    assert_eq!(rec["sha256"].as_str(), Some(sha256_hex(&object).as_str()));
    assert!(
        moto.open_uploads().await.is_empty(),
        "no multipart upload left open"
    );
    let metrics = reqwest::get(format!("{}/metrics", gw.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let failures = metric(&metrics, "castgate_storage_upload_failures_total");
    assert!(failures >= 1.0, "failed attempts are counted: {failures}");
    assert_eq!(metric(&metrics, "castgate_storage_uploads_pending"), 0.0);
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in the metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_in_the_middle_of_an_upload_resumes_it_after_restart() {
    let moto = Moto::start();
    moto.make_bucket().await;
    let dir = temp_dir("storage-crash");
    // The process dies (abort, as hard as kill -9) right after the first
    // part is uploaded and journaled.
    let mut gw = node(
        &moto,
        &dir,
        "part_mib = 5",
        &[("CASTGATE_FAILPOINT", "upload:part")],
    )
    .await;
    publish_heavy(&gw, "cam", 6).await;
    let status = wait_exit(
        &mut gw.child,
        Duration::from_secs(60),
        "the upload's first part",
    )
    .await;
    assert!(!status.success(), "the fail point ends the process");
    assert_eq!(
        moto.open_uploads().await.len(),
        1,
        "one multipart upload is open at the crash"
    );
    let journals = journal_files(&dir.path().join("recordings/cam"));
    assert_eq!(journals.len(), 1, "its journal is on disk");

    let gw = node(&moto, &dir, "part_mib = 5", &[]).await;
    let rec = recording_when(&gw, Duration::from_secs(60), |r| r["storage"] == "stored").await;
    let key = format!("cam/{}", rec["file"].as_str().unwrap());
    let (object, _) = moto.object(&key).await.expect("stored after the restart");
    assert_eq!(rec["sha256"].as_str(), Some(sha256_hex(&object).as_str()));
    assert!(
        moto.open_uploads().await.is_empty(),
        "the upload was resumed, none left open"
    );
    assert!(journal_files(&dir.path().join("recordings/cam")).is_empty());
    assert!(!local_file(&dir, &rec).exists());
}

fn journal_files(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with(".upload"))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_keep_the_file_and_say_why() {
    // Signatures are checked once the bucket is made (the one free request).
    let moto = Moto::start_with_auth(1);
    moto.make_bucket().await;
    let dir = temp_dir("storage-creds");
    let gw = node(&moto, &dir, "", &[]).await;
    let p = play_clip(&format!("{}/whip/cam", gw.http), short_clip().await).await;
    p.delete().await.unwrap();

    let rec = recording_when(&gw, Duration::from_secs(60), |r| {
        r["storage"] == "upload_retrying"
    })
    .await;
    let error = rec["storage_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        error.contains("403")
            || error.contains("InvalidAccessKeyId")
            || error.contains("Forbidden"),
        "the error names the refusal: {error}"
    );
    assert!(
        !error.contains("castgate-test-secret"),
        "the secret never shows: {error}"
    );
    assert!(local_file(&dir, &rec).exists(), "the local file is kept");
    let (status, body) = download(
        &gw,
        &format!("/recordings/{}/download", rec["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(status, 200, "still served from this disk");
    assert_eq!(body.len() as u64, rec["size_bytes"].as_u64().unwrap());
    let metrics = reqwest::get(format!("{}/metrics", gw.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metric(&metrics, "castgate_storage_upload_failures_total") >= 1.0);
    assert_eq!(metric(&metrics, "castgate_storage_uploads_pending"), 1.0);
    assert_eq!(
        metric(&metrics, "castgate_storage_recordings_stored_total"),
        0.0
    );
}

#[test]
fn check_config_never_shows_the_secret_access_key() {
    let out = std::process::Command::new(BIN)
        .args([
            "check-config",
            "--storage",
            "s3",
            "--storage-bucket",
            "recordings",
        ])
        .args(["--storage-endpoint", "http://127.0.0.1:9000"])
        .env("AWS_ACCESS_KEY_ID", "AKIDCASTGATE")
        .env("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI-castgate")
        .env_remove("CASTGATE_CONFIG")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("AKIDCASTGATE"), "the key id is shown: {text}");
    assert!(!text.contains("wJalrXUtnFEMI-castgate"), "{text}");
    let refused = std::process::Command::new(BIN)
        .args([
            "check-config",
            "--storage",
            "s3",
            "--storage-bucket",
            "recordings",
        ])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("CASTGATE_CONFIG")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("needs credentials"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_stored_recordings_and_never_one_not_stored_yet() {
    let moto = Moto::start();
    moto.make_bucket().await;
    let dir = temp_dir("storage-retention");
    // Recordings older than 6 s go, checked every second.
    let gw = node(
        &moto,
        &dir,
        "[record]\nretention_days = 0.00007\nretention_check_secs = 1",
        &[],
    )
    .await;
    let p = play_clip(&format!("{}/whip/cam", gw.http), short_clip().await).await;
    // The bucket is away when the file is finished: it cannot be stored.
    moto.pause();
    p.delete().await.unwrap();
    let waiting = recording_when(&gw, Duration::from_secs(30), |r| {
        r["storage"] == "upload_retrying"
    })
    .await;
    let file = local_file(&dir, &waiting);
    // Well past the retention age, the only copy is still there.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        file.exists(),
        "retention never deletes a recording that is not stored"
    );
    assert_eq!(recordings(&gw).await.len(), 1);

    moto.resume();
    // Stored, then deleted by retention: object and sidecar, and the list entry.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut was_stored = false;
    loop {
        let list = recordings(&gw).await;
        was_stored |= list.iter().any(|r| r["storage"] == "stored");
        if list.is_empty() && moto.keys().await.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "retention did not delete the stored recording: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!file.exists());
    let metrics = reqwest::get(format!("{}/metrics", gw.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric(&metrics, "castgate_storage_recordings_stored_total"),
        1.0,
        "it was stored before retention took it (seen listed as stored: {was_stored})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_another_recording_holds_in_the_bucket_is_never_overwritten() {
    let moto = Moto::start();
    moto.make_bucket().await;
    let dir_a = temp_dir("storage-name-a");
    let a = node(&moto, &dir_a, "", &[]).await;
    let p = play_clip(&format!("{}/whip/cam", a.http), short_clip().await).await;
    p.delete().await.unwrap();
    let first = recording_when(&a, Duration::from_secs(30), |r| r["storage"] == "stored").await;
    let key = format!("cam/{}", first["file"].as_str().unwrap());
    let (object, _) = moto.object(&key).await.unwrap();
    drop(a);

    // Another node finished a different recording under the same name (the
    // same stream, started within the same second there).
    let dir_b = temp_dir("storage-name-b");
    let cam = dir_b.path().join("recordings/cam");
    std::fs::create_dir_all(&cam).unwrap();
    let mut other = object.clone();
    let last = other.len() - 1;
    other[last] ^= 0xff;
    std::fs::write(cam.join(first["file"].as_str().unwrap()), &other).unwrap();
    let mut meta = first.clone();
    meta["storage"] = "local".into();
    meta["sha256"] = serde_json::Value::Null;
    let stem = first["file"].as_str().unwrap().trim_end_matches(".mkv");
    std::fs::write(cam.join(format!("{stem}.json")), meta.to_string()).unwrap();
    let b = node(&moto, &dir_b, "", &[]).await;

    let moved = recording_when(&b, Duration::from_secs(30), |r| {
        r["storage"] == "stored" && r["id"] != first["id"]
    })
    .await;
    assert_eq!(
        moved["file"].as_str(),
        Some(format!("{stem}-1.mkv").as_str())
    );
    let (kept, _) = moto.object(&key).await.unwrap();
    assert!(kept == object, "the first recording's object is untouched");
    let (second, _) = moto.object(&format!("cam/{stem}-1.mkv")).await.unwrap();
    assert!(second == other, "the second went up under the free name");
    assert_eq!(moved["sha256"].as_str(), Some(sha256_hex(&other).as_str()));
    // B lists both: its own, and the first from the bucket.
    recording_when(&b, Duration::from_secs(20), |r| r["id"] == first["id"]).await;
}

/// In a cluster sharing the bucket, one node runs retention there; a node
/// keeping local copies (`keep_local`) still has its own disk kept in check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_one_node_keeps_the_bucket_and_each_its_own_copies() {
    use common::cluster::{Redis, node as cluster_node};
    let moto = Moto::start();
    moto.make_bucket().await;
    let redis = Redis::start();
    let conf = temp_dir("storage-cluster-conf");
    let config = conf.path().join("castgate.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\nkind = \"s3\"\nendpoint = \"{}\"\nbucket = \"{BUCKET}\"\n\
             access_key_id = \"castgate-test\"\nsecret_access_key = \"castgate-test-secret\"\n\
             keep_local = true\nrefresh_secs = 1\ntimeout_secs = 3\n\
             [record]\nretention_days = 0.0001\nretention_check_secs = 1\n",
            moto.endpoint()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    // A starts first: it takes the lease and runs retention in the bucket.
    let a = cluster_node(BIN, &redis, "a", &["--config", config]).await;
    let b = cluster_node(BIN, &redis, "b", &["--config", config]).await;
    let p = play_clip(&b.url("/whip/cam"), short_clip().await).await;
    p.delete().await.unwrap();
    // B recorded it, stored it and kept its copy; then, past the age (8.6 s),
    // the bucket's copy goes (A) and B's own copy too (B).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut kept: Option<std::path::PathBuf> = None;
    loop {
        let list = b.get("/api/recordings").await["recordings"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if let Some(r) = list.iter().find(|r| r["storage"] == "stored") {
            let file = b.dir.path().join("cam").join(r["file"].as_str().unwrap());
            if kept.is_none() {
                assert!(file.exists(), "B keeps its local copy once stored");
            }
            kept.get_or_insert(file);
        }
        let gone = kept.as_ref().is_some_and(|f| !f.exists());
        if gone && list.is_empty() && moto.keys().await.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "retention did not clear the bucket and B's copy: {list:?}, {:?}",
            moto.keys().await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(a);
}
