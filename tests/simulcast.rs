//! Simulcast end to end (issue 19): a publisher sends the same pictures in
//! three layers (str0m's simulcast sender, rids and RTP time offsets of its
//! own per layer, as a browser's), viewers pinned to `low`, `mid`, `high` or
//! a rid get the layer asked for, an automatic viewer on a good link climbs
//! to the top one, every viewer sees one continuous timeline, and the
//! recording is the top layer. Offers that signal simulcast the munged way
//! are refused with a reason.

use std::net::SocketAddr;
use std::time::Duration;

use castgate::media::Codec;
use castgate::media::probe::picture_size;
use castgate::names::StreamName;

use crate::common;
use common::files::{decodes_cleanly, probe, recordings_in, temp_dir};
use common::gateway::{self, eventually, recordings_idle, url};
use common::media::{
    EncodedFrame, flash_beep, flash_video, intra_frames_at, opus_packets, video_frames_at,
    video_frames_sized,
};
use common::netns::Pair;
use common::peer::{
    HttpError, Kind, PeerOptions, Publisher, ReceivedFrame, VideoCodec, Viewer, http_client,
    make_offer,
};
use common::rtmp::get_json;

/// The layers, named so that neither their names nor their order say which
/// is largest (castgate must rank them by what their pictures measure).
const LAYERS: [(&str, &str); 3] = [("b", "640x360"), ("a", "1280x720"), ("c", "320x180")];

fn encode_layers(codec: VideoCodec, seconds: u32) -> Vec<(&'static str, Vec<EncodedFrame>)> {
    LAYERS
        .iter()
        .map(|(rid, size)| (*rid, video_frames_sized(codec, seconds, size)))
        .collect()
}

/// castgate's name for a test codec.
fn media_codec(codec: VideoCodec) -> Codec {
    match codec {
        VideoCodec::Vp8 => Codec::Vp8,
        VideoCodec::Vp9 => Codec::Vp9,
        VideoCodec::H264 => Codec::H264,
        VideoCodec::Av1 => Codec::Av1,
    }
}

/// Publishes `layers` (and audio) to `/whip/{name}` of `server` in the
/// background, `loops` times over; the task ends when the clip does.
async fn publish(
    server: &castgate::server::Server,
    name: &str,
    codec: VideoCodec,
    layers: Vec<(&'static str, Vec<EncodedFrame>)>,
    audio: Vec<EncodedFrame>,
    loops: u32,
) -> tokio::task::JoinHandle<Publisher> {
    let rids: Vec<&str> = layers.iter().map(|l| l.0).collect();
    let publisher = Publisher::connect(
        &url(server, &format!("/whip/{name}")),
        PeerOptions::new(Some(codec), true).with_simulcast(&rids),
    )
    .await
    .expect("a simulcast publisher connects");
    tokio::spawn(async move {
        let refs: Vec<(&str, &[EncodedFrame])> =
            layers.iter().map(|(r, f)| (*r, f.as_slice())).collect();
        publisher
            .play_layers(&refs, &audio, loops)
            .await
            .expect("plays");
        publisher
    })
}

/// Waits until the stream `name` of `server` has measured its three layers
/// (seen a keyframe, and so a size, of each); fails the test if it does not.
async fn three_layers_measured(server: &castgate::server::Server, name: &str) {
    let name = StreamName::parse(name).unwrap();
    let hub = server.hub().clone();
    let measured = || {
        hub.get(&name)
            .is_some_and(|s| s.layers().iter().filter(|l| l.width.is_some()).count() == 3)
    };
    assert!(
        eventually(Duration::from_secs(5), measured).await,
        "three layers measured: {:?}",
        hub.get(&name).map(|s| s.layers())
    );
}

/// The picture size of the next video keyframe `viewer` receives.
pub(crate) async fn next_keyframe_size(
    viewer: &mut Viewer,
    codec: VideoCodec,
    within: Duration,
) -> Option<(u32, u32)> {
    let until = tokio::time::Instant::now() + within;
    loop {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        let f = viewer.next_frame_of(Kind::Video, left).await?;
        if f.keyframe {
            return picture_size(media_codec(codec), &f.data);
        }
    }
}

/// Video frames `viewer` receives over `span`.
pub(crate) async fn video_for(viewer: &mut Viewer, span: Duration) -> Vec<ReceivedFrame> {
    let until = tokio::time::Instant::now() + span;
    let mut out = Vec::new();
    loop {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        match viewer.next_frame_of(Kind::Video, left).await {
            Some(f) => out.push(f),
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_vp8_viewers_get_their_layer_and_the_recording_gets_the_top_one() {
    pinned_viewers_and_the_recording(VideoCodec::Vp8).await;
}

/// H.264 layers are cut once per layer (each with its own parameter sets);
/// the recording is Matroska.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_h264_viewers_get_their_layer_and_the_recording_gets_the_top_one() {
    pinned_viewers_and_the_recording(VideoCodec::H264).await;
}

async fn pinned_viewers_and_the_recording(codec: VideoCodec) {
    let (layers, audio) =
        tokio::task::spawn_blocking(move || (encode_layers(codec, 8), opus_packets(8)))
            .await
            .unwrap();
    let top_frames = layers[1].1.len();
    let dir = temp_dir("simulcast-rec");
    let d = dir.to_path_buf();
    let server = gateway::start(move |c| {
        c.record.enabled = true;
        c.record.dir = d;
    })
    .await;
    let playing = publish(&server, "sim", codec, layers, audio, 1).await;
    three_layers_measured(&server, "sim").await;

    // The API lists the layers smallest first, by measured size.
    let info = get_json(&server, "/api/streams/sim").await;
    let listed: Vec<(String, u64)> = info["layers"]
        .as_array()
        .expect("layers listed")
        .iter()
        .map(|l| {
            (
                l["rid"].as_str().unwrap().to_string(),
                l["width"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [("c".into(), 320), ("b".into(), 640), ("a".into(), 1280)],
        "{info}"
    );
    assert_eq!(
        info["video"]["width"], 1280,
        "the stream's size is its top layer's"
    );

    // Pinned viewers, by quality and by rid.
    let mut viewers = Vec::new();
    for layer in ["low", "mid", "high", "c"] {
        let v = Viewer::connect(&url(&server, &format!("/whep/sim?layer={layer}")), None)
            .await
            .unwrap_or_else(|e| panic!("viewer {layer}: {e:#}"));
        viewers.push((layer, v));
    }
    let mut sizes = Vec::new();
    for (layer, v) in &mut viewers {
        let size = next_keyframe_size(v, codec, Duration::from_secs(4)).await;
        sizes.push((*layer, size));
    }
    assert_eq!(
        sizes,
        [
            ("low", Some((320, 180))),
            ("mid", Some((640, 360))),
            ("high", Some((1280, 720))),
            ("c", Some((320, 180))),
        ]
    );
    // Each keeps its layer: every frame of a second more decodes at its
    // size, at 30 fps steps of the one timeline.
    for (layer, v) in &mut viewers {
        let frames = video_for(v, Duration::from_secs(1)).await;
        assert!(frames.len() >= 20, "{layer}: {} frames", frames.len());
        for f in frames.iter().filter(|f| f.keyframe) {
            let size = picture_size(media_codec(codec), &f.data);
            assert_eq!(
                Some(size),
                sizes.iter().find(|s| s.0 == *layer).map(|s| s.1)
            );
        }
        for pair in frames.windows(2) {
            let step = pair[1].rtp_time.wrapping_sub(pair[0].rtp_time);
            assert_eq!(step, 3000, "{layer}: one frame is 3000 ticks at 30 fps");
        }
    }
    // The sessions API names each viewer's layer (refreshed once a second).
    let mut rids = Vec::new();
    for _ in 0..30 {
        let sessions = get_json(&server, "/api/streams/sim/sessions").await;
        rids = sessions["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["layer"].as_str().map(str::to_string))
            .collect();
        rids.sort();
        if rids.len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(rids, ["a", "b", "c", "c"]);

    // A rid the stream does not have: 400 naming its layers.
    let err = Viewer::connect(&url(&server, "/whep/sim?layer=zz"), None)
        .await
        .err()
        .expect("refused");
    let http = err.downcast_ref::<HttpError>().expect("an HTTP error");
    assert_eq!(http.status, 400);
    assert!(
        http.body.contains("its layers are c, b, a"),
        "{}",
        http.body
    );

    let publisher = playing.await.unwrap();
    assert_eq!(publisher.delete().await.unwrap(), 200);
    drop(viewers);
    recordings_idle(&server).await;
    let files = recordings_in(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let file = &files[0];
    let streams = probe(file, "stream=width,height");
    assert!(
        streams.contains("width=1280") && streams.contains("height=720"),
        "{streams}"
    );
    decodes_cleanly(file);
    let packets = common::files::packets(file, "v");
    assert!(
        packets + 45 >= top_frames && packets <= top_frames,
        "the top layer recorded: {packets} of {top_frames} frames"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_automatic_viewer_on_a_good_link_climbs_to_the_top_layer_on_one_timeline() {
    let (layers, audio) =
        tokio::task::spawn_blocking(|| (encode_layers(VideoCodec::Vp8, 10), opus_packets(10)))
            .await
            .unwrap();
    let server = gateway::start(|_| {}).await;
    let playing = publish(&server, "auto", VideoCodec::Vp8, layers, audio, 4).await;
    three_layers_measured(&server, "auto").await;
    let name = StreamName::parse("auto").unwrap();
    let hub = server.hub().clone();
    let mut viewer = Viewer::connect(&url(&server, "/whep/auto"), None)
        .await
        .expect("an automatic viewer connects");
    // Its answer carries transport-wide congestion control (it estimates).
    assert!(
        viewer.session().answer_sdp.contains("transport-wide-cc"),
        "{}",
        viewer.session().answer_sdp
    );
    // Frames until a keyframe of the top layer and a second after it (the
    // estimate climbs in a few seconds on an idle machine, more on a busy one).
    let mut frames = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(40);
    while let Some(f) = viewer
        .next_frame_of(
            Kind::Video,
            until.saturating_duration_since(tokio::time::Instant::now()),
        )
        .await
    {
        let top = f.keyframe && picture_size(Codec::Vp8, &f.data) == Some((1280, 720));
        frames.push(f);
        if top {
            frames.extend(video_for(&mut viewer, Duration::from_secs(1)).await);
            break;
        }
    }
    let sizes: Vec<(u32, u32)> = frames
        .iter()
        .filter(|f| f.keyframe)
        .filter_map(|f| picture_size(Codec::Vp8, &f.data))
        .collect();
    assert_eq!(
        sizes.last(),
        Some(&(1280, 720)),
        "on the top layer at the end: {sizes:?}"
    );
    assert!(
        sizes.first() != Some(&(1280, 720)),
        "it started lower: {sizes:?}"
    );
    // One timeline across the switches: every step is one frame (3000
    // ticks), a tick (a switch's keyframe was the picture just sent), or a
    // few frames when some were passed over at a switch; never back.
    for pair in frames.windows(2) {
        let step = pair[1].rtp_time as i64 - pair[0].rtp_time as i64;
        assert!(
            step > 0 && step <= 3000 * 10,
            "a jump of {step} ticks at a switch"
        );
    }
    let counters = hub.get(&name).unwrap().counters();
    assert!(counters.layer_switches >= 1, "counted: {counters:?}");
    // A switch waits for the layer's next keyframe and asks for it about
    // every 350 ms meanwhile, not with every frame of the other layers
    // (this publisher ignores requests: its keyframes come every second).
    assert!(
        counters.keyframe_requests <= 4 * (counters.layer_switches + 1),
        "{counters:?}"
    );
    drop(viewer);
    playing.abort();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_layer_viewers_and_refused_simulcast_offers() {
    let server = gateway::start(|_| {}).await;
    // A single-layer stream's viewers carry no transport-wide feedback.
    let p = gateway::publisher(&server, "one", Some(VideoCodec::Vp8), true).await;
    let v = Viewer::connect(&url(&server, "/whep/one"), None)
        .await
        .unwrap();
    assert!(!v.session().answer_sdp.contains("transport-wide-cc"));
    // `?layer=` qualities are fine on one layer; a rid is not.
    let pinned = Viewer::connect(&url(&server, "/whep/one?layer=low"), None).await;
    assert!(pinned.is_ok(), "{:?}", pinned.err());
    let err = Viewer::connect(&url(&server, "/whep/one?layer=h"), None)
        .await
        .err()
        .unwrap();
    let http = err.downcast_ref::<HttpError>().unwrap();
    assert_eq!(http.status, 400);
    assert!(http.body.contains("single layer"), "{}", http.body);
    drop(p);

    // Simulcast the munged way (SSRC groups, no rids): 422 with a reason.
    let offer = make_offer(&PeerOptions::new(Some(VideoCodec::Vp8), false), false).unwrap();
    let munged = offer.sdp.replacen(
        "a=sendonly\r\n",
        "a=sendonly\r\na=ssrc-group:SIM 1 2 3\r\n",
        1,
    );
    assert_ne!(munged, offer.sdp);
    let r = post_offer(&server, "munged", &munged).await;
    assert_eq!(r.0, 422, "{}", r.1);
    assert!(r.1.contains("ssrc-group:SIM"), "{}", r.1);

    // Four layers: more than castgate takes.
    let four = make_offer(
        &PeerOptions::new(Some(VideoCodec::Vp8), false).with_simulcast(&["a", "b", "c", "d"]),
        false,
    )
    .unwrap();
    let r = post_offer(&server, "four", &four.sdp).await;
    assert_eq!(r.0, 422, "{}", r.1);
    assert!(r.1.contains("at most 3"), "{}", r.1);
    server.shutdown().await;
}

async fn post_offer(server: &castgate::server::Server, name: &str, sdp: &str) -> (u16, String) {
    let r = http_client()
        .unwrap()
        .post(url(server, &format!("/whip/{name}")))
        .header("content-type", "application/sdp")
        .body(sdp.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Frames `viewer` receives until a video keyframe whose picture passes
/// `wanted` (by its width), for at most `within`: how long it took and the
/// longest gap between two video frames meanwhile, `None` if none came.
pub(crate) async fn until_keyframe_width(
    viewer: &mut Viewer,
    within: Duration,
    wanted: impl Fn(u32) -> bool,
) -> Option<(Duration, Duration)> {
    let start = tokio::time::Instant::now();
    let until = start + within;
    let mut last = start;
    let mut longest = Duration::ZERO;
    loop {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        let f = viewer.next_frame_of(Kind::Video, left).await?;
        let now = tokio::time::Instant::now();
        longest = longest.max(now - last);
        last = now;
        if f.keyframe
            && let Some((w, _)) = picture_size(Codec::Vp8, &f.data)
            && wanted(w)
        {
            return Some((now - start, longest));
        }
    }
}

/// An automatic viewer on another host behind a link that slows down
/// (`tc`'s token bucket: a queue, as a real bottleneck) moves down to a
/// layer the link carries, and back up once the limit is lifted. The
/// publisher sends 150, 500 and 1,500 kbit/s layers.
#[test]
fn an_automatic_viewer_behind_a_slowed_link_moves_down_and_back_up() {
    let net = std::sync::Arc::new(Pair::new("simul"));
    let shaper = net.clone();
    let viewer_ns = net.b.name().to_string();
    const SHAPED: [(&str, &str, u32); 3] = [
        ("l", "320x180", 150),
        ("m", "640x360", 500),
        ("h", "1280x720", 1500),
    ];
    let clips = |encode: fn(VideoCodec, u32, &str, u32) -> Vec<EncodedFrame>| {
        SHAPED
            .iter()
            .map(|(rid, size, kbps)| (*rid, encode(VideoCodec::Vp8, 12, size, *kbps)))
            .collect::<Vec<(&'static str, Vec<EncodedFrame>)>>()
    };
    let layers = clips(video_frames_at);
    // What each layer sends when asked for a keyframe (a browser answers at
    // its next frame).
    let intra = clips(intra_frames_at);
    let figures = net.a.run(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let server = gateway::start(|c| {
                c.rtc.udp_listen = SocketAddr::from((Pair::A, 0));
            })
            .await;
            let rids: Vec<&str> = layers.iter().map(|l| l.0).collect();
            let publisher = Publisher::connect(
                &url(&server, "/whip/slow"),
                PeerOptions::new(Some(VideoCodec::Vp8), false)
                    .with_simulcast(&rids)
                    .bound_to(Pair::A.into()),
            )
            .await
            .expect("the publisher connects");
            let playing = tokio::spawn(async move {
                let refs: Vec<(&str, &[EncodedFrame])> =
                    layers.iter().map(|(r, f)| (*r, f.as_slice())).collect();
                let intra: Vec<(&str, &[EncodedFrame])> =
                    intra.iter().map(|(r, f)| (*r, f.as_slice())).collect();
                let _ = publisher.play_layers_answering(&refs, &intra, &[], 6).await;
                publisher
            });
            let name = StreamName::parse("slow").unwrap();
            let hub = server.hub().clone();
            assert!(
                eventually(Duration::from_secs(5), || hub.get(&name).is_some_and(|s| s
                    .layers()
                    .iter()
                    .filter(|l| l.bitrate_kbps > 0.0)
                    .count()
                    == 3))
                .await,
                "three layers measured: {:?}",
                hub.get(&name).map(|s| s.layers())
            );
            let mut viewer = Viewer::connect_with(
                &url(&server, "/whep/slow"),
                PeerOptions::new(None, true)
                    .bound_to(Pair::B.into())
                    .in_netns(&viewer_ns),
            )
            .await
            .expect("the viewer on the other host connects");
            let free =
                until_keyframe_width(&mut viewer, Duration::from_secs(20), |w| w == 1280).await;
            shaper.limit_a_to_b(800);
            let slowed =
                until_keyframe_width(&mut viewer, Duration::from_secs(20), |w| w <= 640).await;
            // It keeps receiving pictures on the lower layer.
            let kept = video_for(&mut viewer, Duration::from_secs(2)).await.len();
            shaper.unlimit_a_to_b();
            let lifted =
                until_keyframe_width(&mut viewer, Duration::from_secs(45), |w| w == 1280).await;
            let switches = hub.get(&name).map(|s| s.counters().layer_switches);
            drop(viewer);
            playing.abort();
            server.shutdown().await;
            (free, slowed, kept, lifted, switches)
        })
    });
    let (free, slowed, kept, lifted, switches) = figures;
    eprintln!(
        "figure: auto viewer free→top {free:?}, down after the limit {slowed:?}, \
         frames in 2 s on the lower layer {kept}, up after the lift {lifted:?}, switches {switches:?}"
    );
    assert!(free.is_some(), "it reached the top layer on the free link");
    assert!(slowed.is_some(), "it moved down when the link slowed");
    assert!(
        kept >= 30,
        "it kept decoding on the lower layer: {kept} frames in 2 s"
    );
    assert!(
        lifted.is_some(),
        "it went back up once the limit was lifted"
    );
    assert!(switches.is_some_and(|s| s >= 3), "{switches:?}");
}

/// The recording of a simulcast stream keeps audio and video in sync: its
/// top layer is not the layer the timeline is based on (the first heard), so
/// its pictures are rebased with the layers' sender reports, and a flash in
/// the picture still lands on its beep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulcast_recording_keeps_audio_and_video_in_sync() {
    let (layers, audio) = tokio::task::spawn_blocking(|| {
        let layers: Vec<(&'static str, Vec<EncodedFrame>)> = LAYERS
            .iter()
            .map(|(rid, size)| (*rid, flash_video(7, size)))
            .collect();
        (layers, flash_beep(7).1)
    })
    .await
    .unwrap();
    let dir = temp_dir("simulcast-sync");
    let d = dir.to_path_buf();
    let server = gateway::start(move |c| {
        c.record.enabled = true;
        c.record.dir = d;
    })
    .await;
    let playing = publish(&server, "sync", VideoCodec::Vp8, layers, audio, 1).await;
    let publisher = playing.await.unwrap();
    assert_eq!(publisher.delete().await.unwrap(), 200);
    recordings_idle(&server).await;
    server.shutdown().await;
    let files = recordings_in(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let streams = probe(&files[0], "stream=width");
    assert!(streams.contains("width=1280"), "the top layer: {streams}");
    crate::recording::assert_in_sync(&files[0], "simulcast, the top layer rebased");
}
