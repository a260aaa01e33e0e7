//! WHIP (RFC 9725): `POST /whip/{stream}` publishes, the session resource
//! `/whip/{stream}/{id}` takes PATCH and DELETE.

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::AppState;
use super::error::ApiError;
use super::session::{self, SDP};
use crate::rtc::RoleKind;

/// `POST /whip/{stream}`: answer the publisher's offer.
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
    let answer = state.engine.publish(name.clone(), offer, client.ip).await?;
    Ok(session::created(&state, "whip", &name, answer))
}

/// `OPTIONS /whip/{stream}`.
pub async fn options(State(state): State<AppState>) -> Response {
    session::options(&state)
}

/// `PATCH /whip/{stream}/{id}`: trickle ICE or ICE restart.
pub async fn patch(
    State(state): State<AppState>,
    Path((stream, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let name = session::stream_name(&stream)?;
    session::patch(&state, RoleKind::Publisher, &name, &id, &headers, &body).await
}

/// `DELETE /whip/{stream}/{id}`: stop publishing.
pub async fn delete(
    State(state): State<AppState>,
    Path((stream, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let name = session::stream_name(&stream)?;
    session::delete(&state, RoleKind::Publisher, &name, &id).await
}
