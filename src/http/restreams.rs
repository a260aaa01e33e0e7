//! Restream targets over HTTP: add (`POST /api/streams/{name}/restreams`,
//! JSON `{"url": "rtmp://…", "label": "…"}`), list per stream or all, one,
//! and remove. URLs are always shown masked (`rtmp://host/app/****`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::error::ApiError;
use super::session::stream_name;
use crate::restream::{AddTarget, RestreamError, Source, TargetInfo};

/// Body of `POST /api/streams/{name}/restreams`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddBody {
    /// `rtmp://host/app/KEY` or `rtmps://…`.
    pub url: String,
    /// Optional label shown in listings.
    #[serde(default)]
    pub label: Option<String>,
}

/// Body of the listings.
#[derive(Debug, Serialize, ToSchema)]
pub struct TargetList {
    /// Targets, oldest first.
    pub restreams: Vec<TargetInfo>,
}

impl From<RestreamError> for ApiError {
    fn from(e: RestreamError) -> ApiError {
        let status = match &e {
            RestreamError::Url(_) => StatusCode::BAD_REQUEST,
            RestreamError::NotLive(_) | RestreamError::NotFound(_) => StatusCode::NOT_FOUND,
            RestreamError::Unsupported(_) => StatusCode::UNPROCESSABLE_ENTITY,
            RestreamError::TooMany(_) => StatusCode::CONFLICT,
            RestreamError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            RestreamError::Ffmpeg { .. } | RestreamError::Codec(_) | RestreamError::Thread(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            RestreamError::Outbound(_) => StatusCode::UNPROCESSABLE_ENTITY,
        };
        ApiError::new(status, e.to_string())
    }
}

fn parse_body(body: &[u8]) -> Result<AddBody, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "expected a JSON body such as {\"url\": \"rtmp://host/app/KEY\"}",
        ));
    }
    let b: AddBody = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    if let Some(l) = &b.label
        && (l.chars().count() > 200 || l.chars().any(char::is_control))
    {
        return Err(ApiError::bad_request(
            "label: at most 200 characters, no control characters",
        ));
    }
    Ok(b)
}

/// `POST /api/streams/{name}/restreams`: 201 with the new target.
#[utoipa::path(
    post,
    path = "/api/streams/{name}/restreams",
    operation_id = "add_restream",
    tag = "restreams",
    summary = "Push a live stream to an RTMP/RTMPS target",
    params(("name" = String, Path, description = "Stream name")),
    request_body(content = AddBody, content_type = "application/json"),
    responses(
        (status = 201, description = "The new target (its URL masked)", body = TargetInfo, headers(
            ("Location" = String, description = "The target, `/api/streams/{name}/restreams/{id}`"),
        )),
        (status = 400, description = "Invalid stream name, JSON body, label or URL (scheme, host not allowed)"),
        (status = 403, description = "The token does not grant admin on this stream, or restreaming is disabled (`restream.enabled = false`)"),
        (status = 404, description = "The stream is not live"),
        (status = 409, description = "The stream has the most targets allowed"),
        (status = 413, description = "The body is larger than `http.max_body_bytes`"),
        (status = 415, description = "The body is not `application/json`"),
        (status = 422, description = "The target's host is, or resolves to, an internal address (loopback, private, link-local, …) that `outbound.allow_networks` does not allow, or it does not resolve"),
        (status = 429, description = "Too many requests or failed attempts from this address"),
        (status = 500, description = "A thread could not be started"),
        (status = 503, description = "Shutting down"),
    ),
    security(("bearer" = ["admin"]), ("query_token" = ["admin"])),
)]
pub async fn add(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let name = stream_name(&name)?;
    if !state.config.restream.enabled {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "restreaming is disabled (restream.enabled = false)",
        ));
    }
    let body = parse_body(&body)?;
    // Check the URL before the stream, so a bad body is a 400 (an address
    // castgate may not connect to a 422) whatever is live.
    let url = crate::restream::TargetUrl::parse(&body.url, &state.config.restream.allowed_hosts)
        .map_err(RestreamError::from)?;
    state.restreamer.check_address(&url).await?;
    let stream = state
        .hub
        .get(&name)
        .ok_or_else(|| RestreamError::NotLive(name.to_string()))?;
    let info = state.restreamer.add(
        &stream,
        AddTarget {
            url: body.url,
            label: body.label,
        },
        Source::Api,
    )?;
    let location = format!("/api/streams/{}/restreams/{}", name.as_str(), info.id);
    Ok((
        StatusCode::CREATED,
        [(axum::http::header::LOCATION, location)],
        Json(info),
    )
        .into_response())
}

/// `GET /api/streams/{name}/restreams`.
#[utoipa::path(
    get,
    path = "/api/streams/{name}/restreams",
    operation_id = "list_restreams",
    tag = "restreams",
    summary = "A stream's restream targets",
    params(("name" = String, Path, description = "Stream name")),
    responses(
        (status = 200, description = "Targets, oldest first", body = TargetList),
        (status = 400, description = "Invalid stream name"),
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<TargetList>, ApiError> {
    let name = stream_name(&name)?;
    Ok(Json(TargetList {
        restreams: state.restreamer.list(Some(name.as_str())),
    }))
}

/// `GET /api/streams/{name}/restreams/{id}`.
#[utoipa::path(
    get,
    path = "/api/streams/{name}/restreams/{id}",
    operation_id = "get_restream",
    tag = "restreams",
    summary = "One restream target",
    params(
        ("name" = String, Path, description = "Stream name"),
        ("id" = String, Path, description = "Target id"),
    ),
    responses(
        (status = 200, description = "The target", body = TargetInfo),
        (status = 400, description = "Invalid stream name"),
        (status = 404, description = "No such target"),
    ),
)]
pub async fn one(
    State(state): State<AppState>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<TargetInfo>, ApiError> {
    let name = stream_name(&name)?;
    state
        .restreamer
        .list(Some(name.as_str()))
        .into_iter()
        .find(|t| t.id == id)
        .map(Json)
        .ok_or_else(|| RestreamError::NotFound(id).into())
}

/// `GET /api/restreams`: every target of every stream.
#[utoipa::path(
    get,
    path = "/api/restreams",
    operation_id = "list_all_restreams",
    tag = "restreams",
    summary = "Every restream target of every stream",
    responses((status = 200, description = "Targets, oldest first", body = TargetList)),
)]
pub async fn list_all(State(state): State<AppState>) -> Json<TargetList> {
    Json(TargetList {
        restreams: state.restreamer.list(None),
    })
}

/// `DELETE /api/streams/{name}/restreams/{id}`: stops the target (its
/// stream ends cleanly, bounded by a few seconds) and answers its last state.
#[utoipa::path(
    delete,
    path = "/api/streams/{name}/restreams/{id}",
    operation_id = "delete_restream",
    tag = "restreams",
    summary = "Stop and remove a restream target",
    params(
        ("name" = String, Path, description = "Stream name"),
        ("id" = String, Path, description = "Target id"),
    ),
    responses(
        (status = 200, description = "The target's last state", body = TargetInfo),
        (status = 400, description = "Invalid stream name"),
        (status = 404, description = "No such target"),
        (status = 429, description = "Too many requests or failed attempts from this address"),
        (status = 500, description = "The target could not be stopped"),
    ),
    security(("bearer" = ["admin"]), ("query_token" = ["admin"])),
)]
pub async fn delete(
    State(state): State<AppState>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<TargetInfo>, ApiError> {
    let name = stream_name(&name)?;
    let r = state.restreamer.clone();
    let stream = name.to_string();
    tokio::task::spawn_blocking(move || r.remove(&stream, &id))
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "remove failed"))?
        .map(Json)
        .map_err(ApiError::from)
}
