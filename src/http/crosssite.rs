//! Cross-site requests to the admin routes are refused.
//!
//! Players and publishers on any site may call WHIP, WHEP, HLS and the API's
//! reads (CORS `*` by default). The admin routes — the API's writes,
//! `/api/events` and `/metrics` — are different: a page on another site,
//! opened by someone on this machine (where the admin role needs no token by
//! default) or by someone whose browser holds a token, must not be able to
//! use them. So, before CORS and routing:
//!
//! * a preflight for an admin route from an origin not in
//!   `http.admin_origins` gets `403` without CORS headers (the browser stops);
//! * an admin request that its browser marks as cross-site
//!   (`Sec-Fetch-Site`, else an `Origin` that is not this server's) gets `403`.
//!
//! And once the admin guard has let a write in, its body must be
//! `Content-Type: application/json` ([`require_json`]), so not even an old
//! browser's "simple" cross-site form post, which needs no preflight, can
//! carry one.
//!
//! Clients that are not browsers send neither header and are unaffected;
//! castgate's own pages are same-origin.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// Origins allowed to call the admin routes from their pages.
#[derive(Debug, Clone, Default)]
pub struct AdminOrigins(Arc<[String]>);

impl AdminOrigins {
    /// From `http.admin_origins`.
    pub fn new(origins: &[String]) -> AdminOrigins {
        AdminOrigins(origins.iter().map(|o| normalise(o)).collect())
    }

    fn allows(&self, origin: &str) -> bool {
        let origin = normalise(origin);
        self.0.contains(&origin)
    }
}

fn normalise(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// Whether `method path` is an admin route: a write under `/api/`, or an
/// admin read (the event stream, the metrics, a stream's sessions and
/// recording state).
pub fn is_admin_route(method: &Method, path: &str) -> bool {
    let admin_read = path == "/metrics"
        || path == "/api/events"
        || (path.starts_with("/api/streams/")
            && (path.ends_with("/sessions") || path.ends_with("/recording")));
    admin_read
        || (path.starts_with("/api/")
            && !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS))
}

/// Middleware (outside CORS): refuses cross-site preflights and requests to
/// the admin routes.
pub async fn guard(State(allowed): State<AdminOrigins>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let path = req.uri().path();
    if req.method() == Method::OPTIONS
        && let Some(requested) = headers
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|v| v.to_str().ok())
            .and_then(|m| m.parse::<Method>().ok())
        && is_admin_route(&requested, path)
        && !origin.is_some_and(|o| allowed.allows(o))
    {
        return refuse(origin);
    }
    if is_admin_route(req.method(), path)
        && cross_site(headers)
        && !origin.is_some_and(|o| allowed.allows(o))
    {
        return refuse(origin);
    }
    next.run(req).await
}

/// A write (`POST`, `PUT`, `PATCH`, `DELETE`) with a body must carry
/// `Content-Type: application/json`; `415` otherwise.
pub fn require_json(method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
    let write = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if write && has_body(headers) && !is_json(headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the API takes JSON: send Content-Type: application/json",
        ));
    }
    Ok(())
}

fn refuse(origin: Option<&str>) -> Response {
    let shown = origin
        .filter(|o| o.len() <= 200)
        .map_or_else(|| "another site".to_string(), |o| format!("{o:?}"));
    ApiError::new(
        StatusCode::FORBIDDEN,
        format!(
            "cross-site calls to the admin API (its writes, /api/events, /metrics) are refused; \
             to let pages on {shown} make them, add the origin to http.admin_origins"
        ),
    )
    .into_response()
}

/// Whether a browser marked the request as coming from another site:
/// `Sec-Fetch-Site` (set by the browser, out of the page's reach) when
/// present, else an `Origin` whose host differs from the request's `Host`.
fn cross_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return !matches!(site.as_bytes(), b"same-origin" | b"none");
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    !host.is_some_and(|h| same_authority(origin, h))
}

/// Whether the origin `scheme://host[:port]` names the authority `host`
/// (a default port written or not).
fn same_authority(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let default = match scheme.to_ascii_lowercase().as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => return false,
    };
    let strip = |a: &str| {
        let a = a.to_ascii_lowercase();
        a.strip_suffix(default).map_or(a.clone(), str::to_string)
    };
    strip(authority) == strip(host)
}

fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn admin_routes_are_the_api_writes_events_and_metrics() {
        assert!(is_admin_route(&Method::DELETE, "/api/recordings/a~b"));
        assert!(is_admin_route(&Method::POST, "/api/streams/x/restreams"));
        assert!(is_admin_route(&Method::GET, "/api/events"));
        assert!(is_admin_route(&Method::GET, "/metrics"));
        assert!(!is_admin_route(&Method::GET, "/api/streams"));
        assert!(is_admin_route(&Method::GET, "/api/streams/x/sessions"));
        assert!(is_admin_route(&Method::GET, "/api/streams/x/recording"));
        assert!(is_admin_route(&Method::DELETE, "/api/streams/x"));
        assert!(!is_admin_route(&Method::POST, "/whip/x"));
        assert!(!is_admin_route(&Method::DELETE, "/whep/x/abc"));
    }

    #[test]
    fn cross_site_by_fetch_metadata_else_by_origin() {
        assert!(cross_site(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(cross_site(&headers(&[("sec-fetch-site", "same-site")])));
        assert!(!cross_site(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(!cross_site(&headers(&[("sec-fetch-site", "none")])));
        assert!(!cross_site(&HeaderMap::new()), "curl and friends");
        assert!(cross_site(&headers(&[
            ("origin", "http://evil.example"),
            ("host", "127.0.0.1:8080")
        ])));
        assert!(cross_site(&headers(&[("origin", "null"), ("host", "x")])));
        assert!(!cross_site(&headers(&[
            ("origin", "http://127.0.0.1:8080"),
            ("host", "127.0.0.1:8080")
        ])));
        assert!(!cross_site(&headers(&[
            ("origin", "https://Castgate.example.com"),
            ("host", "castgate.example.com:443")
        ])));
    }

    #[test]
    fn allowed_origins_are_compared_whole() {
        let a = AdminOrigins::new(&["https://dash.example.com/".into()]);
        assert!(a.allows("https://dash.example.com"));
        assert!(a.allows("HTTPS://DASH.example.com"));
        assert!(!a.allows("https://dash.example.com.evil.example"));
        assert!(!a.allows("http://dash.example.com"));
    }

    #[test]
    fn bodies_must_be_json() {
        let text = headers(&[("content-type", "text/plain"), ("content-length", "5")]);
        assert!(require_json(&Method::POST, &text).is_err());
        assert!(
            require_json(&Method::GET, &text).is_ok(),
            "reads are not writes"
        );
        assert!(
            require_json(&Method::DELETE, &HeaderMap::new()).is_ok(),
            "no body"
        );
        assert!(has_body(&headers(&[("content-length", "12")])));
        assert!(!has_body(&headers(&[("content-length", "0")])));
        assert!(has_body(&headers(&[("transfer-encoding", "chunked")])));
        assert!(is_json(&headers(&[(
            "content-type",
            "application/json; charset=utf-8"
        )])));
        assert!(!is_json(&headers(&[("content-type", "text/plain")])));
        assert!(!is_json(&HeaderMap::new()));
    }
}
