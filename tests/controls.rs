//! An operator's controls (admin role), end to end: ending a live stream
//! (viewers see it end, its recording is finalized, its restream targets
//! stop and are not resumed), listing and ending its sessions, and starting
//! and stopping its recording.

use crate::common;

use std::time::Duration;

use castgate::events::Event;
use castgate::record::catalog::State;
use common::files::temp_dir;
use common::gateway::{self, eventually, publisher, recordings_idle, url};
use common::media::{opus_packets, video_frames};
use common::peer::{VideoCodec, Viewer, http_client};
use common::rtmp::{Receiver, get_json, id_of, post_target, target};
use serde_json::Value;

async fn call(server: &castgate::server::Server, method: &str, path: &str) -> (u16, Value) {
    let r = http_client()
        .unwrap()
        .request(method.parse().unwrap(), url(server, path))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Reads events until one `want` accepts (bounded).
async fn until_event(
    events: &mut tokio::sync::broadcast::Receiver<std::sync::Arc<castgate::events::Envelope>>,
    mut want: impl FnMut(&Event) -> bool,
) -> Option<Event> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Ok(Ok(env)) = tokio::time::timeout_at(deadline, events.recv()).await {
        if want(&env.event) {
            return Some(env.event.clone());
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_a_stream_ends_its_viewers_recording_and_restreams_for_good() {
    let dir = temp_dir("end-stream");
    let rec = dir.join("rec");
    let mut rx = Receiver::start(&dir, "out.flv").await;
    let server = gateway::start(move |c| {
        c.record.enabled = true;
        c.record.dir = rec;
    })
    .await;
    let mut events = server.events().subscribe();
    let p = publisher(&server, "live", Some(VideoCodec::H264), true).await;
    let viewer = Viewer::connect(&url(&server, "/whep/live"), None)
        .await
        .unwrap();
    let (s, body) = post_target(&server, "live", &format!(r#"{{"url":"{}"}}"#, rx.url())).await;
    assert_eq!(s, 201, "{body}");
    let target_id = id_of(&body);
    p.play(&video_frames(VideoCodec::H264, 2), &opus_packets(2))
        .await
        .unwrap();

    let (status, info) = call(&server, "DELETE", "/api/streams/live").await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["name"], "live");
    let ended = until_event(&mut events, |e| matches!(e, Event::StreamEnded { .. })).await;
    let Some(Event::StreamEnded { reason, .. }) = ended else {
        panic!("no stream_ended event");
    };
    assert_eq!(reason, "ended_by_operator");
    assert!(
        viewer.wait_ended(Duration::from_secs(5)).await,
        "the viewer saw the end"
    );
    assert!(
        p.wait_ended(Duration::from_secs(5)).await,
        "the publisher's session closed"
    );
    assert!(
        rx.finished(Duration::from_secs(15)).await,
        "the push ended cleanly"
    );
    recordings_idle(&server).await;
    let recordings = server.recorder().list();
    assert_eq!(recordings.len(), 1);
    assert_eq!(recordings[0].state, State::Finalized);
    // The name goes live again: an operator's end is not a dropped
    // connection, so the push does not resume.
    let p2 = publisher(&server, "live", Some(VideoCodec::H264), true).await;
    p2.play(&video_frames(VideoCodec::H264, 1), &[])
        .await
        .unwrap();
    let t = target(&server, &target_id).await;
    assert_eq!(t["state"], "stopped", "{t}");
    let list = get_json(&server, "/api/streams/live/restreams").await;
    assert_eq!(
        list["restreams"].as_array().map(Vec::len),
        Some(1),
        "{list}"
    );
    p2.delete().await.unwrap();
    let (status, _) = call(&server, "DELETE", "/api/streams/live").await;
    assert_eq!(status, 404, "nothing live");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streams_sessions_are_listed_and_one_can_be_ended() {
    let server = gateway::start(|_| {}).await;
    let mut events = server.events().subscribe();
    let p = publisher(&server, "room", Some(VideoCodec::Vp8), true).await;
    let v1 = Viewer::connect(&url(&server, "/whep/room"), None)
        .await
        .unwrap();
    let v2 = Viewer::connect(&url(&server, "/whep/room"), None)
        .await
        .unwrap();
    let video = video_frames(VideoCodec::Vp8, 2);
    let media_bytes: usize = video.iter().map(|f| f.data.len()).sum();
    p.play(&video, &opus_packets(2)).await.unwrap();
    // The figures are refreshed about once a second: wait until they count
    // at least the video that went through (publisher in, viewer out).
    let counted = |body: &Value| {
        let s = &body["sessions"];
        let figure = |i: usize, k: &str| s[i][k].as_u64().unwrap_or(0) as usize;
        figure(0, "bytes_in") >= media_bytes && figure(1, "bytes_out") >= media_bytes
    };
    let mut body = Value::Null;
    for _ in 0..50 {
        let (status, b) = call(&server, "GET", "/api/streams/room/sessions").await;
        assert_eq!(status, 200, "{b}");
        body = b;
        if counted(&body) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(counted(&body), "{media_bytes} bytes of video: {body}");
    let sessions = body["sessions"].as_array().unwrap().clone();
    assert_eq!(sessions.len(), 3, "{body}");
    assert_eq!(sessions[0]["role"], "publisher", "oldest first: {body}");
    for s in &sessions {
        assert_eq!(s["client_address"], "127.0.0.1");
        assert_eq!(s["state"], "connected", "{s}");
        assert_eq!(s["codecs"], serde_json::json!(["vp8", "opus"]));
        assert!(s["since"].as_str().unwrap().ends_with('Z'));
    }
    // A rate over the last second: after the media ended it may read 0.
    assert!(sessions[0]["bitrate_in_bps"].is_u64(), "{body}");
    // End the first viewer.
    let id = sessions[1]["id"].as_str().unwrap();
    let (status, _) = call(
        &server,
        "DELETE",
        &format!("/api/streams/room/sessions/{id}"),
    )
    .await;
    assert_eq!(status, 200);
    let left = until_event(&mut events, |e| matches!(e, Event::ViewerLeft { .. })).await;
    let Some(Event::ViewerLeft { reason, .. }) = left else {
        panic!("no viewer_left event");
    };
    assert_eq!(reason, "ended_by_operator");
    let ended = [v1.wait_ended(Duration::from_secs(5)).await, v2.ended()];
    assert_eq!(ended, [true, false], "only that viewer");
    assert!(
        eventually(Duration::from_secs(5), || gateway::viewers(&server, "room")
            == 1)
        .await
    );
    let (_, body) = call(&server, "GET", "/api/streams/room/sessions").await;
    assert_eq!(body["sessions"].as_array().map(Vec::len), Some(2), "{body}");
    let (status, _) = call(
        &server,
        "DELETE",
        &format!("/api/streams/room/sessions/{id}"),
    )
    .await;
    assert_eq!(status, 404, "already gone");
    let (status, _) = call(&server, "GET", "/api/streams/nobody/sessions").await;
    assert_eq!(status, 404);
    p.delete().await.unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_config_does_not_record_can_be_recorded_on_request() {
    let dir = temp_dir("record-on-request");
    let d = dir.to_path_buf();
    let server = gateway::start(move |c| {
        c.record.enabled = true;
        c.record.dir = d;
        c.record.streams.clear();
    })
    .await;
    let p = publisher(&server, "cam", Some(VideoCodec::Vp8), true).await;
    let (status, body) = call(&server, "GET", "/api/streams/cam/recording").await;
    assert_eq!(
        (status, &body["recording"]),
        (200, &Value::Bool(false)),
        "{body}"
    );
    let (status, body) = call(&server, "POST", "/api/streams/cam/recording").await;
    assert_eq!(
        (status, &body["recording"]),
        (201, &Value::Bool(true)),
        "{body}"
    );
    p.play(&video_frames(VideoCodec::Vp8, 2), &opus_packets(2))
        .await
        .unwrap();
    let (status, body) = call(&server, "GET", "/api/streams/cam/recording").await;
    assert_eq!(status, 200);
    let id = body["id"].as_str().expect("the file is open").to_string();
    let (status, again) = call(&server, "POST", "/api/streams/cam/recording").await;
    assert_eq!(status, 200, "idempotent: {again}");
    assert_eq!(again["id"], id);
    let (status, stopped) = call(&server, "DELETE", "/api/streams/cam/recording").await;
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(
        (&stopped["recording"], &stopped["id"]),
        (&Value::Bool(false), &Value::String(id.clone()))
    );
    let list = server.recorder().list();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].id.as_str(), list[0].state),
        (id.as_str(), State::Finalized)
    );
    let (status, body) = call(&server, "GET", "/api/streams/cam/recording").await;
    assert_eq!((status, &body["recording"]), (200, &Value::Bool(false)));
    let (status, _) = call(&server, "DELETE", "/api/streams/cam/recording").await;
    assert_eq!(status, 404, "not recording any more");
    assert!(!p.ended(), "the stream goes on");
    p.delete().await.unwrap();
    server.shutdown().await;

    let server = gateway::start(|c| c.record.enabled = false).await;
    let p = publisher(&server, "cam", Some(VideoCodec::Vp8), false).await;
    let (status, body) = call(&server, "POST", "/api/streams/cam/recording").await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.as_str().unwrap_or_default().contains("record.enabled"),
        "{body}"
    );
    p.delete().await.unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controls_need_the_admin_role_and_the_stream_reads_stay_open() {
    let server = gateway::start(|c| c.auth.admin_token = Some("adm".into())).await;
    let p = publisher(&server, "cam", Some(VideoCodec::Vp8), false).await;
    let client = http_client().unwrap();
    let send = |method: &str, path: &str, token: Option<&str>| {
        let mut r = client.request(method.parse().unwrap(), url(&server, path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        async move { r.send().await.unwrap().status().as_u16() }
    };
    for (method, path) in [
        ("GET", "/api/streams/cam/sessions"),
        ("GET", "/api/streams/cam/recording"),
        ("POST", "/api/streams/cam/recording"),
        ("DELETE", "/api/streams/cam/recording"),
        ("DELETE", "/api/streams/cam/sessions/0123"),
        ("DELETE", "/api/streams/cam"),
    ] {
        assert_eq!(send(method, path, None).await, 401, "{method} {path}");
    }
    // (Failed attempts are limited per address: one wrong token is enough.)
    assert_eq!(send("DELETE", "/api/streams/cam", Some("wrong")).await, 401);
    assert_eq!(send("GET", "/api/streams/cam", None).await, 200, "a read");
    assert_eq!(
        send("GET", "/api/streams/cam/sessions", Some("adm")).await,
        200
    );
    assert_eq!(send("DELETE", "/api/streams/cam", Some("adm")).await, 200);
    assert!(p.wait_ended(Duration::from_secs(5)).await);
    server.shutdown().await;
}
