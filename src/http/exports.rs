//! Export jobs over HTTP: start one (VP8/VP9 recording → H.264 MP4), follow
//! its progress, cancel it. The finished MP4 is downloaded with
//! `GET /recordings/{id}/download?format=mp4`.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use super::AppState;
use super::error::ApiError;
use crate::record::catalog;
use crate::record::export::{ExportError, ExportStatus};
use crate::record::mp4::Mp4Audio;

/// Query of `POST /api/recordings/{id}/exports`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StartQuery {
    /// `aac` (re-encoded: plays in every player and editor) or `opus`
    /// (copied; Windows' players, Resolve, Premiere and Apple devices
    /// before iOS 17 do not play it). Default `aac`.
    pub audio: Option<String>,
}

fn parse_audio(v: Option<&str>, default: Mp4Audio) -> Result<Mp4Audio, ApiError> {
    match v {
        None => Ok(default),
        Some("aac") => Ok(Mp4Audio::Aac),
        Some("opus") => Ok(Mp4Audio::Opus),
        Some(_) => Err(ApiError::bad_request("audio must be aac or opus")),
    }
}

fn valid_id(id: &str) -> Result<(), ApiError> {
    catalog::parse_id(id)
        .map(|_| ())
        .ok_or_else(|| ApiError::not_found("no such recording"))
}

/// `POST /api/recordings/{id}/exports`.
#[utoipa::path(
    post,
    path = "/api/recordings/{id}/exports",
    operation_id = "start_export",
    tag = "recordings",
    summary = "Export a VP8/VP9 recording to H.264 MP4",
    description = "Queues an export (or returns the one queued, running or done already). Exports run `record.export_max_concurrent` at a time, one core each, at a lower CPU priority than live streams. Follow it with `GET /api/recordings/{id}/exports`; an `export_finished` event tells when it ends. The role needed is `record.export_role` (`view` by default).",
    params(("id" = String, Path, description = "Recording id, `STREAM~TIME`"), StartQuery),
    responses(
        (status = 200, description = "This export was queued, is running or is done already", body = ExportStatus),
        (status = 202, description = "Started (queued or running)", body = ExportStatus),
        (status = 400, description = "`audio` is not `aac` or `opus`"),
        (status = 404, description = "No such recording"),
        (status = 409, description = "The recording is still being written, or its video fits MP4 without encoding (download `?format=mp4`), or it has no video"),
        (status = 503, description = "Too many exports are waiting (`Retry-After`), or the server is stopping"),
    ),
    security(("bearer" = ["view"]), ("query_token" = ["view"])),
)]
pub async fn start(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<StartQuery>,
) -> Result<Response, ApiError> {
    valid_id(&id)?;
    let audio = parse_audio(q.audio.as_deref(), Mp4Audio::Aac)?;
    let exports = state.exports.clone();
    let started = tokio::task::spawn_blocking(move || exports.start(&id, audio))
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "cannot start"))?;
    match started {
        Ok((status, created)) => {
            let code = if created {
                StatusCode::ACCEPTED
            } else {
                StatusCode::OK
            };
            Ok((code, Json(status)).into_response())
        }
        Err(e) => Err(match e {
            ExportError::NotFound => ApiError::not_found(e.to_string()),
            ExportError::InProgress | ExportError::NotNeeded | ExportError::NoVideo => {
                ApiError::new(StatusCode::CONFLICT, e.to_string())
            }
            ExportError::Busy | ExportError::Closed => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
                    .with_header(header::RETRY_AFTER, "30")
            }
        }),
    }
}

/// `GET /api/recordings/{id}/exports`.
#[utoipa::path(
    get,
    path = "/api/recordings/{id}/exports",
    operation_id = "list_exports",
    tag = "recordings",
    summary = "A recording's exports: progress (percent, speed, ETA) and download links",
    params(("id" = String, Path, description = "Recording id, `STREAM~TIME`")),
    responses(
        (status = 200, description = "Its exports (empty: none)", body = [ExportStatus]),
        (status = 404, description = "No such recording"),
    ),
    security(("bearer" = ["view"]), ("query_token" = ["view"])),
)]
pub async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    valid_id(&id)?;
    let exports = state.exports.clone();
    let recorder = state.recorder.clone();
    let found = tokio::task::spawn_blocking(move || recorder.get(&id).map(|_| exports.list(&id)))
        .await
        .ok()
        .flatten()
        .ok_or_else(|| ApiError::not_found("no such recording"))?;
    let mut resp = Json(found).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// `DELETE /api/recordings/{id}/exports/{audio}`.
#[utoipa::path(
    delete,
    path = "/api/recordings/{id}/exports/{audio}",
    operation_id = "cancel_export",
    tag = "recordings",
    summary = "Cancel an export (nothing is kept), or delete a finished one's MP4",
    params(
        ("id" = String, Path, description = "Recording id, `STREAM~TIME`"),
        ("audio" = String, Path, description = "`aac` or `opus`: which export"),
    ),
    responses(
        (status = 204, description = "Cancelled or deleted"),
        (status = 400, description = "`audio` is not `aac` or `opus`"),
        (status = 404, description = "No such export"),
    ),
    security(("bearer" = ["view"]), ("query_token" = ["view"])),
)]
pub async fn cancel(
    State(state): State<AppState>,
    Path((id, audio)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    valid_id(&id)?;
    let audio = parse_audio(Some(audio.as_str()), Mp4Audio::Aac)?;
    let exports = state.exports.clone();
    let done = tokio::task::spawn_blocking(move || exports.cancel(&id, audio))
        .await
        .unwrap_or(false);
    if done {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found("no such export"))
    }
}
