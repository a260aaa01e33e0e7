//! Pictures of live streams: `GET /api/streams/{name}/snapshot.jpg` is a
//! JPEG of the stream's latest picture (its colours checked where the
//! publisher drew them), scaled to the configured size, `503` before the
//! first keyframe, and one decode for fifty requests at once.

use crate::common;

use std::process::Command;

use common::gateway::{self, publisher, scrape, url, value, wait_received};
use common::media::{colour_halves, opus_packets};
use common::peer::VideoCodec;

/// A JPEG decoded by FFmpeg: (width, height, RGB bytes).
fn decode_jpeg(jpeg: &[u8]) -> (usize, usize, Vec<u8>) {
    let dir = common::files::temp_dir("snapshot");
    let file = dir.join("snap.jpg");
    std::fs::write(&file, jpeg).unwrap();
    let size = common::files::probe(&file, "stream=width,height");
    let get = |k: &str| -> usize {
        size.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {k} in {size}"))
    };
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&file)
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (get("width"), get("height"), out.stdout)
}

/// The average colour of a rectangle (x0..x1, y0..y1) of an RGB picture.
fn average(
    pic: &(usize, usize, Vec<u8>),
    x: std::ops::Range<usize>,
    y: std::ops::Range<usize>,
) -> [f64; 3] {
    let (w, _, rgb) = pic;
    let mut sum = [0.0; 3];
    let mut n = 0.0;
    for row in y {
        for col in x.clone() {
            let i = (row * w + col) * 3;
            for c in 0..3 {
                sum[c] += f64::from(rgb[i + c]);
            }
            n += 1.0;
        }
    }
    sum.map(|s| s / n)
}

fn close_to(got: [f64; 3], want: [f64; 3]) -> bool {
    got.iter().zip(want).all(|(g, w)| (g - w).abs() < 40.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_streams_snapshot_is_its_latest_picture_decoded_once_for_many() {
    let server = gateway::start(|c| {
        c.snapshots.width = 320;
        c.snapshots.height = 320;
    })
    .await;
    let client = reqwest::Client::new();
    let snap = url(&server, "/api/streams/pic/snapshot.jpg");
    let r = client.get(&snap).send().await.unwrap();
    assert_eq!(r.status(), 404, "not live");

    let video = colour_halves(VideoCodec::H264, 2);
    let publisher = publisher(&server, "pic", Some(VideoCodec::H264), false).await;
    let r = client.get(&snap).send().await.unwrap();
    assert_eq!(r.status(), 503, "no keyframe yet");
    assert_eq!(r.headers()["retry-after"], "1");
    assert!(r.text().await.unwrap().contains("first keyframe"));

    publisher.play(&video, &[]).await.unwrap();
    wait_received(&server, "pic", video.len()).await;

    // Fifty at once: one decode, fifty identical pictures.
    let before = value(&scrape(&server).await, "castgate_snapshot_decodes_total").unwrap_or(0.0);
    let got = gateway::get_at_once(&snap, 50, "image/jpeg", "etag").await;
    let after = value(&scrape(&server).await, "castgate_snapshot_decodes_total").unwrap_or(0.0);
    assert_eq!(after - before, 1.0, "one decode for fifty requests");
    assert!(got.iter().all(|g| g == &got[0]));

    // The configured size (640x360 fitted into 320x320), and the picture
    // of the last second: green on the left (red was the first second),
    // blue on the right.
    let pic = decode_jpeg(&got[0].1);
    assert_eq!((pic.0, pic.1), (320, 180));
    let left = average(&pic, 20..140, 20..160);
    let right = average(&pic, 180..300, 20..160);
    assert!(close_to(left, [0.0, 128.0, 0.0]), "left is green: {left:?}");
    assert!(
        close_to(right, [0.0, 0.0, 255.0]),
        "right is blue: {right:?}"
    );

    // Unchanged: 304 for its tag.
    let r = client
        .get(&snap)
        .header("if-none-match", &got[0].0)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    publisher.delete().await.unwrap();

    // Audio only: no picture.
    let audio = opus_packets(1);
    let sound = common::gateway::publisher(&server, "radio", None, true).await;
    sound.play(&[], &audio).await.unwrap();
    let r = client
        .get(url(&server, "/api/streams/radio/snapshot.jpg"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("no video"));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_gets_a_poster_and_a_strip_when_it_ends() {
    for codec in [VideoCodec::H264, VideoCodec::Vp8] {
        let dir = common::files::temp_dir("posters");
        let server = crate::recording::start(&dir).await;
        let video = colour_halves(codec, 6);
        let p = publisher(&server, "rec", Some(codec), false).await;
        p.play(&video, &[]).await.unwrap();
        wait_received(&server, "rec", video.len()).await;
        p.delete().await.unwrap();
        gateway::recordings_idle(&server).await;
        let file = common::files::recordings_in(&dir).remove(0);
        let stem = file.file_stem().unwrap().to_string_lossy().to_string();
        let folder = file.parent().unwrap().to_path_buf();
        // Made when the file closed, before anyone asked.
        let made = gateway::eventually(std::time::Duration::from_secs(20), || {
            folder.join(format!("{stem}.poster.jpg")).exists()
                && folder.join(format!("{stem}.strip.jpg")).exists()
        })
        .await;
        assert!(made, "{codec:?}: poster and strip beside the recording");
        let id = format!("rec~{stem}");
        let client = reqwest::Client::new();
        let get = |what: &'static str| {
            let u = url(&server, &format!("/recordings/{id}/{what}"));
            let client = client.clone();
            async move {
                let r = client.get(u).send().await.unwrap();
                assert_eq!(r.status(), 200, "{what}");
                assert_eq!(r.headers()["content-type"], "image/jpeg");
                r.bytes().await.unwrap()
            }
        };
        // The poster: the first second (red on the left), full size.
        let poster = decode_jpeg(&get("poster.jpg").await);
        assert_eq!((poster.0, poster.1), (640, 360), "{codec:?}");
        let left = average(&poster, 40..280, 40..320);
        let right = average(&poster, 360..600, 40..320);
        assert!(
            close_to(left, [255.0, 0.0, 0.0]),
            "{codec:?}: poster left is red: {left:?}"
        );
        assert!(
            close_to(right, [0.0, 0.0, 255.0]),
            "{codec:?}: right is blue: {right:?}"
        );
        // The strip: one 160x90 picture per 2 s; the later ones green on the left.
        let strip = decode_jpeg(&get("strip.jpg").await);
        assert_eq!((strip.0, strip.1), (3 * 160, 90), "{codec:?}");
        for cell in 1..3 {
            let x = cell * 160;
            let left = average(&strip, x + 10..x + 70, 10..80);
            let right = average(&strip, x + 90..x + 150, 10..80);
            assert!(
                close_to(left, [0.0, 128.0, 0.0]),
                "{codec:?}: cell {cell} left: {left:?}"
            );
            assert!(
                close_to(right, [0.0, 0.0, 255.0]),
                "{codec:?}: cell {cell} right: {right:?}"
            );
        }
        // One missing (made before this version, say) is made when asked for.
        std::fs::remove_file(folder.join(format!("{stem}.strip.jpg"))).unwrap();
        assert_eq!(decode_jpeg(&get("strip.jpg").await).0, 3 * 160);
        assert!(folder.join(format!("{stem}.strip.jpg")).exists());
        // Deleted with the recording.
        let r = client
            .delete(url(&server, &format!("/api/recordings/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        assert!(!folder.join(format!("{stem}.poster.jpg")).exists());
        let r = client
            .get(url(&server, &format!("/recordings/{id}/poster.jpg")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        server.shutdown().await;
    }
}
