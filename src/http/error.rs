//! HTTP errors: every refusal is a status code plus one readable sentence.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::rtc::{NegotiateError, PatchError};

/// An error answered to an HTTP client.
#[derive(Debug)]
pub struct ApiError {
    /// Status code.
    pub status: StatusCode,
    /// The reason, in words, sent as the body.
    pub reason: String,
    /// Extra headers (e.g. `Retry-After`, `WWW-Authenticate`).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    /// An error with a status and a reason.
    pub fn new(status: StatusCode, reason: impl Into<String>) -> ApiError {
        ApiError {
            status,
            reason: reason.into(),
            headers: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: header::HeaderName, value: &str) -> ApiError {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((name, v));
        }
        self
    }

    /// 400 Bad Request.
    pub fn bad_request(reason: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, reason)
    }

    /// 404 Not Found.
    pub fn not_found(reason: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, reason)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{}\n", self.reason),
        )
            .into_response();
        for (k, v) in self.headers {
            resp.headers_mut().append(k, v);
        }
        resp
    }
}

impl From<NegotiateError> for ApiError {
    fn from(e: NegotiateError) -> ApiError {
        let status = match &e {
            NegotiateError::BadOffer(_) => StatusCode::BAD_REQUEST,
            NegotiateError::Unsupported(_) => StatusCode::UNPROCESSABLE_ENTITY,
            NegotiateError::Busy(_) | NegotiateError::Ended(_) => StatusCode::CONFLICT,
            NegotiateError::ShuttingDown
            | NegotiateError::StreamFull(..)
            | NegotiateError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            NegotiateError::TooManySessions(_) => StatusCode::TOO_MANY_REQUESTS,
        };
        let retry = match e {
            NegotiateError::StreamFull(..)
            | NegotiateError::TooManySessions(_)
            | NegotiateError::ShuttingDown => Some("10"),
            NegotiateError::Overloaded => Some("2"),
            _ => None,
        };
        let err = ApiError::new(status, e.to_string());
        match retry {
            Some(secs) => err.with_header(axum::http::header::RETRY_AFTER, secs),
            None => err,
        }
    }
}

impl From<crate::cluster::ClaimError> for ApiError {
    fn from(e: crate::cluster::ClaimError) -> ApiError {
        use crate::cluster::ClaimError;
        match e {
            ClaimError::Busy { .. } => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            ClaimError::Unavailable => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
                    .with_header(header::RETRY_AFTER, "2")
            }
        }
    }
}

impl From<crate::cluster::Unavailable> for ApiError {
    fn from(e: crate::cluster::Unavailable) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            .with_header(header::RETRY_AFTER, "2")
    }
}

impl From<PatchError> for ApiError {
    fn from(e: PatchError) -> ApiError {
        let status = match &e {
            PatchError::NotFound => StatusCode::NOT_FOUND,
            PatchError::Stale => StatusCode::PRECONDITION_FAILED,
            PatchError::BadCandidate(_) => StatusCode::BAD_REQUEST,
            PatchError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
        };
        let err = ApiError::new(status, e.to_string());
        if matches!(e, PatchError::Overloaded) {
            err.with_header(header::RETRY_AFTER, "2")
        } else {
            err
        }
    }
}
