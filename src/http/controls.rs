//! An operator's controls over live streams (admin role): end a stream, see
//! and end its sessions, start and stop its recording.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::error::ApiError;
use super::session::stream_name;
use crate::names::StreamName;
use crate::record::{RecordingStatus, StartError};
use crate::rtc::SessionInfo;
use crate::stream::{LiveStream, StreamInfo};

/// The live stream `name`, or 404.
fn live(state: &AppState, name: &StreamName) -> Result<std::sync::Arc<LiveStream>, ApiError> {
    state
        .hub
        .get(name)
        .ok_or_else(|| ApiError::not_found(format!("stream {:?} is not live", name.as_str())))
}

/// `DELETE /api/streams/{name}`.
#[utoipa::path(
    delete,
    path = "/api/streams/{name}",
    operation_id = "end_stream",
    tag = "streams",
    summary = "End a live stream",
    description = "Closes the publisher's session: viewers see the stream end, its recording is finalized, its restream targets stop and are not resumed when the name goes live again (unlike a dropped connection). A `stream_ended` event follows with reason `ended_by_operator`.",
    params(("name" = String, Path, description = "Stream name")),
    responses(
        (status = 200, description = "The stream as it was when it was ended", body = StreamInfo),
        (status = 400, description = "Invalid stream name"),
        (status = 404, description = "The stream is not live"),
        (status = 503, description = "The media engine did not take the request in time (`Retry-After`)"),
    ),
    security(("bearer" = ["admin"]), ("query_token" = ["admin"])),
)]
pub async fn end_stream(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<StreamInfo>, ApiError> {
    let name = stream_name(&name)?;
    let stream = live(&state, &name)?;
    // An operator's decision: its pushes do not resume on the next stream.
    state.restreamer.end_for_good(stream.id());
    let info = stream.info();
    if !state.engine.end_stream(&name).await? {
        // No publisher session (it was just leaving): end the stream itself.
        state.hub.remove(&stream, "ended_by_operator");
    }
    tracing::info!(stream = %name, stream_id = stream.id(), "stream ended by an operator");
    Ok(Json(info))
}

/// Body of the session listing.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionList {
    /// Every WHIP and WHEP session of the stream, oldest first.
    pub sessions: Vec<SessionInfo>,
}

/// `GET /api/streams/{name}/sessions`.
#[utoipa::path(
    get,
    path = "/api/streams/{name}/sessions",
    operation_id = "list_sessions",
    tag = "streams",
    summary = "A live stream's sessions",
    description = "Its publisher (WHIP) and viewers (WHEP): id, role, client address, since, codecs, state, bitrates and (viewers of a simulcast stream) the layer each receives. Admin role, since it shows client addresses.",
    params(("name" = String, Path, description = "Stream name")),
    responses(
        (status = 200, description = "The sessions", body = SessionList),
        (status = 400, description = "Invalid stream name"),
        (status = 404, description = "The stream is not live"),
    ),
    security(("bearer" = ["admin"]), ("query_token" = ["admin"])),
)]
pub async fn sessions(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<SessionList>, ApiError> {
    let name = stream_name(&name)?;
    let stream = live(&state, &name)?;
    let codecs: Vec<String> = stream
        .tracks()
        .iter()
        .map(|t| t.codec.name().to_string())
        .collect();
    Ok(Json(SessionList {
        sessions: state.engine.sessions(&stream, &codecs),
    }))
}

/// `DELETE /api/streams/{name}/sessions/{id}`.
#[utoipa::path(
    delete,
    path = "/api/streams/{name}/sessions/{id}",
    operation_id = "end_session",
    tag = "streams",
    summary = "End one session of a live stream",
    description = "Closes a viewer's session (`viewer_left` with reason `ended_by_operator`), or the publisher's, which ends the stream like `DELETE /api/streams/{name}` but lets its restream targets resume on the name's next stream.",
    params(
        ("name" = String, Path, description = "Stream name"),
        ("id" = String, Path, description = "Session id"),
    ),
    responses(
        (status = 200, description = "The session was ended"),
        (status = 400, description = "Invalid stream name"),
        (status = 404, description = "No such session of this stream"),
        (status = 503, description = "The media engine did not take the request in time (`Retry-After`)"),
    ),
    security(("bearer" = ["admin"]), ("query_token" = ["admin"])),
)]
pub async fn end_session(
    State(state): State<AppState>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let name = stream_name(&name)?;
    if state.engine.end_session(&id, &name).await? {
        Ok(StatusCode::OK.into_response())
    } else {
        Err(ApiError::not_found("no such session of this stream"))
    }
}

/// `GET /api/streams/{name}/recording`.
#[utoipa::path(
    get,
    path = "/api/streams/{name}/recording",
    operation_id = "get_stream_recording",
    tag = "recordings",
    summary = "Whether a live stream is being recorded",
    params(("name" = String, Path, description = "Stream name")),
    responses(
        (status = 200, description = "Whether it records, and the current file's id", body = RecordingStatus),
        (status = 400, description = "Invalid stream name"),
        (status = 404, description = "The stream is not live"),
    ),
    security(("bearer" = ["admin"]), ("query_token" = ["admin"])),
)]
pub async fn recording(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<RecordingStatus>, ApiError> {
    let name = stream_name(&name)?;
    let stream = live(&state, &name)?;
    Ok(Json(state.recorder.status(stream.id()).unwrap_or(
        RecordingStatus {
            recording: false,
            id: None,
        },
    )))
}

/// `POST /api/streams/{name}/recording`.
#[utoipa::path(
    post,
    path = "/api/streams/{name}/recording",
    operation_id = "start_stream_recording",
    tag = "recordings",
    summary = "Record a live stream",
    description = "Starts recording a live stream whatever `record.streams` says (the file opens at the next keyframe; `recording_started` follows). Idempotent: a stream already recorded answers `200` with its current id.",
    params(("name" = String, Path, description = "Stream name")),
    responses(
        (status = 201, description = "Recording started (the id comes once the file is open)", body = RecordingStatus),
        (status = 200, description = "Already recording", body = RecordingStatus),
        (status = 400, description = "Invalid stream name"),
        (status = 403, description = "Recording is turned off (`record.enabled = false`)"),
        (status = 404, description = "The stream is not live"),
        (status = 503, description = "The stream is ending or the server is stopping"),
    ),
    security(("bearer" = ["admin"]), ("query_token" = ["admin"])),
)]
pub async fn start_recording(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let name = stream_name(&name)?;
    let stream = live(&state, &name)?;
    match state.recorder.record(&stream) {
        Ok((status, true)) => Ok((StatusCode::CREATED, Json(status)).into_response()),
        Ok((status, false)) => Ok(Json(status).into_response()),
        Err(e @ StartError::Disabled) => Err(ApiError::new(StatusCode::FORBIDDEN, e.to_string())),
        Err(e) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            e.to_string(),
        )),
    }
}

/// `DELETE /api/streams/{name}/recording`.
#[utoipa::path(
    delete,
    path = "/api/streams/{name}/recording",
    operation_id = "stop_stream_recording",
    tag = "recordings",
    summary = "Stop recording a live stream",
    description = "Finalizes the file being written (`recording_finalized` follows) and records no more of this stream; the stream goes on.",
    params(("name" = String, Path, description = "Stream name")),
    responses(
        (status = 200, description = "Stopped; `id` is the file it finished (none if no file had opened yet)", body = RecordingStatus),
        (status = 400, description = "Invalid stream name"),
        (status = 404, description = "The stream is not live, or not being recorded"),
    ),
    security(("bearer" = ["admin"]), ("query_token" = ["admin"])),
)]
pub async fn stop_recording(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<RecordingStatus>, ApiError> {
    let name = stream_name(&name)?;
    let stream = live(&state, &name)?;
    let recorder = state.recorder.clone();
    let id = stream.id();
    // Finalizing hashes the file: off the async workers.
    let stopped = tokio::task::spawn_blocking(move || recorder.stop(id))
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "stopping failed"))?;
    match stopped {
        Some(finished) => Ok(Json(RecordingStatus {
            recording: false,
            id: finished,
        })),
        None => Err(ApiError::not_found(format!(
            "stream {:?} is not being recorded",
            name.as_str()
        ))),
    }
}
