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
    let server = gateway::start({
        let dir = dir.to_path_buf();
        move |c| {
            c.record.enabled = true;
            c.record.dir = dir;
        }
    })
    .await;
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
    let list: serde_json::Value = client
        .get(url(&server, "/api/recordings?stream=rec"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = list["recordings"][0]["id"].as_str().unwrap().to_string();
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
    let mut downloads = Vec::new();
    for _ in 0..10 {
        let (client, u) = (client.clone(), mp4_url.clone());
        downloads.push(tokio::spawn(async move {
            let r = client.get(&u).send().await.unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()["content-type"], "video/mp4");
            let disposition = r.headers()["content-disposition"]
                .to_str()
                .unwrap()
                .to_string();
            (disposition, r.bytes().await.unwrap())
        }));
    }
    let mut bodies = Vec::new();
    for d in downloads {
        bodies.push(d.await.unwrap());
    }
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
    let server = gateway::start({
        let dir = dir.to_path_buf();
        move |c| {
            c.record.enabled = true;
            c.record.dir = dir;
        }
    })
    .await;
    let video = video_frames(VideoCodec::Vp8, 2);
    let publisher = publisher(&server, "v8", Some(VideoCodec::Vp8), false).await;
    publisher.play(&video, &[]).await.unwrap();
    wait_received(&server, "v8", video.len()).await;
    publisher.delete().await.unwrap();
    recordings_idle(&server).await;
    let list: serde_json::Value = reqwest::get(url(&server, "/api/recordings?stream=v8"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = list["recordings"][0]["id"].as_str().unwrap().to_string();
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
