//! The HTTP face of castgate: WHIP, WHEP and the JSON API, with CORS, body
//! limits and rate limiting applied to all of it, and each route guarded by
//! the role it needs (`auth`).

pub mod api;
pub mod auth;
pub mod client;
pub mod controls;
pub mod crosssite;
pub mod error;
pub mod exports;
pub mod forward;
pub mod hls;
pub mod openapi;
pub mod ops;
pub mod pages;
pub mod ratelimit;
pub mod recordings;
pub mod relay;
pub mod restreams;
pub mod serve;
pub mod session;
pub mod snapshot;
pub mod tls;
pub mod whep;
pub mod whip;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::routing::{get, patch, post};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;

use crate::config::{Config, Role};
use crate::record::Recorder;
use crate::restream::Restreamer;
use crate::rtc::Engine;
use crate::stream::Hub;
use auth::{Gate, Scope};
use ratelimit::RateLimiter;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The configuration in force.
    pub config: Arc<Config>,
    /// Live streams.
    pub hub: Arc<Hub>,
    /// WebRTC sessions.
    pub engine: Arc<Engine>,
    /// Recordings.
    pub recorder: Arc<Recorder>,
    /// Restream targets.
    pub restreamer: Arc<Restreamer>,
    /// Prometheus metrics (`None` when `metrics.enabled` is off).
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Access control.
    pub gate: Arc<Gate>,
    /// Places for `/api/events` clients (`events.max_sse_clients`).
    pub sse_clients: Arc<tokio::sync::Semaphore>,
    /// This node's membership of a cluster (`None` on a single node).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Export jobs (recordings encoded to H.264 MP4).
    pub exports: Arc<crate::record::export::Exports>,
    /// Pictures of live streams.
    pub snapshots: Arc<crate::stream::snapshot::Snapshots>,
}

/// Builds the router. Serve it with [`serve::serve`], which gives every
/// request its connection's address (`ConnectInfo<SocketAddr>`: rate limits
/// and access decisions key on it) and bounds connections in time and number.
pub fn router(state: AppState) -> Router {
    let limiter = Arc::new(RateLimiter::new(
        state.config.http.rate_limit_per_sec,
        state.config.http.rate_limit_burst,
    ));
    let max_body = state.config.http.max_body_bytes;
    let cors = cors(&state.config);
    let rtc_config = Arc::new(state.config.rtc.clone());
    let metrics = state.metrics.clone();
    let clients = client::ClientConfig {
        tls: state.config.http.tls_cert.is_some(),
        trusted_proxies: state.config.http.trusted_proxies.clone().into(),
    };
    let admin_origins = crosssite::AdminOrigins::new(&state.config.http.admin_origins);
    let metrics_access = auth::MetricsAccess {
        token: state.config.metrics.token.as_deref().map(Arc::from),
        networks: state.config.metrics.allow_networks.clone().into(),
    };
    let g = state.gate.clone();
    warn_if_admin_is_open(&state.config);
    // Who may do what: every route that touches a stream names its role here.
    let publish = g.guard(Role::Publish, Scope::Stream, false);
    let view = g.guard(Role::View, Scope::Stream, false);
    let view_rec = g.guard(Role::View, Scope::Recording, false);
    let admin = g.guard(Role::Admin, Scope::Stream, false);
    let export = g.guard(state.config.record.export_role, Scope::Recording, false);
    let app = Router::new()
        .route(
            "/whip/{stream}",
            post(whip::post.layer(g.guard(Role::Publish, Scope::Stream, true)))
                .options(whip::options),
        )
        .route(
            "/whip/{stream}/{session}",
            patch(whip::patch.layer(publish.clone())).delete(whip::delete.layer(publish)),
        )
        .route(
            "/whep/{stream}",
            post(whep::post.layer(g.guard(Role::View, Scope::Stream, true))).options(whep::options),
        )
        .route(
            "/whep/{stream}/{session}",
            patch(whep::patch.layer(view.clone())).delete(whep::delete.layer(view.clone())),
        )
        .route("/api/streams", get(api::streams))
        .route(
            "/api/streams/{name}",
            get(api::stream).delete(controls::end_stream.layer(admin.clone())),
        )
        .route(
            "/api/streams/{name}/snapshot.jpg",
            get(snapshot::get.layer(view.clone())),
        )
        .route(
            "/api/streams/{name}/sessions",
            get(controls::sessions.layer(admin.clone())),
        )
        .route(
            "/api/streams/{name}/sessions/{id}",
            axum::routing::delete(controls::end_session.layer(admin.clone())),
        )
        .route(
            "/api/streams/{name}/recording",
            get(controls::recording.layer(admin.clone()))
                .post(controls::start_recording.layer(admin.clone()))
                .delete(controls::stop_recording.layer(admin.clone())),
        )
        .route("/api/cluster", get(api::cluster))
        .route("/cluster/relay/{stream}", post(relay::post))
        .route(
            "/cluster/relay/{stream}/{session}",
            axum::routing::delete(relay::delete),
        )
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/api/openapi.json", get(openapi::serve))
        .route(
            "/metrics",
            get(ops::metrics.layer(g.metrics_guard(metrics_access))),
        )
        .route(
            "/api/events",
            get(ops::events.layer(g.guard(Role::Admin, Scope::Server, false))),
        )
        .route(
            "/api/recordings",
            get(recordings::list.layer(g.guard(Role::View, Scope::QueryStream, false))),
        )
        .route(
            "/api/recordings/{id}",
            get(recordings::one.layer(view_rec.clone())).delete(recordings::delete.layer(g.guard(
                Role::Admin,
                Scope::Recording,
                false,
            ))),
        )
        .route(
            "/recordings/{id}/download",
            get(recordings::download.layer(view_rec.clone())),
        )
        .route(
            "/recordings/{id}/poster.jpg",
            get(recordings::poster.layer(view_rec.clone())),
        )
        .route(
            "/recordings/{id}/strip.jpg",
            get(recordings::strip.layer(view_rec.clone())),
        )
        .route(
            "/api/recordings/{id}/exports",
            get(exports::list.layer(view_rec)).post(exports::start.layer(export.clone())),
        )
        .route(
            "/api/recordings/{id}/exports/{audio}",
            axum::routing::delete(exports::cancel.layer(export)),
        )
        .route("/api/restreams", get(restreams::list_all))
        .route(
            "/api/streams/{name}/restreams",
            get(restreams::list).post(restreams::add.layer(admin.clone())),
        )
        .route(
            "/api/streams/{name}/restreams/{id}",
            get(restreams::one).delete(restreams::delete.layer(admin.clone())),
        )
        .route(
            "/api/streams/{name}/hls",
            get(hls::get)
                .post(hls::start.layer(admin.clone()))
                .delete(hls::stop.layer(admin)),
        )
        .route("/hls/{stream}/{file}", get(hls::file.layer(view)))
        .merge(pages::router())
        .with_state(state.clone())
        // In a cluster: a stream's controls and HLS files go to its origin.
        .layer(axum::middleware::from_fn_with_state(
            (state, Arc::new(forward::Forwarder::new(max_body))),
            forward::layer,
        ))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(
            limiter,
            ratelimit::limit,
        ))
        .layer(axum::middleware::from_fn_with_state(clients, client::layer))
        .layer(cors)
        .layer(axum::middleware::from_fn_with_state(
            admin_origins,
            crosssite::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            rtc_config,
            advertise_post,
        ))
        .layer(TraceLayer::new_for_http().make_span_with(
            // The default span shows the whole URI: a `?token=` must not reach logs.
            |req: &axum::extract::Request| {
                tracing::debug_span!(
                    "request",
                    method = %req.method(),
                    uri = %auth::redacted_uri(req.uri()),
                    version = ?req.version(),
                )
            },
        ));
    match metrics {
        // Outermost: every answer counts, refusals by inner layers included.
        Some(m) => app.layer(axum::middleware::from_fn_with_state(
            m,
            crate::metrics::track,
        )),
        None => app,
    }
}

/// Opening the admin role to everyone must be a deliberate choice: say so
/// loudly at start-up.
fn warn_if_admin_is_open(config: &Config) {
    let open_rule = config
        .auth
        .effective_rules()
        .iter()
        .any(|r| r.role == Role::Admin && r.access == crate::config::Access::Open);
    if config.auth.admin == crate::config::Access::Open || open_rule {
        tracing::warn!(
            listen = %config.http.listen,
            "the admin role (the API's writes: restream targets, HLS, deleting recordings; \
             /api/events) is open to anyone who can reach this port (auth.admin = \"open\"): \
             set auth.admin_token and auth.admin = \"protected\" (or \"local\") unless that is meant"
        );
    }
}

/// The CORS layer answers preflight OPTIONS itself; make those answers still
/// say what a WHIP/WHEP endpoint accepts (RFC 9725 §4.4).
async fn advertise_post(
    axum::extract::State(rtc): axum::extract::State<Arc<crate::config::RtcConfig>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let endpoint = req.method() == Method::OPTIONS
        && (req.uri().path().starts_with("/whip/") || req.uri().path().starts_with("/whep/"));
    let mut resp = next.run(req).await;
    if endpoint && resp.status().is_success() {
        let h = resp.headers_mut();
        if !h.contains_key("accept-post") {
            h.insert("accept-post", HeaderValue::from_static(session::SDP));
            for l in session::links_without_credentials(&rtc) {
                h.append(header::LINK, l);
            }
        }
    }
    resp
}

/// CORS for what players and publishers on other sites need; admin routes
/// are kept to `http.admin_origins` by [`crosssite::guard`] before this runs.
fn cors(config: &Config) -> CorsLayer {
    let origins = &config.http.cors_origins;
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .chain(&config.http.admin_origins)
                .filter_map(|o| o.parse().ok()),
        )
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
        ])
        .expose_headers([
            header::LOCATION,
            header::ETAG,
            header::LINK,
            header::RETRY_AFTER,
            HeaderName::from_static("accept-patch"),
            HeaderName::from_static("accept-post"),
        ])
}
