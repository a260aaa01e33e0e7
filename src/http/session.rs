//! What WHIP and WHEP share: answering an offer with 201, and the session
//! resource's PATCH (trickle ICE, ICE restart) and DELETE.

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use crate::config::IceServer;
use crate::names::StreamName;
use crate::rtc::{Answer, PatchOp, PatchReply, RoleKind};

/// Media type of an SDP offer or answer.
pub const SDP: &str = "application/sdp";
/// Media type of a trickle ICE / ICE restart fragment (RFC 8840).
pub const SDPFRAG: &str = "application/trickle-ice-sdpfrag";

/// Validates the `{stream}` path segment.
pub fn stream_name(raw: &str) -> Result<StreamName, ApiError> {
    StreamName::parse(raw).map_err(|e| ApiError::bad_request(format!("invalid stream name: {e}")))
}

/// Requires the request's `Content-Type` to be `want` (parameters ignored).
pub fn require_content_type(headers: &HeaderMap, want: &str) -> Result<(), ApiError> {
    let got = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    match got {
        Some(g) if g == want => Ok(()),
        Some(g) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type must be {want}, not {g}"),
        )),
        None => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type must be {want}"),
        )),
    }
}

/// The body as UTF-8 text.
pub fn text(body: &Bytes) -> Result<&str, ApiError> {
    std::str::from_utf8(body).map_err(|_| ApiError::bad_request("the body is not UTF-8 text"))
}

/// `Link` header values for the configured ICE servers (RFC 9725 §4.6).
/// Servers with a TURN REST `secret` get credentials minted now, valid for
/// `ttl` (user name `EXPIRY:castgate`, password base64(HMAC-SHA1(secret,
/// user name)), as coturn's `use-auth-secret` checks them).
pub fn ice_server_links(
    servers: &[IceServer],
    now: std::time::SystemTime,
    ttl: std::time::Duration,
) -> Vec<HeaderValue> {
    servers
        .iter()
        .filter_map(|s| {
            let mut v = format!("<{}>; rel=\"ice-server\"", s.url);
            let minted = s
                .secret
                .as_ref()
                .map(|secret| turn_rest_credentials(secret, now, ttl));
            let (user, pass) = match (&minted, &s.username, &s.credential) {
                (Some((u, p)), _, _) => (Some(u.as_str()), Some(p.as_str())),
                (None, Some(u), Some(c)) => (Some(u.as_str()), Some(c.as_str())),
                _ => (None, None),
            };
            if let (Some(u), Some(c)) = (user, pass) {
                v.push_str(&format!(
                    "; username=\"{}\"; credential=\"{}\"; credential-type=\"password\"",
                    quote_safe(u),
                    quote_safe(c)
                ));
            }
            HeaderValue::from_str(&v).ok()
        })
        .collect()
}

/// A TURN REST user name and password: valid until `now + ttl`.
pub fn turn_rest_credentials(
    secret: &str,
    now: std::time::SystemTime,
    ttl: std::time::Duration,
) -> (String, String) {
    use base64::Engine as _;
    let expiry = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_add(ttl)
        .as_secs();
    let user = format!("{expiry}:castgate");
    let key = aws_lc_rs::hmac::Key::new(
        aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        secret.as_bytes(),
    );
    let tag = aws_lc_rs::hmac::sign(&key, user.as_bytes());
    let pass = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
    (user, pass)
}

/// The `Link` headers for this moment (minted TURN credentials are fresh).
pub fn links_now(config: &crate::config::RtcConfig) -> Vec<HeaderValue> {
    ice_server_links(
        &config.ice_servers,
        std::time::SystemTime::now(),
        std::time::Duration::from_secs(config.turn_credential_ttl_secs),
    )
}

/// The `Link` headers for an unauthenticated OPTIONS: the servers' URLs
/// only. Credentials (static or minted) go out only in the 201 of a session
/// that passed access control, or TURN would become an open relay.
pub fn links_without_credentials(config: &crate::config::RtcConfig) -> Vec<HeaderValue> {
    let bare: Vec<IceServer> = config
        .ice_servers
        .iter()
        .map(|s| IceServer {
            url: s.url.clone(),
            ..IceServer::default()
        })
        .collect();
    ice_server_links(
        &bare,
        std::time::SystemTime::now(),
        std::time::Duration::ZERO,
    )
}

fn quote_safe(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
        .collect()
}

/// 201 Created with the answer, `Location`, `ETag` and ICE server links.
pub fn created(state: &AppState, base: &str, stream: &StreamName, answer: Answer) -> Response {
    let location = format!("/{base}/{stream}/{}", answer.session_id);
    let mut resp = (StatusCode::CREATED, answer.sdp).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", answer.etag)) {
        h.insert(header::ETAG, v);
    }
    h.insert("accept-patch", HeaderValue::from_static(SDPFRAG));
    for link in links_now(&state.config.rtc) {
        h.append(header::LINK, link);
    }
    resp
}

/// `307 Temporary Redirect` to the `base` (`whip` or `whep`) endpoint of
/// `stream` on the node at `node_url`, carrying a cluster `ticket` (a
/// browser drops `Authorization` on a cross-origin redirect; the ticket is
/// what lets the request in there) and the request's own query parameters
/// the other node reads (`keep`, e.g. a viewer's `layer`).
pub fn redirect_with_ticket(
    node_url: &str,
    base: &str,
    stream: &StreamName,
    ticket: &str,
    keep: &[(&str, &str)],
) -> Response {
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair(super::auth::CLUSTER_TICKET, ticket);
    for (key, value) in keep {
        query.append_pair(key, value);
    }
    let location = format!(
        "{}/{base}/{}?{}",
        node_url.trim_end_matches('/'),
        stream.as_str(),
        query.finish()
    );
    let mut resp = StatusCode::TEMPORARY_REDIRECT.into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// 204 for OPTIONS on an endpoint: what it accepts.
pub fn options(state: &AppState) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    h.insert("accept-post", HeaderValue::from_static(SDP));
    h.insert(header::ALLOW, HeaderValue::from_static("OPTIONS, POST"));
    for link in links_without_credentials(&state.config.rtc) {
        h.append(header::LINK, link);
    }
    resp
}

/// PATCH on a session resource.
pub async fn patch(
    state: &AppState,
    role: RoleKind,
    stream: &StreamName,
    id: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    require_content_type(headers, SDPFRAG)?;
    let if_match = headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::PRECONDITION_REQUIRED,
                "PATCH needs If-Match: the session's ETag for trickle ICE, or \"*\" for an ICE restart",
            )
        })?;
    let frag = Fragment::parse(text(body)?);
    let op = if if_match == "*" {
        let (Some(ufrag), Some(pwd)) = (frag.ufrag, frag.pwd) else {
            return Err(ApiError::bad_request(
                "an ICE restart (If-Match: \"*\") needs a=ice-ufrag and a=ice-pwd in the body",
            ));
        };
        PatchOp::Restart {
            ufrag,
            pwd,
            candidates: frag.candidates,
        }
    } else {
        let etag = if_match
            .trim_start_matches("W/")
            .trim_matches('"')
            .to_string();
        PatchOp::Trickle {
            etag,
            candidates: frag.candidates,
        }
    };
    match state.engine.patch(id, role, stream, op).await? {
        PatchReply::Trickled => Ok(StatusCode::NO_CONTENT.into_response()),
        PatchReply::Restarted {
            ufrag,
            pwd,
            etag,
            candidates,
        } => {
            let mut body = format!("a=ice-lite\r\na=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n");
            for c in candidates {
                body.push_str(&format!("a={c}\r\n"));
            }
            body.push_str("a=end-of-candidates\r\n");
            let mut resp = (StatusCode::OK, body).into_response();
            let h = resp.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDPFRAG));
            if let Ok(v) = HeaderValue::from_str(&format!("\"{etag}\"")) {
                h.insert(header::ETAG, v);
            }
            Ok(resp)
        }
    }
}

/// DELETE on a session resource.
pub async fn delete(
    state: &AppState,
    role: RoleKind,
    stream: &StreamName,
    id: &str,
) -> Result<Response, ApiError> {
    if state.engine.delete(id, role, stream).await? {
        Ok(StatusCode::OK.into_response())
    } else {
        Err(ApiError::not_found("no such session"))
    }
}

/// The parts of an `application/trickle-ice-sdpfrag` body castgate uses.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fragment {
    /// `a=ice-ufrag:`
    pub ufrag: Option<String>,
    /// `a=ice-pwd:`
    pub pwd: Option<String>,
    /// `a=candidate:` lines without the `a=`.
    pub candidates: Vec<String>,
}

impl Fragment {
    /// Reads the attributes; other lines (m=, a=mid, end-of-candidates) are ignored.
    pub fn parse(text: &str) -> Fragment {
        let mut f = Fragment::default();
        for line in text.lines().map(str::trim) {
            if let Some(v) = line.strip_prefix("a=ice-ufrag:") {
                f.ufrag = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("a=ice-pwd:") {
                f.pwd = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("a=")
                && v.starts_with("candidate:")
            {
                f.candidates.push(v.to_string());
            }
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_trickle_fragment() {
        let f = Fragment::parse(
            "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n\
             a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0\r\na=end-of-candidates\r\n",
        );
        assert_eq!(f.ufrag.as_deref(), Some("EsAw"));
        assert_eq!(f.pwd.as_deref(), Some("P2uYro0UCOQ4zxjKXaWCBui1"));
        assert_eq!(f.candidates.len(), 1);
        assert!(f.candidates[0].starts_with("candidate:1387637174"));
    }

    #[test]
    fn links_quote_credentials() {
        let links = ice_server_links(
            &[
                IceServer {
                    url: "stun:stun.example.net".into(),
                    ..IceServer::default()
                },
                IceServer {
                    url: "turn:turn.example.net?transport=udp".into(),
                    username: Some("user".into()),
                    credential: Some("pa\"ss".into()),
                    ..IceServer::default()
                },
            ],
            std::time::SystemTime::now(),
            std::time::Duration::from_secs(60),
        );
        assert_eq!(links[0], "<stun:stun.example.net>; rel=\"ice-server\"");
        assert_eq!(
            links[1],
            "<turn:turn.example.net?transport=udp>; rel=\"ice-server\"; username=\"user\"; credential=\"pass\"; credential-type=\"password\""
        );
    }

    #[test]
    fn turn_rest_credentials_are_what_coturn_computes() {
        // Reference: Python's hmac/hashlib/base64 on the same inputs.
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let (user, pass) =
            turn_rest_credentials("north-star", now, std::time::Duration::from_secs(3600));
        assert_eq!(user, "1700003600:castgate");
        assert_eq!(pass, "Ukp+iuo1pKgG/+FOiolU1Qh8lqY=");
        let links = ice_server_links(
            &[IceServer {
                url: "turns:turn.example.net:443?transport=tcp".into(),
                secret: Some("north-star".into()),
                ..IceServer::default()
            }],
            now,
            std::time::Duration::from_secs(3600),
        );
        assert_eq!(
            links[0],
            "<turns:turn.example.net:443?transport=tcp>; rel=\"ice-server\"; username=\"1700003600:castgate\"; credential=\"Ukp+iuo1pKgG/+FOiolU1Qh8lqY=\"; credential-type=\"password\""
        );
    }

    #[test]
    fn options_links_carry_no_credentials() {
        let rtc = crate::config::RtcConfig {
            ice_servers: vec![
                IceServer {
                    url: "turn:turn.example.net:3478".into(),
                    secret: Some("north-star".into()),
                    ..IceServer::default()
                },
                IceServer {
                    url: "turns:turn.example.net:443".into(),
                    username: Some("u".into()),
                    credential: Some("p".into()),
                    ..IceServer::default()
                },
            ],
            ..Default::default()
        };
        let bare = links_without_credentials(&rtc);
        assert_eq!(bare[0], "<turn:turn.example.net:3478>; rel=\"ice-server\"");
        assert_eq!(bare[1], "<turns:turn.example.net:443>; rel=\"ice-server\"");
        assert!(
            links_now(&rtc)
                .iter()
                .all(|l| l.to_str().unwrap().contains("credential="))
        );
    }
}
