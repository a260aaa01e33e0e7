//! In a cluster, requests about a stream that another node carries are
//! passed on to that node (its origin): the operator's controls
//! (`DELETE /api/streams/{name}`, its sessions, recording, restream targets
//! and HLS), its snapshot and the HLS files. The origin decides them with its own rules:
//! the client's token goes along, and a `Forwarded` header names the client,
//! so the origin never takes a forwarded request for one from its own
//! machine. A request is passed on once at most (`x-castgate-forwarded-by`).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt as _;

use super::AppState;
use super::error::ApiError;
use crate::names::StreamName;

/// Marks a request one node passed to another (its value: the node's id).
pub const FORWARDED_BY: &str = "x-castgate-forwarded-by";
/// The whole exchange with the origin, body included.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Request headers passed on (the rest is the connection's own business).
const PASSED: [HeaderName; 8] = [
    header::AUTHORIZATION,
    header::CONTENT_TYPE,
    header::ACCEPT,
    header::RANGE,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_RANGE,
];

/// The client of the forwarding layer (no proxy, no redirects followed).
#[derive(Clone)]
pub struct Forwarder {
    http: reqwest::Client,
    max_body: usize,
}

impl Forwarder {
    /// A forwarder passing on bodies up to `max_body` bytes.
    pub fn new(max_body: usize) -> Forwarder {
        Forwarder {
            http: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(TIMEOUT)
                .build()
                .unwrap_or_default(),
            max_body,
        }
    }
}

/// The stream a path is about, if it is one of the paths passed on.
fn stream_of(method: &axum::http::Method, path: &str) -> Option<StreamName> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let name = match parts.as_slice() {
        ["api", "streams", name] if method == axum::http::Method::DELETE => name,
        [
            "api",
            "streams",
            name,
            "restreams" | "hls" | "recording" | "sessions" | "snapshot.jpg",
            ..,
        ] => name,
        ["hls", name, _file] => name,
        _ => return None,
    };
    StreamName::parse(name).ok()
}

/// The layer: passes the request on to the stream's origin when it is
/// another node, else lets this node answer.
pub async fn layer(
    State((state, fwd)): State<(AppState, Arc<Forwarder>)>,
    req: Request,
    next: Next,
) -> Response {
    let Some(cluster) = state.cluster.clone() else {
        return next.run(req).await;
    };
    if req.headers().contains_key(FORWARDED_BY) {
        return next.run(req).await;
    }
    let Some(name) = stream_of(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    if state.hub.get(&name).is_some_and(|s| s.origin().is_none()) {
        return next.run(req).await;
    }
    let origin = match cluster.origin(&name).await {
        Ok(Some(o)) if o.node != cluster.node_id() => o,
        // Not live anywhere else (or Redis away): this node answers.
        _ => return next.run(req).await,
    };
    match pass_on(&fwd, cluster.node_id(), &origin, req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

async fn pass_on(
    fwd: &Forwarder,
    node: &str,
    origin: &crate::cluster::Claim,
    req: Request,
) -> Result<Response, ApiError> {
    let client = req
        .extensions()
        .get::<super::client::Client>()
        .map(|c| c.ip.to_string())
        .unwrap_or_else(|| "unknown".into());
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let url = format!("{}{path}", origin.url.trim_end_matches('/'));
    let method = req.method().clone();
    let mut out = fwd.http.request(method, &url);
    for h in &PASSED {
        for v in req.headers().get_all(h) {
            out = out.header(h, v);
        }
    }
    // RFC 7239: quoted, IPv6 in brackets.
    let quoted = if client.contains(':') {
        format!("\"[{client}]\"")
    } else {
        format!("\"{client}\"")
    };
    out = out
        .header(header::FORWARDED, format!("for={quoted}"))
        .header(FORWARDED_BY, node);
    let body = axum::body::to_bytes(req.into_body(), fwd.max_body)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {} bytes", fwd.max_body),
            )
        })?;
    if !body.is_empty() {
        out = out.body(body);
    }
    let resp = out.send().await.map_err(|e| {
        tracing::warn!(node = %origin.node, error = %e, "passing a request on to the stream's origin failed");
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!(
                "the stream is carried by node {:?}, which could not be reached",
                origin.node
            ),
        )
    })?;
    let status = resp.status();
    let mut answer = Response::builder().status(status.as_u16());
    for (k, v) in resp.headers() {
        let hop = matches!(
            k.as_str(),
            "connection" | "keep-alive" | "transfer-encoding" | "upgrade" | "proxy-connection"
        );
        if !hop && let Ok(v) = HeaderValue::from_bytes(v.as_bytes()) {
            answer = answer.header(k.as_str(), v);
        }
    }
    answer = answer.header("x-castgate-node", origin.node.as_str());
    let stream = resp.bytes_stream().map_err(std::io::Error::other);
    answer
        .body(Body::from_stream(stream))
        .map_err(|_| ApiError::new(StatusCode::BAD_GATEWAY, "the origin's answer was unusable"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    #[test]
    fn only_a_streams_controls_and_hls_files_are_passed_on() {
        let on = |m: Method, p: &str| stream_of(&m, p).map(|n| n.to_string());
        assert_eq!(on(Method::DELETE, "/api/streams/a"), Some("a".into()));
        assert_eq!(
            on(Method::GET, "/api/streams/a"),
            None,
            "served from the directory"
        );
        assert_eq!(
            on(Method::POST, "/api/streams/a/restreams"),
            Some("a".into())
        );
        assert_eq!(
            on(Method::DELETE, "/api/streams/a/restreams/1-x"),
            Some("a".into())
        );
        assert_eq!(on(Method::POST, "/api/streams/a/hls"), Some("a".into()));
        assert_eq!(on(Method::GET, "/api/streams/a/sessions"), Some("a".into()));
        assert_eq!(
            on(Method::POST, "/api/streams/a/recording"),
            Some("a".into())
        );
        assert_eq!(on(Method::GET, "/hls/a/index.m3u8"), Some("a".into()));
        assert_eq!(on(Method::POST, "/whip/a"), None);
        assert_eq!(on(Method::GET, "/api/recordings"), None);
        assert_eq!(on(Method::GET, "/api/streams/a/other"), None);
        assert_eq!(
            on(Method::GET, "/api/streams/..%2F/hls"),
            None,
            "not a name"
        );
    }
}
