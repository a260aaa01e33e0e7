//! Access control end to end: roles open and protected per stream pattern,
//! static tokens and JWTs (header and `?token=`), 401 vs 403 with reasons,
//! the failed-attempt limit, the access callback, `castgate token`, HTTPS,
//! and tokens kept out of logs.

use crate::common;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use castgate::config::{Access, AccessRule, Config, Role};
use castgate::http::auth::jwt;
use castgate::server::Server;
use common::files::{free_port, temp_dir};
use common::gateway::{start, url};
use common::peer::{HttpError, PeerOptions, Publisher, VideoCodec, Viewer, make_offer};

const SECRET: &str = "test-secret-test-secret-test-secret!";
const HOUR: Duration = Duration::from_secs(3600);

fn rule(role: Role, streams: &[&str], access: Access, tokens: &[&str]) -> AccessRule {
    AccessRule {
        role,
        streams: streams.iter().map(|s| (*s).into()).collect(),
        access,
        tokens: tokens.iter().map(|s| s.to_string()).collect(),
    }
}

fn token(roles: &[Role], stream: &str) -> String {
    jwt::mint(SECRET, roles, stream, HOUR).unwrap()
}

/// A JWT signed with `secret` from raw claims.
fn signed(claims: serde_json::Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

/// Sends `method path` with an optional Bearer token (and, for POST and
/// PATCH, an SDP-typed body).
async fn call(server: &Server, method: &str, path: &str, bearer: Option<&str>) -> Answer {
    call_with(server, method, path, bearer, &[]).await
}

async fn call_with(
    server: &Server,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    headers: &[(&str, &str)],
) -> Answer {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut req = client.request(method.parse().unwrap(), url(server, path));
    if matches!(method, "POST" | "PATCH") {
        req = req
            .header("content-type", "application/sdp")
            .body("not sdp");
    }
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    Answer {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.text().await.unwrap(),
    }
}

/// Past the guard: any status but 401, 403 and 429.
fn passed(a: &Answer) -> bool {
    !matches!(a.status, 401 | 403 | 429)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_open_and_protected_per_pattern() {
    let server = start(|c| {
        c.auth.jwt_secret = Some(SECRET.into());
        c.auth.publish_token = Some("pub-token".into());
        c.auth.view = Access::Protected;
        c.auth.rules = vec![
            rule(Role::Publish, &["open-*"], Access::Open, &[]),
            rule(Role::View, &["open-*"], Access::Open, &[]),
            rule(Role::Admin, &["cam*"], Access::Protected, &["adm-token"]),
        ];
    })
    .await;

    // Open per pattern: the handler answers (400 not SDP; 409 not live), not the guard.
    for (path, status) in [("/whip/open-1", 400), ("/whep/open-1", 409)] {
        let a = call(&server, "POST", path, None).await;
        assert_eq!(a.status, status, "{path}: {}", a.body);
    }
    // Protected: 401 with WWW-Authenticate and the reason.
    for (path, verb) in [("/whip/cam", "publish"), ("/whep/cam", "view")] {
        let a = call(&server, "POST", path, None).await;
        assert_eq!(a.status, 401, "{path}");
        assert_eq!(a.headers["www-authenticate"], "Bearer");
        assert!(
            a.body.contains(&format!(
                "a Bearer token is required to {verb} stream \"cam\""
            )),
            "{}",
            a.body
        );
    }

    // Publish for real with the shared static token; view with a JWT.
    let whip = url(&server, "/whip/cam");
    let p = Publisher::connect(
        &whip,
        PeerOptions::new(Some(VideoCodec::Vp8), true).with_token("pub-token"),
    )
    .await
    .expect("the publish token publishes");
    let whep = url(&server, "/whep/cam");
    let err = Viewer::connect(&whep, None).await.err().unwrap();
    assert_eq!(err.downcast_ref::<HttpError>().unwrap().status, 401);
    let viewer = Viewer::connect(&whep, Some(token(&[Role::View], "cam")))
        .await
        .expect("a view JWT for the stream views");

    // Admin: protected for cam*, open elsewhere.
    let path = "/api/streams/cam/restreams/no-such-target";
    assert_eq!(call(&server, "DELETE", path, None).await.status, 401);
    let a = call(&server, "DELETE", path, Some(&token(&[Role::View], "cam"))).await;
    assert_eq!(a.status, 403, "a view token cannot administer");
    assert!(a.body.contains("admin role"), "{}", a.body);
    let a = call(&server, "DELETE", path, Some("adm-token")).await;
    assert_eq!(
        a.status, 404,
        "the admin token reaches the handler: {}",
        a.body
    );
    let a = call(&server, "DELETE", "/api/streams/other/hls", None).await;
    assert!(
        passed(&a),
        "outside cam*, admin is open to this machine: {}",
        a.status
    );
    let a = call(&server, "POST", "/api/streams/cam/hls", None).await;
    assert_eq!(a.status, 401, "HLS start is an admin write");

    drop(viewer);
    p.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_expiry_signature_stream_and_role_are_checked() {
    let server = start(|c| {
        c.auth.jwt_secret = Some(SECRET.into());
        c.auth.jwt_leeway_secs = 0;
        c.auth.view = Access::Protected;
    })
    .await;
    let path = "/whep/studio";
    let cases = [
        (
            signed(
                serde_json::json!({"role": "view", "stream": "studio", "exp": now() - 60}),
                SECRET,
            ),
            401,
            "expired",
        ),
        (
            jwt::mint(
                "another-secret-another-secret-000",
                &[Role::View],
                "studio",
                HOUR,
            )
            .unwrap(),
            401,
            "signature",
        ),
        (token(&[Role::View], "other"), 403, "other streams"),
        (token(&[Role::Publish], "studio"), 403, "view role"),
        ("not-a-token".to_string(), 401, "not valid"),
    ];
    for (t, status, why) in cases {
        let a = call(&server, "POST", path, Some(&t)).await;
        assert_eq!(a.status, status, "{why}: {}", a.body);
        assert!(a.body.contains(why), "{why}: {}", a.body);
        assert!(!a.body.contains(&t), "the token is never echoed");
    }
    // A pattern token is good for every matching stream; the handler answers
    // (409: nothing is live).
    let a = call(&server, "POST", path, Some(&token(&[Role::View], "stu*"))).await;
    assert_eq!(a.status, 409, "{}", a.body);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_tokens_per_pattern() {
    let server = start(|c| {
        c.auth.publish = Access::Protected;
        c.auth.rules = vec![
            rule(Role::Publish, &["a-*"], Access::Protected, &["token-a"]),
            rule(
                Role::Publish,
                &["b-*", "c"],
                Access::Protected,
                &["token-b"],
            ),
        ];
    })
    .await;
    assert_eq!(
        call(&server, "POST", "/whip/a-1", Some("token-a"))
            .await
            .status,
        400
    );
    let a = call(&server, "POST", "/whip/a-1", Some("token-b")).await;
    assert_eq!(a.status, 401, "another pattern's token is a wrong token");
    assert_eq!(a.headers["www-authenticate"], "Bearer");
    assert_eq!(
        call(&server, "POST", "/whip/c", Some("token-b"))
            .await
            .status,
        400
    );
    assert_eq!(
        call(&server, "POST", "/whip/zzz", Some("token-a"))
            .await
            .status,
        401
    );
    server.shutdown().await;
}

/// Writes a finished recording (file + sidecar) of `stream` into `dir`.
fn fake_recording(dir: &std::path::Path, stream: &str, bytes: &[u8]) -> String {
    let stem = "2026-01-01T00-00-00Z";
    let folder = dir.join(stream);
    std::fs::create_dir_all(&folder).unwrap();
    let file = folder.join(format!("{stem}.webm"));
    std::fs::write(&file, bytes).unwrap();
    let id = format!("{stream}~{stem}");
    let meta = serde_json::json!({
        "id": id, "stream": stream, "file": format!("{stem}.webm"),
        "started_at": "2026-01-01T00:00:00Z", "ended_at": "2026-01-01T00:00:10Z",
        "duration_secs": 10.0, "size_bytes": bytes.len(), "state": "finalized",
        "video": null, "audio": {"codec": "opus", "channels": 2},
        "dropped_frames": 0, "error": null
    });
    std::fs::write(file.with_extension("json"), meta.to_string()).unwrap();
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_token_on_downloads_listings_and_hls() {
    let dir = temp_dir("access-rec");
    let secret_id = fake_recording(&dir, "secret-cam", b"secret bytes");
    let public_id = fake_recording(&dir, "public", b"public bytes");
    let d = dir.to_path_buf();
    let server = start(move |c| {
        c.record.dir = d;
        c.auth.jwt_secret = Some(SECRET.into());
        c.auth.view = Access::Protected;
        c.auth.admin_token = Some("adm".into());
        c.auth.rules = vec![rule(Role::View, &["public"], Access::Open, &[])];
    })
    .await;
    let view = token(&[Role::View], "secret-*");
    let download = format!("/recordings/{secret_id}/download");

    let a = call(&server, "GET", &download, None).await;
    assert_eq!(a.status, 401);
    assert!(!a.body.contains("secret bytes"));
    let a = call(&server, "GET", &format!("{download}?token={view}"), None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body, "secret bytes");
    let a = call(
        &server,
        "GET",
        &format!("/recordings/{public_id}/download"),
        None,
    )
    .await;
    assert_eq!((a.status, a.body.as_str()), (200, "public bytes"));

    // Listings show only what the caller may view.
    let ids = |body: &str| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        v["recordings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    let a = call(&server, "GET", "/api/recordings", None).await;
    assert_eq!(ids(&a.body), vec![public_id.clone()]);
    let a = call(
        &server,
        "GET",
        &format!("/api/recordings?token={view}"),
        None,
    )
    .await;
    assert_eq!(ids(&a.body).len(), 2, "{}", a.body);
    let a = call(&server, "GET", "/api/recordings?stream=secret-cam", None).await;
    assert_eq!(a.status, 401);
    let a = call(
        &server,
        "GET",
        &format!("/api/recordings/{secret_id}"),
        None,
    )
    .await;
    assert_eq!(a.status, 401);

    // Deleting is an admin write: a view token is refused, the admin token works.
    let path = format!("/api/recordings/{secret_id}");
    let a = call(&server, "DELETE", &path, Some(&view)).await;
    assert_eq!(a.status, 403, "a view JWT does not grant admin: {}", a.body);
    assert!(
        dir.join("secret-cam")
            .join("2026-01-01T00-00-00Z.webm")
            .exists()
    );
    assert_eq!(
        call(&server, "DELETE", &path, Some("adm")).await.status,
        204
    );

    // HLS: guarded by view; with the query token the handler answers (no output: 404).
    assert_eq!(
        call(&server, "GET", "/hls/secret-cam/index.m3u8", None)
            .await
            .status,
        401
    );
    let a = call(
        &server,
        "GET",
        &format!("/hls/secret-cam/index.m3u8?token={view}"),
        None,
    )
    .await;
    assert_eq!(a.status, 404, "{}", a.body);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_are_rate_limited_per_client_address() {
    let server = start(|c| {
        c.auth.publish_token = Some("right".into());
        c.auth.failure_burst = 3;
        c.auth.failures_per_min = 1;
        c.http.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    for _ in 0..3 {
        let a = call_with(
            &server,
            "POST",
            "/whip/x",
            Some("wrong"),
            &from("203.0.113.9"),
        )
        .await;
        assert_eq!(a.status, 401);
    }
    for t in ["wrong", "right"] {
        let a = call_with(&server, "POST", "/whip/x", Some(t), &from("203.0.113.9")).await;
        assert_eq!(a.status, 429, "blocked, even with the right token");
        let secs: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&secs), "{secs}");
    }
    let a = call_with(
        &server,
        "POST",
        "/whip/x",
        Some("right"),
        &from("203.0.113.10"),
    )
    .await;
    assert_eq!(a.status, 400, "another address is not affected");
    let a = call_with(&server, "GET", "/api/streams", None, &from("203.0.113.9")).await;
    assert_eq!(a.status, 200, "open routes stay open");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_command_mints_a_token_the_server_accepts() {
    let bin = env!("CARGO_BIN_EXE_castgate");
    let cwd = temp_dir("token-cmd");
    let run = |secret: Option<&str>| {
        let mut cmd = std::process::Command::new(bin);
        cmd.args(["token", "--role", "view", "--stream", "demo", "--ttl", "1h"])
            .env_remove("CASTGATE_JWT_SECRET")
            .current_dir(cwd.path());
        if let Some(s) = secret {
            cmd.env("CASTGATE_JWT_SECRET", s);
        }
        cmd.output().unwrap()
    };
    let out = run(None);
    assert_eq!(out.status.code(), Some(2), "no secret: exit 2");
    assert!(String::from_utf8_lossy(&out.stderr).contains("jwt_secret"));

    let out = run(Some(SECRET));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let v = jwt::Verifier::from_config(&castgate::config::AuthConfig {
        jwt_secret: Some(SECRET.into()),
        ..Default::default()
    })
    .unwrap()
    .unwrap();
    let claims = v.verify(&t).expect("verifies");
    assert!(claims.grants(Role::View) && !claims.grants(Role::Publish));
    assert_eq!(claims.stream_patterns(), vec!["demo"]);
    assert!((now() + 3500..=now() + 3700).contains(&claims.exp));

    let server = start(|c| {
        c.auth.jwt_secret = Some(SECRET.into());
        c.auth.view = Access::Protected;
    })
    .await;
    assert_eq!(
        call(&server, "POST", "/whep/demo", Some(&t)).await.status,
        409
    );
    assert_eq!(
        call(&server, "POST", "/whep/other", Some(&t)).await.status,
        403
    );
    server.shutdown().await;
}

/// A local callback receiver: allows stream `ok`, denies others with a reason.
async fn callback_receiver(seen: Arc<Mutex<Vec<serde_json::Value>>>) -> std::net::SocketAddr {
    let app = axum::Router::new().route(
        "/decide",
        axum::routing::post(move |axum::Json(q): axum::Json<serde_json::Value>| {
            let seen = seen.clone();
            async move {
                let ok = q["stream"] == "ok";
                seen.lock().unwrap().push(q);
                if ok {
                    (axum::http::StatusCode::OK, "fine")
                } else {
                    (axum::http::StatusCode::FORBIDDEN, "not on the guest list")
                }
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_allows_denies_and_fails_closed() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let addr = callback_receiver(seen.clone()).await;
    let server = start(|c| c.auth.callback_url = Some(format!("http://{addr}/decide"))).await;
    let a = call(&server, "POST", "/whip/ok", None).await;
    assert_eq!(a.status, 400, "allowed: the handler answers: {}", a.body);
    let a = call(&server, "POST", "/whep/nope", Some("some-token")).await;
    assert_eq!(a.status, 403);
    assert_eq!(a.body.trim(), "not on the guest list");
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0]["action"], "publish");
        assert_eq!(seen[0]["stream"], "ok");
        assert_eq!(seen[0]["client_address"], "127.0.0.1");
        assert_eq!(seen[0]["token_present"], false);
        assert_eq!(seen[1]["action"], "view");
        assert_eq!(seen[1]["token_present"], true);
        assert!(
            !seen[1].to_string().contains("some-token"),
            "the token is not sent"
        );
    }
    server.shutdown().await;

    let dead = free_port();
    let server =
        start(|c| c.auth.callback_url = Some(format!("http://127.0.0.1:{dead}/decide"))).await;
    let a = call(&server, "POST", "/whip/ok", None).await;
    assert_eq!(a.status, 503, "no callback, no session: {}", a.body);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_over_https_with_a_self_signed_certificate() {
    let dir = temp_dir("tls");
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    std::fs::write(dir.join("cert.pem"), &cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), &key_pem).unwrap();
    let d = dir.to_path_buf();
    let server = start(move |c| {
        c.http.tls_cert = Some(d.join("cert.pem"));
        c.http.tls_key = Some(d.join("key.pem"));
        c.auth.publish_token = Some("pub".into());
    })
    .await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let base = format!("https://localhost:{}", server.http_addr().port());
    let offer = make_offer(&PeerOptions::new(Some(VideoCodec::Vp8), true), false).unwrap();
    let r = client
        .post(format!("{base}/whip/secure"))
        .header("content-type", "application/sdp")
        .bearer_auth("pub")
        .body(offer.sdp.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with("/whip/secure/"), "{location}");
    assert!(r.text().await.unwrap().starts_with("v=0"), "an SDP answer");
    let r = client
        .delete(format!("{base}{location}"))
        .bearer_auth("pub")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Plain HTTP on the TLS port gets no answer, and a client that does not
    // trust the certificate cannot connect.
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    let http = format!("http://127.0.0.1:{}/healthz", server.http_addr().port());
    assert!(plain.get(http).send().await.is_err());
    assert!(plain.get(format!("{base}/healthz")).send().await.is_err());
    assert_eq!(
        client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    server.shutdown().await;
}

/// Log lines the gateway writes while a test captures them. The test binary
/// holds every end-to-end test, so the subscriber is global and off between
/// captures: other tests pay no debug formatting and the buffer stays bounded
/// by one capture (which may hold lines of tests running beside it: more
/// lines searched for leaked secrets, never fewer).
struct LogCapture {
    lines: Arc<Mutex<Vec<u8>>>,
    filter: tracing_subscriber::reload::Handle<
        tracing_subscriber::EnvFilter,
        tracing_subscriber::Registry,
    >,
}

impl LogCapture {
    /// The capture of this test binary, installed on first use.
    fn global() -> &'static LogCapture {
        static CAPTURE: OnceLock<LogCapture> = OnceLock::new();
        CAPTURE.get_or_init(|| {
            use tracing_subscriber::layer::SubscriberExt;
            let lines = Arc::new(Mutex::new(Vec::new()));
            let writer = lines.clone();
            let (filter, handle) =
                tracing_subscriber::reload::Layer::new(tracing_subscriber::EnvFilter::new("off"));
            let fmt = tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || LogWriter(writer.clone()));
            let subscriber = tracing_subscriber::registry().with(filter).with(fmt);
            let _ = tracing::subscriber::set_global_default(subscriber);
            LogCapture {
                lines,
                filter: handle,
            }
        })
    }

    /// Starts capturing debug lines (castgate's; str0m, hyper and reqwest at warn).
    fn start(&self) {
        self.lines.lock().unwrap().clear();
        self.set("debug,str0m=warn,hyper=warn,reqwest=warn");
    }

    /// Stops capturing and returns what was written.
    fn stop(&self) -> String {
        self.set("off");
        String::from_utf8_lossy(&std::mem::take(&mut *self.lines.lock().unwrap())).into_owned()
    }

    fn set(&self, directives: &str) {
        self.filter
            .reload(tracing_subscriber::EnvFilter::new(directives))
            .expect("the capture's subscriber is installed");
    }
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_reach_the_logs() {
    let capture = LogCapture::global();
    capture.start();
    let server = start(|c: &mut Config| {
        c.auth.view_token = Some("VIEWSECRET123".into());
        c.auth.jwt_secret = Some(SECRET.into());
    })
    .await;
    let jwt = token(&[Role::Publish], "x");
    for path in [
        "/hls/x/index.m3u8?token=QUERYSECRET456".to_string(),
        "/hls/x/index.m3u8?v=1&token=VIEWSECRET123".to_string(),
        format!("/hls/x/index.m3u8?token={jwt}"),
    ] {
        call(&server, "GET", &path, None).await;
    }
    call(&server, "POST", "/whep/x", Some("HEADERSECRET789")).await;
    server.shutdown().await;
    let text = capture.stop();
    assert!(
        text.contains("token=****"),
        "requests are logged, redacted: {text}"
    );
    assert!(text.contains("access denied"), "denials are logged");
    for secret in ["QUERYSECRET456", "VIEWSECRET123", "HEADERSECRET789", &jwt] {
        assert!(!text.contains(secret), "{secret} leaked into the logs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_playlist_and_segments_with_a_query_token() {
    let (video, audio) = tokio::task::spawn_blocking(|| {
        (
            common::media::video_frames(VideoCodec::H264, 4),
            common::media::opus_packets(4),
        )
    })
    .await
    .unwrap();
    let dir = temp_dir("access-hls");
    let d = dir.to_path_buf();
    let server = start(move |c| {
        c.restream.hls_dir = d;
        c.restream.hls_time_secs = 1.0;
        c.restream.hls_streams = vec!["cam".into()];
        c.auth.jwt_secret = Some(SECRET.into());
        c.auth.view = Access::Protected;
    })
    .await;
    let p = common::gateway::publisher(&server, "cam", Some(VideoCodec::H264), true).await;
    p.play(&video, &audio).await.unwrap();
    let t = token(&[Role::View], "cam");
    let playlist = format!("/hls/cam/index.m3u8?token={t}");
    assert_eq!(
        call(&server, "GET", "/hls/cam/index.m3u8", None)
            .await
            .status,
        401
    );
    let a = call(&server, "GET", &playlist, None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.starts_with("#EXTM3U"), "{}", a.body);
    // Segment names carry the token, so a player that resolves them
    // relative to the playlist (dropping its query) still gets them.
    let segments: Vec<&str> = a
        .body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    assert!(!segments.is_empty(), "{}", a.body);
    for seg in &segments {
        assert!(seg.ends_with(&format!("?token={t}")), "{seg}");
        let s = call(&server, "GET", &format!("/hls/cam/{seg}"), None).await;
        assert_eq!(s.status, 200, "{seg}");
        assert_eq!(s.headers["content-type"], "video/mp2t");
    }
    let bare = segments[0].split('?').next().unwrap();
    assert_eq!(
        call(&server, "GET", &format!("/hls/cam/{bare}"), None)
            .await
            .status,
        401
    );
    p.close().await;
    server.shutdown().await;
}

/// Server-wide routes (metrics, the event stream) belong to the admin role:
/// open to this machine by default, and with admin protected only a grant
/// for every stream passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_events_follow_the_admin_role() {
    let open = start(|_| {}).await;
    assert_eq!(call(&open, "GET", "/metrics", None).await.status, 200);
    open.shutdown().await;

    let server = start(|c| {
        c.auth.jwt_secret = Some(SECRET.into());
        c.auth.admin_token = Some("adm".into());
    })
    .await;
    let a = call(&server, "GET", "/metrics", None).await;
    assert_eq!(a.status, 401, "{}", a.body);
    let a = call(&server, "GET", "/api/events", None).await;
    assert_eq!(a.status, 401, "{}", a.body);
    let a = call(&server, "GET", "/metrics", Some("adm")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.contains("# TYPE"), "Prometheus text");
    // An admin grant for one stream is not a grant for the whole server.
    let one = token(&[Role::Admin], "studio-1");
    let a = call(&server, "GET", "/metrics", Some(&one)).await;
    assert!(matches!(a.status, 401 | 403), "{} {}", a.status, a.body);
    let all = token(&[Role::Admin], "*");
    let a = call(&server, "GET", "/metrics", Some(&all)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    server.shutdown().await;
}
