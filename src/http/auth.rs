//! Bearer tokens for publishing and viewing: none, one shared token, or one
//! per stream (which overrides the shared one).

use axum::http::{HeaderMap, StatusCode, header};

use super::error::ApiError;
use crate::config::AuthConfig;
use crate::stream::StreamName;

/// The two things a token can allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// WHIP.
    Publish,
    /// WHEP.
    View,
}

/// Checks the request's `Authorization: Bearer` against the configured token
/// for this stream and access; passes when no token is configured.
pub fn check(
    auth: &AuthConfig,
    access: Access,
    stream: &StreamName,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let (per_stream, shared) = match access {
        Access::Publish => (&auth.stream_publish_tokens, &auth.publish_token),
        Access::View => (&auth.stream_view_tokens, &auth.view_token),
    };
    let Some(expected) = per_stream.get(stream.as_str()).or(shared.as_ref()) else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let what = match access {
        Access::Publish => "publish",
        Access::View => "view",
    };
    match given {
        None => Err(unauthorized(format!(
            "a Bearer token is required to {what} stream {:?}",
            stream.as_str()
        ))),
        Some(t) if constant_time_eq(t.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => Err(unauthorized(format!(
            "the Bearer token is not valid to {what} stream {:?}",
            stream.as_str()
        ))),
    }
}

fn unauthorized(reason: String) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, reason).with_header(header::WWW_AUTHENTICATE, "Bearer")
}

/// Compares without an early exit, so timing does not reveal a token prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn shared_and_per_stream_tokens() {
        let mut auth = AuthConfig {
            publish_token: Some("secret".into()),
            ..Default::default()
        };
        auth.stream_publish_tokens
            .insert("vip".into(), "vip-token".into());
        let demo = StreamName::parse("demo").unwrap();
        let vip = StreamName::parse("vip").unwrap();
        assert!(check(&auth, Access::Publish, &demo, &headers("Bearer secret")).is_ok());
        assert!(check(&auth, Access::Publish, &demo, &headers("bearer  secret ")).is_ok());
        assert_eq!(
            check(&auth, Access::Publish, &demo, &HeaderMap::new())
                .unwrap_err()
                .status,
            StatusCode::UNAUTHORIZED
        );
        assert!(check(&auth, Access::Publish, &demo, &headers("Bearer nope")).is_err());
        assert!(check(&auth, Access::Publish, &vip, &headers("Bearer secret")).is_err());
        assert!(check(&auth, Access::Publish, &vip, &headers("Bearer vip-token")).is_ok());
        assert!(
            check(&auth, Access::View, &demo, &HeaderMap::new()).is_ok(),
            "viewing is open"
        );
    }
}
