//! WHEP (draft-ietf-wish-whep): `POST /whep/{stream}` starts a viewer, the
//! session resource `/whep/{stream}/{id}` takes PATCH and DELETE.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;

use super::AppState;
use super::error::ApiError;
use super::session::{self, SDP};
use crate::config::NoPublisher;
use crate::rtc::RoleKind;

/// `POST /whep/{stream}`: answer the viewer's offer with the publisher's codecs.
pub async fn post(
    State(state): State<AppState>,
    Extension(client): Extension<super::client::Client>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let name = session::stream_name(&stream)?;
    session::require_content_type(&headers, SDP)?;
    let offer = session::text(&body)?;
    let whep = &state.config.whep;
    let live = match whep.no_publisher {
        NoPublisher::Reject => state.hub.get(&name),
        NoPublisher::Wait => {
            state
                .hub
                .wait_for(&name, Duration::from_secs_f64(whep.wait_secs))
                .await
        }
    };
    let Some(live) = live else {
        if state.hub.is_closed() {
            // Streams were ended by the shutdown: not a "not live yet".
            return Err(crate::rtc::NegotiateError::ShuttingDown.into());
        }
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "stream {:?} is not live yet; retry when it is",
                name.as_str()
            ),
        )
        .with_header(header::RETRY_AFTER, &whep.retry_after_secs.to_string()));
    };
    let answer = state.engine.view(live, offer, client.ip).await?;
    Ok(session::created(&state, "whep", &name, answer))
}

/// `OPTIONS /whep/{stream}`.
pub async fn options(State(state): State<AppState>) -> Response {
    session::options(&state)
}

/// `PATCH /whep/{stream}/{id}`: trickle ICE or ICE restart.
pub async fn patch(
    State(state): State<AppState>,
    Path((stream, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let name = session::stream_name(&stream)?;
    session::patch(&state, RoleKind::Viewer, &name, &id, &headers, &body).await
}

/// `DELETE /whep/{stream}/{id}`: stop watching.
pub async fn delete(
    State(state): State<AppState>,
    Path((stream, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let name = session::stream_name(&stream)?;
    session::delete(&state, RoleKind::Viewer, &name, &id).await
}
