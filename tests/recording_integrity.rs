//! A recording stays right when things go wrong around it: a disk too full
//! for the next file (the finished one stays finalized, recording resumes
//! when room returns), and a crash at every step of a file's finalization
//! (fail points), after which a restart lists the file correctly.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use castgate::events::Event;
use castgate::record::catalog::State;
use common::files::{TempDir, decodes_cleanly, packets, recordings_in, temp_dir};
use common::gateway::{self, publisher, recordings_idle};
use common::media::{opus_packets, video_frames};
use common::peer::VideoCodec;
use common::process::{serve_recordings, wait_exit};

/// A small tmpfs, mounted in a mount namespace of its own (CI runs as root),
/// so the host's mounts are never touched and nothing stays mounted if the
/// test dies: the namespace lives as long as a shell that waits on a pipe
/// from this process. The test reaches it through that shell's
/// `/proc/PID/root`.
struct Tmpfs {
    shell: std::process::Child,
    path: PathBuf,
}

impl Tmpfs {
    fn mount(over: &Path, size: &str) -> Tmpfs {
        use std::io::BufRead;
        let mut shell = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount -t tmpfs -o "size=$1" tmpfs "$0" && echo mounted && read _"#)
            .arg(over)
            .arg(size)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("unshare (util-linux)");
        let mut line = String::new();
        let stdout = shell.stdout.take().unwrap();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        assert_eq!(
            line.trim(),
            "mounted",
            "mounting a tmpfs in a mount namespace needs root (CI runs as root)"
        );
        let path = PathBuf::from(format!("/proc/{}/root", shell.id()))
            .join(over.strip_prefix("/").unwrap_or(over));
        Tmpfs { shell, path }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // End of input: the shell exits and its namespace (and mount) goes.
        drop(self.shell.stdin.take());
        let _ = self.shell.wait();
    }
}

fn sha256(path: &Path) -> String {
    castgate::record::recording::sha256_file(path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_at_rotation_keeps_the_finished_file_and_recording_resumes() {
    let host_dir = temp_dir("lowdisk");
    let tmpfs = Tmpfs::mount(&host_dir, "8m");
    let dir = tmpfs.path.clone();
    assert_ne!(
        castgate::record::free_bytes(&dir).unwrap(),
        castgate::record::free_bytes(&host_dir).unwrap(),
        "the tmpfs is seen only through the namespace"
    );
    const MIN_FREE_MIB: u64 = 4;
    // Room for about one second of video above the minimum: the first file
    // opens, the next one (after a 1 s rotation) cannot.
    let free = castgate::record::free_bytes(&dir).unwrap();
    let filler = dir.join("filler");
    let keep = MIN_FREE_MIB * 1024 * 1024 + 32 * 1024;
    std::fs::write(&filler, vec![0u8; (free - keep) as usize]).unwrap();
    let d = dir.to_path_buf();
    let server = gateway::start(move |c| {
        c.record.enabled = true;
        c.record.dir = d;
        c.record.min_free_mib = MIN_FREE_MIB;
        c.record.max_file_secs = 1.0;
    })
    .await;
    let mut events = server.events().subscribe();
    let publisher = publisher(&server, "low", Some(VideoCodec::Vp8), true).await;
    let video = video_frames(VideoCodec::Vp8, 8);
    let audio = opus_packets(8);
    let watch = async {
        let deadline = Instant::now() + Duration::from_secs(8);
        let mut interrupted = None;
        while Instant::now() < deadline {
            let Ok(Ok(env)) = tokio::time::timeout(Duration::from_secs(1), events.recv()).await
            else {
                continue;
            };
            match &env.event {
                Event::RecordingInterrupted { stream, reason } if stream == "low" => {
                    interrupted = Some(reason.clone());
                    // What retention would do: room comes back.
                    std::fs::remove_file(&filler).unwrap();
                }
                Event::RecordingStarted { stream, id, .. }
                    if stream == "low" && interrupted.is_some() =>
                {
                    return (interrupted, Some(id.clone()));
                }
                _ => {}
            }
        }
        (interrupted, None)
    };
    let (played, (interrupted, resumed)) = tokio::join!(publisher.play(&video, &audio), watch);
    played.unwrap();
    let reason = interrupted.expect("a recording_interrupted event");
    assert!(reason.contains("record.min_free_mib"), "{reason}");
    let resumed = resumed.expect("recording resumed once there was room");
    publisher.delete().await.unwrap();
    recordings_idle(&server).await;

    let list = server.recorder().list();
    assert!(list.len() >= 2, "{list:#?}");
    // Oldest first: the file finished before the disk filled stays finalized.
    let mut oldest_first = list.clone();
    oldest_first.reverse();
    assert_eq!(oldest_first[0].state, State::Finalized, "{list:#?}");
    assert!(list.iter().any(|m| m.id == resumed));
    let mut hashes = Vec::new();
    for m in &list {
        assert_eq!(m.state, State::Finalized, "{m:#?}");
        let file = dir.join("low").join(&m.file);
        assert!(packets(&file, "v") > 0, "{}", file.display());
        // Each file's own hash (none carried over from the previous file).
        assert_eq!(
            m.sha256.as_deref(),
            Some(sha256(&file).as_str()),
            "{}",
            m.id
        );
        assert_eq!(m.dropped_frames, 0);
        hashes.push(m.sha256.clone());
    }
    hashes.dedup();
    assert_eq!(hashes.len(), list.len(), "distinct files, distinct hashes");
    let metrics = gateway::scrape(&server).await;
    assert_eq!(
        gateway::value(&metrics, "castgate_recordings_interrupted_total"),
        Some(1.0)
    );
    assert_eq!(
        gateway::value(&metrics, "castgate_recordings_failed_total"),
        Some(0.0)
    );
    server.shutdown().await;
}

/// Publishes 3 s to a castgate whose finalization crashes at `step`, then
/// restarts it: the recording's listing after the restart, its file, and
/// the folder (removed when dropped).
async fn crash_while_finalizing(step: &str) -> (serde_json::Value, PathBuf, TempDir) {
    let dir = temp_dir("failpoint");
    let mut gw = serve_recordings(
        env!("CARGO_BIN_EXE_castgate"),
        &dir,
        &[("CASTGATE_FAILPOINT", step)],
    )
    .await;
    let video = video_frames(VideoCodec::Vp8, 3);
    let audio = opus_packets(3);
    let publisher = gw.publisher("fp").await;
    publisher.play(&video, &audio).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The end of the stream finalizes the file; the fail point aborts.
    let _ = publisher.delete().await;
    let status = wait_exit(&mut gw.child, Duration::from_secs(20), step).await;
    assert!(
        !status.success(),
        "{step}: the fail point did not fire ({status})"
    );

    let mut gw = serve_recordings(env!("CARGO_BIN_EXE_castgate"), &dir, &[]).await;
    let list: serde_json::Value = reqwest::get(format!("{}/api/recordings", gw.http))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    gw.child.kill().unwrap();
    gw.child.wait().unwrap();
    let files = recordings_in(&dir);
    assert_eq!(files.len(), 1, "{step}: {files:?}");
    (list, files[0].clone(), dir)
}

async fn finalization_crash_leaves_a_listed_playable_file(step: &str, state: &str) {
    let (list, file, _dir) = crash_while_finalizing(step).await;
    assert_eq!(list["total"], 1, "{step}: {list}");
    let rec = &list["recordings"][0];
    assert_eq!(rec["state"], state, "{step}: {list}");
    assert!(
        file.to_string_lossy().ends_with(".webm"),
        "{step}: a final name, not a .part: {}",
        file.display()
    );
    assert_eq!(
        rec["size_bytes"],
        std::fs::metadata(&file).unwrap().len(),
        "{step}"
    );
    if state == "finalized" {
        assert_eq!(rec["sha256"], sha256(&file), "{step}");
    }
    assert!(packets(&file, "v") > 60, "{step}: the frames are there");
    decodes_cleanly(&file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_trailer_leaves_a_repaired_file() {
    finalization_crash_leaves_a_listed_playable_file("finalize:after_trailer", "repaired").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_fsync_leaves_a_repaired_file() {
    finalization_crash_leaves_a_listed_playable_file("finalize:after_fsync", "repaired").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_hashing_leaves_a_repaired_file() {
    finalization_crash_leaves_a_listed_playable_file("finalize:after_hash", "repaired").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_sidecar_is_committed_at_restart_as_finalized() {
    finalization_crash_leaves_a_listed_playable_file("finalize:after_sidecar", "finalized").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_rename_leaves_a_finalized_file() {
    finalization_crash_leaves_a_listed_playable_file("finalize:after_rename", "finalized").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_is_read_once_at_start_and_kept_by_the_recorder() {
    let dir = temp_dir("index");
    let d = dir.to_path_buf();
    let start = move || {
        let d = d.clone();
        gateway::start(move |c| {
            c.record.enabled = true;
            c.record.dir = d;
        })
    };
    let server = start().await;
    let publisher = publisher(&server, "ix", Some(VideoCodec::Vp8), false).await;
    publisher
        .play(&video_frames(VideoCodec::Vp8, 2), &[])
        .await
        .unwrap();
    publisher.delete().await.unwrap();
    recordings_idle(&server).await;
    let listed = server.recorder().list();
    assert_eq!(listed.len(), 1, "{listed:#?}");
    let m = &listed[0];
    // A recording put in the folder behind castgate's back …
    let folder = dir.join("ix");
    let copy_stem = "2020-01-01T00-00-00Z";
    std::fs::copy(
        folder.join(&m.file),
        folder.join(format!("{copy_stem}.webm")),
    )
    .unwrap();
    let mut copy = m.clone();
    copy.id = format!("ix~{copy_stem}");
    copy.file = format!("{copy_stem}.webm");
    copy.started_at = "2020-01-01T00:00:00Z".into();
    std::fs::write(
        folder.join(format!("{copy_stem}.json")),
        serde_json::to_vec(&copy).unwrap(),
    )
    .unwrap();
    // … is not seen: requests read the catalog in memory, not the folder.
    assert_eq!(server.recorder().list().len(), 1);
    assert!(server.recorder().get(&copy.id).is_none());
    // Deleting keeps the catalog current.
    assert!(server.recorder().delete(&m.id).unwrap());
    assert!(server.recorder().list().is_empty());
    assert!(server.recorder().get(&m.id).is_none());
    server.shutdown().await;
    // The next start reads the folder: the copy is there.
    let server = start().await;
    let listed = server.recorder().list();
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert_eq!(listed[0].id, copy.id);
    assert!(server.recorder().get(&copy.id).is_some());
    server.shutdown().await;
}
