//! The HTTP face of castgate: WHIP, WHEP and the JSON API, with CORS, body
//! limits and rate limiting applied to all of it.

pub mod api;
pub mod auth;
pub mod error;
pub mod hls;
pub mod ops;
pub mod pages;
pub mod ratelimit;
pub mod recordings;
pub mod restreams;
pub mod session;
pub mod whep;
pub mod whip;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::routing::{get, post};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::record::Recorder;
use crate::restream::Restreamer;
use crate::rtc::Engine;
use crate::stream::Hub;
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
}

/// Builds the router. Serve it with `into_make_service_with_connect_info::<SocketAddr>()`
/// (the rate limiter keys on the client address).
pub fn router(state: AppState) -> Router {
    let limiter = Arc::new(RateLimiter::new(
        state.config.http.rate_limit_per_sec,
        state.config.http.rate_limit_burst,
    ));
    let max_body = state.config.http.max_body_bytes;
    let cors = cors(&state.config);
    let rtc_config = Arc::new(state.config.rtc.clone());
    let metrics = state.metrics.clone();
    let app = Router::new()
        .route("/whip/{stream}", post(whip::post).options(whip::options))
        .route(
            "/whip/{stream}/{session}",
            axum::routing::patch(whip::patch).delete(whip::delete),
        )
        .route("/whep/{stream}", post(whep::post).options(whep::options))
        .route(
            "/whep/{stream}/{session}",
            axum::routing::patch(whep::patch).delete(whep::delete),
        )
        .route("/api/streams", get(api::streams))
        .route("/api/streams/{name}", get(api::stream))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/api/events", get(ops::events))
        .route("/api/recordings", get(recordings::list))
        .route(
            "/api/recordings/{id}",
            get(recordings::one).delete(recordings::delete),
        )
        .route("/recordings/{id}/download", get(recordings::download))
        .route("/api/restreams", get(restreams::list_all))
        .route(
            "/api/streams/{name}/restreams",
            get(restreams::list).post(restreams::add),
        )
        .route(
            "/api/streams/{name}/restreams/{id}",
            get(restreams::one).delete(restreams::delete),
        )
        .route(
            "/api/streams/{name}/hls",
            get(hls::get).post(hls::start).delete(hls::stop),
        )
        .route("/hls/{stream}/{file}", get(hls::file))
        .merge(pages::router())
        .with_state(state)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(
            limiter,
            ratelimit::limit,
        ))
        .layer(cors)
        .layer(axum::middleware::from_fn_with_state(
            rtc_config,
            advertise_post,
        ))
        .layer(TraceLayer::new_for_http());
    match metrics {
        // Outermost: every answer counts, refusals by inner layers included.
        Some(m) => app.layer(axum::middleware::from_fn_with_state(
            m,
            crate::metrics::track,
        )),
        None => app,
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
            for l in session::links_now(&rtc) {
                h.append(header::LINK, l);
            }
        }
    }
    resp
}

fn cors(config: &Config) -> CorsLayer {
    let origins = &config.http.cors_origins;
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| o.parse().ok()))
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
