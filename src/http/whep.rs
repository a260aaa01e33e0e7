//! WHEP (draft-ietf-wish-whep): `POST /whep/{stream}` starts a viewer, the
//! session resource `/whep/{stream}/{id}` takes PATCH and DELETE.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;

use super::AppState;
use super::error::ApiError;
use super::session::{self, SDP};
use crate::config::{ClusterWhep, NoPublisher};
use crate::rtc::{LayerMode, RoleKind};
use crate::stream::Want;

/// `POST /whep/{stream}`: answer the viewer's offer with the publisher's codecs.
#[utoipa::path(
    post,
    path = "/whep/{stream}",
    operation_id = "whep_watch",
    tag = "whep",
    summary = "Watch a stream (WHEP)",
    params(
        ("stream" = String, Path, description = "Stream name"),
        ("layer" = Option<String>, Query, description = "Of a simulcast stream, which layer: `auto` (the default: the best the viewer's connection carries), `high`, `mid`, `low`, or a layer's rid; the nearest live layer while the one asked for is paused. Streams without simulcast ignore `auto`/`high`/`mid`/`low`"),
    ),
    request_body(content = String, content_type = "application/sdp", description = "The viewer's SDP offer (receive-only)"),
    responses(
        (status = 201, description = "Watching: the SDP answer, with the publisher's codecs", body = String, content_type = "application/sdp", headers(
            ("Location" = String, description = "The session resource, `/whep/{stream}/{session}`: PATCH and DELETE it"),
            ("ETag" = String, description = "The session's ICE credentials tag, for `If-Match` on a trickle PATCH"),
            ("Link" = String, description = "ICE servers: `<turn:…>; rel=\"ice-server\"`, with credentials when configured"),
            ("Accept-Patch" = String, description = "`application/trickle-ice-sdpfrag`"),
        )),
        (status = 400, description = "Invalid stream name, a body that is not UTF-8, not a usable SDP offer, or a `layer` the stream does not have"),
        (status = 403, description = "The token (or the access callback) does not allow viewing this stream"),
        (status = 307, description = "In a cluster with `cluster.whep = \"redirect\"`: the stream is live on another node; `Location` is its WHEP URL there, with a short-lived `cluster_ticket` that lets this request in"),
        (status = 409, description = "Nothing is published under this name yet (`Retry-After` says when to try again), or the stream ended during setup"),
        (status = 413, description = "The offer is larger than `http.max_body_bytes`"),
        (status = 415, description = "The Content-Type is not `application/sdp`"),
        (status = 422, description = "The offer cannot receive the publisher's codecs"),
        (status = 429, description = "Too many requests, failed attempts or sessions from this address"),
        (status = 502, description = "In a cluster with `cluster.whep = \"relay\"`: the stream's origin node could not be pulled from (the reason says why)"),
        (status = 503, description = "The stream has the most viewers allowed (`Retry-After`), the media engine is overloaded (`Retry-After`), shutting down, the access callback is unavailable, or (in a cluster) Redis cannot be reached to find the stream (`Retry-After`)"),
    ),
    security(("bearer" = ["view"]), ("query_token" = ["view"])),
)]
pub async fn post(
    State(state): State<AppState>,
    Extension(client): Extension<super::client::Client>,
    Path(stream): Path<String>,
    Query(query): Query<WatchQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let name = session::stream_name(&stream)?;
    session::require_content_type(&headers, SDP)?;
    let offer = session::text(&body)?;
    let whep = &state.config.whep;
    let wait = match whep.no_publisher {
        NoPublisher::Reject => Duration::ZERO,
        NoPublisher::Wait => Duration::from_secs_f64(whep.wait_secs),
    };
    let live = match locate(&state, &name, wait).await? {
        Some(Found::Here(live)) => live,
        Some(Found::Elsewhere(origin)) => match &state.cluster {
            Some(cluster) if cluster.config().whep == ClusterWhep::Relay => cluster
                .relay(&name, &origin)
                .await
                .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()))?,
            _ => return Ok(redirect(&state, &name, &origin, &query)),
        },
        None => {
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
        }
    };
    let layer = layer_mode(query.layer.as_deref(), &live)?;
    let answer = state.engine.view(live, offer, client.ip, layer).await?;
    Ok(session::created(&state, "whep", &name, answer))
}

/// The query of `POST /whep/{stream}` castgate reads here (the access
/// guard reads `token`, the cluster `cluster_ticket`).
#[derive(Debug, Default, serde::Deserialize)]
pub struct WatchQuery {
    /// `?layer=`: which simulcast layer.
    layer: Option<String>,
}

/// What `?layer=` asks of `live`: `auto` (or nothing), a quality, or a rid
/// of one of its layers.
fn layer_mode(
    layer: Option<&str>,
    live: &crate::stream::LiveStream,
) -> Result<LayerMode, ApiError> {
    let want = match layer.unwrap_or("auto") {
        "auto" | "" => return Ok(LayerMode::Auto),
        "high" => Want::High,
        "mid" => Want::Mid,
        "low" => Want::Low,
        rid => match live.layer_by_rid(rid) {
            Some(id) => Want::Layer(id),
            None => {
                let rids: Vec<String> = live.layers().into_iter().map(|l| l.rid).collect();
                let has = if rids.is_empty() {
                    "it has a single layer".to_string()
                } else {
                    format!("its layers are {}", rids.join(", "))
                };
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "stream {:?} has no layer {rid:?} ({has}); use auto, high, mid, low or a layer's rid",
                        live.name().as_str()
                    ),
                ));
            }
        },
    };
    Ok(LayerMode::Pinned(want))
}

/// Where a viewer finds a stream.
enum Found {
    /// Live on this node.
    Here(std::sync::Arc<crate::stream::LiveStream>),
    /// Live on another node of the cluster.
    Elsewhere(crate::cluster::Claim),
}

/// Finds `name` here or (in a cluster) on another node, waiting up to
/// `wait` for it to start anywhere.
async fn locate(
    state: &AppState,
    name: &crate::names::StreamName,
    wait: Duration,
) -> Result<Option<Found>, ApiError> {
    /// How often the directory is asked again while waiting.
    const POLL: Duration = Duration::from_millis(500);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(live) = state.hub.get(name) {
            return Ok(Some(Found::Here(live)));
        }
        if let Some(cluster) = &state.cluster
            && let Some(origin) = cluster.origin(name).await?
            && origin.node != cluster.node_id()
        {
            return Ok(Some(Found::Elsewhere(origin)));
        }
        let now = tokio::time::Instant::now();
        if now >= deadline || state.hub.is_closed() {
            return Ok(None);
        }
        let step = if state.cluster.is_some() {
            POLL.min(deadline - now)
        } else {
            deadline - now
        };
        state.hub.wait_for(name, step).await;
    }
}

/// `307` to the stream's origin, with a ticket that lets the viewer in
/// there (its browser drops `Authorization` on a cross-origin redirect) and
/// the viewer's `layer`.
fn redirect(
    state: &AppState,
    name: &crate::names::StreamName,
    origin: &crate::cluster::Claim,
    query: &WatchQuery,
) -> Response {
    let ticket = state
        .cluster
        .as_ref()
        .map(|c| c.view_ticket(name))
        .unwrap_or_default();
    tracing::debug!(stream = %name, node = %origin.node, "viewer redirected to the stream's origin");
    let keep: Vec<(&str, &str)> = query.layer.iter().map(|l| ("layer", l.as_str())).collect();
    session::redirect_with_ticket(&origin.url, "whep", name, &ticket, &keep)
}

/// `OPTIONS /whep/{stream}`.
#[utoipa::path(
    options,
    path = "/whep/{stream}",
    operation_id = "whep_options",
    tag = "whep",
    summary = "What the WHEP endpoint accepts (CORS preflight)",
    params(("stream" = String, Path, description = "Stream name")),
    responses(
        (status = 200, description = "The CORS preflight answer (the CORS layer answers every OPTIONS), with what the endpoint accepts", headers(
            ("Accept-Post" = String, description = "`application/sdp`"),
            ("Link" = String, description = "ICE server URLs, without credentials"),
        )),
    ),
)]
pub async fn options(State(state): State<AppState>) -> Response {
    session::options(&state)
}

/// `PATCH /whep/{stream}/{id}`: trickle ICE or ICE restart.
#[utoipa::path(
    patch,
    path = "/whep/{stream}/{session}",
    operation_id = "whep_patch",
    tag = "whep",
    summary = "Trickle ICE candidates or restart ICE (RFC 8840)",
    params(
        ("stream" = String, Path, description = "Stream name"),
        ("session" = String, Path, description = "Session id from the `Location` of the 201"),
        ("If-Match" = String, Header, description = "The session's ETag (trickle ICE), or `\"*\"` (ICE restart)"),
    ),
    request_body(content = String, content_type = "application/trickle-ice-sdpfrag", description = "Candidates; for an ICE restart also `a=ice-ufrag` and `a=ice-pwd`"),
    responses(
        (status = 204, description = "Candidates added (trickle ICE)"),
        (status = 200, description = "ICE restarted: the new credentials and candidates", body = String, content_type = "application/trickle-ice-sdpfrag", headers(
            ("ETag" = String, description = "The new ETag of the session"),
        )),
        (status = 400, description = "Invalid stream name, body or candidate; an ICE restart without ufrag and pwd"),
        (status = 404, description = "No such session"),
        (status = 412, description = "`If-Match` does not match the session's current ETag"),
        (status = 413, description = "The body is larger than `http.max_body_bytes`"),
        (status = 415, description = "The Content-Type is not `application/trickle-ice-sdpfrag`"),
        (status = 428, description = "No `If-Match` header"),
        (status = 429, description = "Too many requests or failed attempts from this address"),
    ),
    security(("bearer" = ["view"]), ("query_token" = ["view"])),
)]
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
#[utoipa::path(
    delete,
    path = "/whep/{stream}/{session}",
    operation_id = "whep_stop",
    tag = "whep",
    summary = "Stop watching",
    params(
        ("stream" = String, Path, description = "Stream name"),
        ("session" = String, Path, description = "Session id from the `Location` of the 201"),
    ),
    responses(
        (status = 200, description = "The session ended"),
        (status = 400, description = "Invalid stream name"),
        (status = 404, description = "No such session"),
        (status = 429, description = "Too many requests or failed attempts from this address"),
    ),
    security(("bearer" = ["view"]), ("query_token" = ["view"])),
)]
pub async fn delete(
    State(state): State<AppState>,
    Path((stream, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let name = session::stream_name(&stream)?;
    session::delete(&state, RoleKind::Viewer, &name, &id).await
}
