//! Recordings that open anywhere: `GET /recordings/{id}/download?format=mp4`
//! copies an H.264 recording into MP4 with its index first, Opus kept or
//! re-encoded to AAC, checked with ffprobe and a decode; the copy is made
//! once for many concurrent downloads, served with Range, and deleted with
//! the recording.

use crate::common;

use std::path::Path;

use common::files::{decodes_cleanly, duration, packets, probe, recordings_in, temp_dir};
use common::gateway::{self, publisher, recordings_idle, scrape, url, value, wait_received};
use common::media::{opus_packets, video_frames};
use common::peer::VideoCodec;

/// The top-level boxes of an MP4 file, in order (type, size).
pub(crate) fn top_level_boxes(file: &Path) -> Vec<(String, u64)> {
    let data = std::fs::read(file).unwrap();
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + 8 <= data.len() {
        let mut size = u64::from(u32::from_be_bytes(data[at..at + 4].try_into().unwrap()));
        let kind = String::from_utf8_lossy(&data[at + 4..at + 8]).to_string();
        if size == 1 && at + 16 <= data.len() {
            size = u64::from_be_bytes(data[at + 8..at + 16].try_into().unwrap());
        } else if size == 0 {
            size = (data.len() - at) as u64;
        }
        out.push((kind, size));
        if size < 8 {
            break;
        }
        at += size as usize;
    }
    out
}

/// Asserts `file` is an MP4 whose `moov` comes before its `mdat`.
pub(crate) fn assert_faststart(file: &Path) {
    let format = probe(file, "format=format_name");
    assert!(format.contains("mov,mp4"), "{format}");
    let kinds: Vec<String> = top_level_boxes(file).into_iter().map(|b| b.0).collect();
    let moov = kinds.iter().position(|k| k == "moov");
    let mdat = kinds.iter().position(|k| k == "mdat");
    assert!(
        moov.is_some() && mdat.is_some() && moov < mdat,
        "moov before mdat: {kinds:?}"
    );
}

/// The id of the newest recording of `stream`, from the catalog API.
async fn latest_recording(server: &castgate::server::Server, stream: &str) -> String {
    let list: serde_json::Value =
        reqwest::get(url(server, &format!("/api/recordings?stream={stream}")))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    list["recordings"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no recording of {stream}: {list}"))
        .to_string()
}

/// The duration of one stream kind ("v" or "a"), as ffprobe reads it.
fn stream_duration(file: &Path, kind: &str) -> f64 {
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", kind])
        .args(["-show_entries", "stream=duration", "-of", "csv=p=0"])
        .arg(file)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h264_recording_downloads_as_faststart_mp4_with_opus_or_aac() {
    let dir = temp_dir("mp4");
    let server = crate::recording::start(&dir).await;
    let video = video_frames(VideoCodec::H264, 6);
    let audio = opus_packets(6);
    let publisher = publisher(&server, "rec", Some(VideoCodec::H264), true).await;
    let (v, a) = (video.clone(), audio.clone());
    let playing = tokio::spawn(async move { publisher.play(&v, &a).await.map(|()| publisher) });
    // While it records: the MP4 is refused with a reason.
    assert!(
        gateway::eventually(std::time::Duration::from_secs(10), || recordings_in(&dir)
            .len()
            == 1)
        .await
    );
    let client = reqwest::Client::new();
    let id = latest_recording(&server, "rec").await;
    let mp4_url = url(&server, &format!("/recordings/{id}/download?format=mp4"));
    let r = client.get(&mp4_url).send().await.unwrap();
    assert_eq!(r.status(), 409);
    assert!(r.text().await.unwrap().contains("still being written"));

    let publisher = playing.await.unwrap().unwrap();
    wait_received(&server, "rec", video.len() + audio.len()).await;
    publisher.delete().await.unwrap();
    recordings_idle(&server).await;
    let source = recordings_in(&dir).remove(0);
    assert!(source.to_string_lossy().ends_with(".mkv"));

    // Ten downloads at once: one copy made, ten identical bodies.
    let before = value(&scrape(&server).await, "castgate_recording_mp4_made_total").unwrap_or(0.0);
    let bodies = gateway::get_at_once(&mp4_url, 10, "video/mp4", "content-disposition").await;
    let after = value(&scrape(&server).await, "castgate_recording_mp4_made_total").unwrap_or(0.0);
    assert_eq!(after - before, 1.0, "one MP4 made for ten downloads");
    let stem = id.split_once('~').unwrap().1;
    assert_eq!(
        bodies[0].0,
        format!("attachment; filename=\"rec-{stem}.mp4\"")
    );
    assert!(bodies.iter().all(|b| b.1 == bodies[0].1));
    let out = dir.join("got.mp4");
    std::fs::write(&out, &bodies[0].1).unwrap();

    assert_faststart(&out);
    let streams = probe(&out, "stream=codec_name,width,height");
    assert!(
        streams.contains("codec_name=h264") && streams.contains("codec_name=opus"),
        "{streams}"
    );
    assert_eq!(
        packets(&out, "v"),
        packets(&source, "v"),
        "every video frame"
    );
    assert_eq!(packets(&out, "v"), video.len());
    assert_eq!(
        packets(&out, "a"),
        packets(&source, "a"),
        "every audio packet"
    );
    let (d_src, d_out) = (duration(&source), duration(&out));
    assert!(
        (d_src - d_out).abs() <= 1.0 / 30.0 + 0.05,
        "duration {d_out} vs source {d_src}"
    );
    decodes_cleanly(&out);

    // Range on the kept copy.
    let part = client
        .get(&mp4_url)
        .header("range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().await.unwrap(), bodies[0].1.slice(100..200));

    // AAC for the players that need it.
    let r = client
        .get(format!("{mp4_url}&audio=aac"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let aac = dir.join("got-aac.mp4");
    std::fs::write(&aac, r.bytes().await.unwrap()).unwrap();
    assert_faststart(&aac);
    let streams = probe(&aac, "stream=codec_name");
    assert!(
        streams.contains("codec_name=h264") && streams.contains("codec_name=aac"),
        "{streams}"
    );
    assert_eq!(packets(&aac, "v"), video.len());
    let (a_src, a_out) = (stream_duration(&out, "a"), stream_duration(&aac, "a"));
    assert!(
        (a_src - a_out).abs() <= 0.05,
        "AAC lasts {a_out} s, Opus {a_src} s"
    );
    decodes_cleanly(&aac);

    for (query, status) in [
        ("format=avi", 400),
        ("format=mp4&audio=mp3", 400),
        ("audio=aac", 400),
    ] {
        let r = client
            .get(url(&server, &format!("/recordings/{id}/download?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{query}");
    }
    let folder = source.parent().unwrap().to_path_buf();
    let derived = |f: &Path| {
        std::fs::read_dir(f)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".remux"))
            .count()
    };
    assert_eq!(derived(&folder), 2, "both copies kept beside the recording");
    let r = client
        .delete(url(&server, &format!("/api/recordings/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(derived(&folder), 0, "deleted with the recording");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vp8_recording_is_not_remuxed_but_pointed_to_an_export() {
    let dir = temp_dir("mp4-vp8");
    let server = crate::recording::start(&dir).await;
    let video = video_frames(VideoCodec::Vp8, 2);
    let publisher = publisher(&server, "v8", Some(VideoCodec::Vp8), false).await;
    publisher.play(&video, &[]).await.unwrap();
    wait_received(&server, "v8", video.len()).await;
    publisher.delete().await.unwrap();
    recordings_idle(&server).await;
    let id = latest_recording(&server, "v8").await;
    let r = reqwest::get(url(
        &server,
        &format!("/recordings/{id}/download?format=mp4"),
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 409);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("vp8") && text.contains(&format!("/api/recordings/{id}/exports")),
        "{text}"
    );
    assert!(
        !std::fs::read_dir(recordings_in(&dir)[0].parent().unwrap())
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().contains(".mp4")),
        "nothing left behind"
    );
    server.shutdown().await;
}

/// The exports of a recording, as the API lists them.
async fn exports_of(server: &castgate::server::Server, id: &str) -> Vec<serde_json::Value> {
    let v: serde_json::Value = reqwest::get(url(server, &format!("/api/recordings/{id}/exports")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v.as_array().unwrap().clone()
}

/// The export of `audio` in a listing.
fn export_for<'a>(list: &'a [serde_json::Value], audio: &str) -> Option<&'a serde_json::Value> {
    list.iter().find(|e| e["audio"] == audio)
}

/// Files in `folder` whose names contain `part`.
fn files_with(folder: &Path, part: &str) -> Vec<String> {
    std::fs::read_dir(folder)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.contains(part))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vp8_recording_exports_to_h264_mp4_with_progress_and_cancels_cleanly() {
    let dir = temp_dir("export");
    let server = crate::recording::start_with(&dir, |c| c.record.export_max_concurrent = 1).await;
    // 720p, so that encoding takes long enough to watch and to cancel.
    let video = common::media::video_frames_sized(VideoCodec::Vp8, 8, "1280x720");
    let audio = opus_packets(8);
    let publisher = publisher(&server, "ex", Some(VideoCodec::Vp8), true).await;
    publisher.play(&video, &audio).await.unwrap();
    wait_received(&server, "ex", video.len() + audio.len()).await;
    publisher.delete().await.unwrap();
    recordings_idle(&server).await;
    let source = recordings_in(&dir).remove(0);
    let folder = source.parent().unwrap().to_path_buf();
    let id = latest_recording(&server, "ex").await;
    let client = reqwest::Client::new();
    let exports = url(&server, &format!("/api/recordings/{id}/exports"));
    let mut events = server.events().subscribe();
    let mut next_export = async || loop {
        let env = tokio::time::timeout(std::time::Duration::from_secs(60), events.recv())
            .await
            .expect("an export_finished event")
            .unwrap();
        if let castgate::events::Event::ExportFinished {
            audio, state, id, ..
        } = &env.event
        {
            break (audio.clone(), state.clone(), id.clone());
        }
    };

    // Two at once with one encoder: the second waits; cancelling it (queued)
    // and then the first (running) leaves nothing.
    let r = client
        .post(format!("{exports}?audio=opus"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = client
        .post(format!("{exports}?audio=aac"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let queued: serde_json::Value = r.json().await.unwrap();
    assert_eq!(queued["state"], "queued", "{queued}");
    let r = client
        .delete(format!("{exports}/aac"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let mut seen_running = false;
    for _ in 0..100 {
        let list = exports_of(&server, &id).await;
        let e = export_for(&list, "opus").unwrap().clone();
        if e["state"] == "running" && e["percent"].as_f64().unwrap() > 0.0 {
            seen_running = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(seen_running, "the export was seen running");
    let r = client
        .delete(format!("{exports}/opus"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let states: Vec<(String, String)> = [next_export().await, next_export().await]
        .into_iter()
        .map(|(audio, state, _)| (audio, state))
        .collect();
    assert!(
        states.contains(&("aac".into(), "cancelled".into())),
        "{states:?}"
    );
    assert!(
        states.contains(&("opus".into(), "cancelled".into())),
        "{states:?}"
    );
    assert!(
        files_with(&folder, ".export").is_empty(),
        "a cancelled export leaves no file: {:?}",
        files_with(&folder, ".export")
    );
    let list = exports_of(&server, &id).await;
    assert_eq!(export_for(&list, "opus").unwrap()["state"], "cancelled");

    // A whole export: progress from 0 to 100, never back.
    let r = client.post(&exports).send().await.unwrap();
    assert_eq!(r.status(), 202, "a new export after a cancel");
    let mut last = 0.0;
    let mut percents = Vec::new();
    let done = loop {
        let list = exports_of(&server, &id).await;
        let e = export_for(&list, "aac").unwrap().clone();
        let p = e["percent"].as_f64().unwrap();
        assert!(p >= last, "progress went back: {last} → {p}");
        last = p;
        percents.push(p);
        match e["state"].as_str().unwrap() {
            "done" => break e,
            "queued" | "running" => {}
            other => panic!("export {other}: {e}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(done["percent"], 100.0);
    assert!(
        percents.iter().any(|p| *p > 0.0 && *p < 100.0),
        "progress in between: {percents:?}"
    );
    let (audio, state, event_id) = next_export().await;
    assert_eq!(
        (audio.as_str(), state.as_str(), event_id.as_str()),
        ("aac", "done", id.as_str())
    );
    let download = done["download"].as_str().unwrap();
    assert_eq!(
        download,
        format!("/recordings/{id}/download?format=mp4&audio=aac")
    );
    let r = client.get(url(&server, download)).send().await.unwrap();
    assert_eq!(
        r.status(),
        200,
        "{:?} {:?}",
        files_with(&folder, ""),
        r.text().await
    );
    assert_eq!(r.headers()["content-type"], "video/mp4");
    let out = dir.join("export.mp4");
    std::fs::write(&out, r.bytes().await.unwrap()).unwrap();
    assert_faststart(&out);
    let streams = probe(&out, "stream=codec_name,width,height");
    assert!(
        streams.contains("codec_name=h264") && streams.contains("codec_name=aac"),
        "{streams}"
    );
    assert!(
        streams.contains("width=1280") && streams.contains("height=720"),
        "{streams}"
    );
    assert_eq!(
        packets(&out, "v"),
        packets(&source, "v"),
        "one picture per source frame"
    );
    let (d_src, d_out) = (
        stream_duration(&source, "v").max(duration(&source) - 0.1),
        stream_duration(&out, "v"),
    );
    assert!(
        (d_src - d_out).abs() <= 1.0 / 30.0 + 0.05,
        "video lasts {d_out} s, source {d_src} s"
    );
    decodes_cleanly(&out);
    // Asked again: the same export, done.
    let r = client.post(&exports).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let again: serde_json::Value = r.json().await.unwrap();
    assert_eq!(again["state"], "done");
    // An H.264 recording needs none; bad values are refused.
    let r = client
        .post(format!("{exports}?audio=flac"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = client
        .post(url(
            &server,
            "/api/recordings/ex~2026-01-01T00-00-00Z/exports",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_mp4_recording_survives_sigkill_and_is_repaired_on_restart() {
    use common::process::serve_with;
    let dir = temp_dir("fmp4");
    let config = dir.join("castgate.toml");
    std::fs::write(&config, "[record]\nh264_container = \"mp4\"\n").unwrap();
    let args = ["--config", config.to_str().unwrap()];
    let bin = env!("CARGO_BIN_EXE_castgate");
    let mut gw = serve_with(bin, &dir.join("rec"), &args, &[]).await;
    let video = video_frames(VideoCodec::H264, 8);
    let audio = opus_packets(8);
    let publisher = common::peer::Publisher::connect(
        &format!("{}/whip/crash", gw.http),
        common::peer::PeerOptions::new(Some(VideoCodec::H264), true),
    )
    .await
    .unwrap();
    // Send 6 s, then kill the gateway without warning.
    let n = 180;
    publisher.play(&video[..n], &audio[..300]).await.unwrap();
    gw.child.kill().unwrap(); // SIGKILL
    gw.child.wait().unwrap();
    publisher.vanish().await;

    let files = recordings_in(&dir.join("rec"));
    assert_eq!(files.len(), 1, "{files:?}");
    let part = files[0].clone();
    assert!(
        part.to_string_lossy().ends_with(".mp4.part"),
        "{}",
        part.display()
    );
    // What the crash left is an MP4 whose complete fragments play.
    let format = probe(&part, "format=format_name");
    assert!(format.contains("mov,mp4"), "{format}");
    let kinds: Vec<String> = top_level_boxes(&part).into_iter().map(|b| b.0).collect();
    assert_eq!(&kinds[..2], ["ftyp", "moov"], "{kinds:?}");
    assert!(
        kinds.iter().filter(|k| *k == "moof").count() >= 5,
        "fragments: {kinds:?}"
    );

    let mut gw = serve_with(bin, &dir.join("rec"), &args, &[]).await;
    let files = recordings_in(&dir.join("rec"));
    assert_eq!(files.len(), 1, "{files:?}");
    let fixed = files[0].clone();
    assert!(
        fixed.to_string_lossy().ends_with(".mp4"),
        "{}",
        fixed.display()
    );
    let kept = packets(&fixed, "v");
    println!(
        "figure: mp4_frames_kept_after_sigkill={kept} of {n} ({:.2} s lost)",
        (n - kept) as f64 / 30.0
    );
    assert!(
        n - kept <= 30,
        "at most ~1 s lost: {kept} of {n} frames kept"
    );
    assert!(duration(&fixed) >= 5.0, "duration {}", duration(&fixed));
    decodes_cleanly(&fixed);
    let list: serde_json::Value = reqwest::get(format!("{}/api/recordings", gw.http))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["recordings"][0]["state"], "repaired", "{list}");
    let id = list["recordings"][0]["id"].as_str().unwrap().to_string();
    // Its MP4 download is the file itself.
    let r = reqwest::get(format!("{}/recordings/{id}/download?format=mp4", gw.http))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "video/mp4");
    assert_eq!(
        r.bytes().await.unwrap().len() as u64,
        std::fs::metadata(&fixed).unwrap().len()
    );
    gw.child.kill().unwrap();
    gw.child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_mp4_recording_finalizes_into_an_mp4_that_decodes() {
    let dir = temp_dir("fmp4-clean");
    let server = crate::recording::start_with(&dir, |c| {
        c.record.h264_container = castgate::config::H264Container::Mp4
    })
    .await;
    let video = video_frames(VideoCodec::H264, 4);
    let audio = opus_packets(4);
    let p = publisher(&server, "clean", Some(VideoCodec::H264), true).await;
    p.play(&video, &audio).await.unwrap();
    wait_received(&server, "clean", video.len() + audio.len()).await;
    p.delete().await.unwrap();
    recordings_idle(&server).await;
    let file = recordings_in(&dir).remove(0);
    assert!(
        file.to_string_lossy().ends_with(".mp4"),
        "{}",
        file.display()
    );
    assert!(probe(&file, "format=format_name").contains("mov,mp4"));
    assert_eq!(packets(&file, "v"), video.len(), "every video frame");
    let a = packets(&file, "a");
    assert!(
        a + 2 >= audio.len() && a <= audio.len(),
        "audio {a} of {}",
        audio.len()
    );
    assert!(
        (duration(&file) - 4.0).abs() <= 0.5,
        "duration {}",
        duration(&file)
    );
    decodes_cleanly(&file);
    server.shutdown().await;
}
