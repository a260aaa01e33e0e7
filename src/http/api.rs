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

/// `GET /api/streams`: every live stream (in a cluster: of every node).
#[utoipa::path(
    get,
    path = "/api/streams",
    operation_id = "list_streams",
    tag = "streams",
    summary = "Every live stream (in a cluster: of every node, with the node that carries each)",
    responses((status = 200, description = "Live streams, sorted by name", body = StreamList)),
)]
pub async fn streams(State(state): State<AppState>) -> Json<StreamList> {
    let streams = match &state.cluster {
        Some(c) => c.streams(),
        None => state.hub.list(),
    };
    Json(StreamList { streams })
}

/// `GET /api/cluster`: the nodes of the cluster with their load.
#[utoipa::path(
    get,
    path = "/api/cluster",
    operation_id = "cluster",
    tag = "operations",
    summary = "The nodes of the cluster, with their load and the age of their last heartbeat",
    responses(
        (status = 200, description = "The nodes, as this node last read them from Redis", body = crate::cluster::ClusterInfo),
        (status = 404, description = "This node is not part of a cluster (`cluster.redis_url` unset)"),
    ),
)]
pub async fn cluster(
    State(state): State<AppState>,
) -> Result<Json<crate::cluster::ClusterInfo>, ApiError> {
    state
        .cluster
        .as_ref()
        .map(|c| Json(c.info()))
        .ok_or_else(|| {
            ApiError::not_found(
                "this node is not part of a cluster (set cluster.redis_url, --cluster-redis)",
            )
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
    // Published here (a relayed stream shows its origin's figures).
    let local = state
        .hub
        .get(&name)
        .filter(|s| s.origin().is_none())
        .map(|s| {
            let mut info = s.info();
            info.node = state.cluster.as_ref().map(|c| c.node_id().to_string());
            info
        });
    local
        .or_else(|| state.cluster.as_ref()?.remote_stream(&name))
        .map(Json)
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
