//! `GET /api/streams/{name}/snapshot.jpg`: the latest picture of a live
//! stream, for the home page's tiles (see [`crate::stream::snapshot`]).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use super::session::stream_name;
use crate::stream::snapshot::SnapshotError;

/// `GET /api/streams/{name}/snapshot.jpg`.
#[utoipa::path(
    get,
    path = "/api/streams/{name}/snapshot.jpg",
    operation_id = "stream_snapshot",
    tag = "streams",
    summary = "The latest picture of a live stream, as a JPEG",
    description = "Decoded from the stream's latest keyframe and the frames after it when asked for, fitted inside `snapshots.width` x `snapshots.height` (never scaled up), and reused for `snapshots.cache_ms`; concurrent requests share one decode. `ETag` / `If-None-Match` answer 304 for an unchanged picture.",
    params(("name" = String, Path, description = "Stream name")),
    responses(
        (status = 200, description = "The picture", body = [u8], content_type = "image/jpeg"),
        (status = 304, description = "Not changed since the `If-None-Match` tag"),
        (status = 404, description = "No such live stream, or it has no video"),
        (status = 503, description = "No keyframe yet, or too many pictures being made (`Retry-After`)"),
        (status = 500, description = "The stream's frames could not be decoded"),
    ),
    security(("bearer" = ["view"]), ("query_token" = ["view"])),
)]
pub async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let name = stream_name(&name)?;
    let stream = state
        .hub
        .get(&name)
        .ok_or_else(|| ApiError::not_found(format!("{name} is not live")))?;
    let snap = state
        .snapshots
        .picture(&stream)
        .await
        .map_err(|e| match e {
            SnapshotError::NoVideo => ApiError::not_found(format!("{name} has no video")),
            SnapshotError::NotYet | SnapshotError::Busy => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
                    .with_header(header::RETRY_AFTER, "1")
            }
            SnapshotError::Decode(_) => {
                tracing::warn!(stream = %name, error = %e, "cannot make a snapshot");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }
        })?;
    let etag = format!("\"s{}\"", snap.tag);
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut resp = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"))],
            snap.jpeg,
        )
            .into_response()
    };
    let h = resp.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=1"),
    );
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    Ok(resp)
}
