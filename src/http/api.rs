//! The JSON API: what is live, and whether the process is healthy.

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::error::ApiError;
use super::session::stream_name;
use crate::rtc::EngineStats;
use crate::stream::StreamInfo;

/// Body of `GET /api/streams`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamList {
    /// Live streams, sorted by name.
    pub streams: Vec<StreamInfo>,
}

/// `GET /api/streams`: every live stream.
#[utoipa::path(
    get,
    path = "/api/streams",
    operation_id = "list_streams",
    tag = "streams",
    summary = "Every live stream",
    responses((status = 200, description = "Live streams, sorted by name", body = StreamList)),
)]
pub async fn streams(State(state): State<AppState>) -> Json<StreamList> {
    Json(StreamList {
        streams: state.hub.list(),
    })
}

/// `GET /api/streams/{name}`: one live stream, or 404.
#[utoipa::path(
    get,
    path = "/api/streams/{name}",
    operation_id = "get_stream",
    tag = "streams",
    summary = "One live stream",
    params(("name" = String, Path, description = "Stream name")),
    responses(
        (status = 200, description = "The stream", body = StreamInfo),
        (status = 400, description = "Invalid stream name"),
        (status = 404, description = "The stream is not live"),
    ),
)]
pub async fn stream(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<StreamInfo>, ApiError> {
    let name = stream_name(&name)?;
    state
        .hub
        .get(&name)
        .map(|s| Json(s.info()))
        .ok_or_else(|| ApiError::not_found(format!("stream {:?} is not live", name.as_str())))
}

/// Body of `GET /healthz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` when the process answers.
    pub status: &'static str,
    /// Live streams.
    pub streams: usize,
    /// Media transport figures.
    pub rtc: EngineStats,
}

/// `GET /healthz`: liveness plus a few figures.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "operations",
    summary = "Liveness, with a few figures",
    responses((status = 200, description = "The process answers", body = Health)),
)]
pub async fn healthz(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok",
        streams: state.hub.len(),
        rtc: state.engine.stats(),
    })
}
