//! The origin's side of a relay between cluster nodes: another node pulls a
//! stream published here, as a WHEP client, with a ticket signed with the
//! cluster secret (`Authorization: Bearer`). Nothing else gets in: these
//! routes take neither the view token nor a redirect ticket.

use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;

use super::AppState;
use super::error::ApiError;
use super::session::{self, SDP};
use crate::cluster::{Cluster, LAYERS_HEADER, Purpose};
use crate::names::StreamName;
use crate::rtc::RoleKind;
use crate::stream::{LayerId, Want};

/// The cluster, or 404 on a single node.
fn cluster(state: &AppState) -> Result<&Cluster, ApiError> {
    state
        .cluster
        .as_deref()
        .ok_or_else(|| ApiError::not_found("this node is not part of a cluster"))
}

/// Refuses a request without a relay ticket for `name`.
fn require_ticket(
    cluster: &Cluster,
    headers: &HeaderMap,
    name: &StreamName,
) -> Result<(), ApiError> {
    let ticket = super::auth::token_of(headers, &axum::http::Uri::from_static("/"), false);
    let refused = |reason: String| {
        tracing::info!(stream = %name, reason, "relay request refused");
        ApiError::new(StatusCode::UNAUTHORIZED, reason)
            .with_header(header::WWW_AUTHENTICATE, "Bearer")
    };
    let Some(ticket) = ticket else {
        return Err(refused(
            "a relay request needs a ticket signed with the cluster secret (Authorization: Bearer)"
                .into(),
        ));
    };
    cluster
        .ticket_key()
        .verify(
            &ticket,
            Purpose::Relay,
            name.as_str(),
            std::time::SystemTime::now(),
        )
        .map_err(|e| refused(e.to_string()))
}

/// `POST /cluster/relay/{stream}`: another node pulls a stream published here.
#[utoipa::path(
    post,
    path = "/cluster/relay/{stream}",
    operation_id = "cluster_relay",
    tag = "cluster",
    summary = "Pull a stream published on this node (node to node, in a cluster)",
    params(
        ("stream" = String, Path, description = "Stream name"),
        ("layer" = Option<String>, Query, description = "Of a simulcast stream, the rid of the layer to pull (one session per layer); without it, the layer that is the top one now"),
    ),
    request_body(content = String, content_type = "application/sdp", description = "The relaying node's receive-only offer"),
    responses(
        (status = 201, description = "The SDP answer; `Location` is the session resource (DELETE it with a ticket); of a simulcast stream, `Castgate-Layers` lists its layers' rids, smallest first, but without `layer` the one this session carries (the top one now) last", body = String, content_type = "application/sdp"),
        (status = 400, description = "Invalid stream name, a body that is not UTF-8, not a usable SDP offer, or a `layer` the stream does not have"),
        (status = 401, description = "No ticket, or one not signed with the cluster secret for this stream"),
        (status = 404, description = "This node is not part of a cluster"),
        (status = 409, description = "The stream is not published on this node"),
        (status = 413, description = "The offer is larger than `http.max_body_bytes`"),
        (status = 415, description = "The Content-Type is not `application/sdp`"),
        (status = 422, description = "The offer cannot receive the stream's codecs"),
        (status = 429, description = "Too many requests or sessions from the relaying node's address"),
        (status = 503, description = "The stream has the most viewers allowed, the media engine is overloaded, or shutting down (`Retry-After`)"),
    ),
)]
pub async fn post(
    State(state): State<AppState>,
    Extension(client): Extension<super::client::Client>,
    Path(stream): Path<String>,
    Query(query): Query<RelayQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let name = session::stream_name(&stream)?;
    require_ticket(cluster(&state)?, &headers, &name)?;
    session::require_content_type(&headers, SDP)?;
    let offer = session::text(&body)?;
    // Only what is published here: a relay never pulls from a relay.
    let live = state
        .hub
        .get(&name)
        .filter(|s| s.origin().is_none())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                format!("stream {:?} is not published on this node", name.as_str()),
            )
        })?;
    // Each relay session carries one of the origin's layers, by rid: the
    // main one (no `layer`) the top layer as it is now, named last in
    // `Castgate-Layers` (the relay's top slot), the others the layer asked for.
    let mut rids: Vec<(LayerId, String)> =
        live.layers().into_iter().map(|l| (l.id, l.rid)).collect();
    let want = match query.layer.as_deref() {
        None => match live.resolve_layer(Want::Top) {
            Some(top) if !rids.is_empty() => {
                // Stable: the others keep their order, the top goes last.
                rids.sort_by_key(|(id, _)| *id == top);
                Want::Layer(top)
            }
            _ => Want::Top,
        },
        Some(rid) => live.layer_by_rid(rid).map(Want::Layer).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("stream {:?} has no layer {rid:?}", name.as_str()),
            )
        })?,
    };
    let rids: Vec<String> = rids.into_iter().map(|(_, rid)| rid).collect();
    let answer = state
        .engine
        .view_for_relay(live, offer, client.ip, want)
        .await?;
    let mut resp = session::created(&state, "cluster/relay", &name, answer);
    if !rids.is_empty()
        && let Ok(v) = HeaderValue::from_str(&rids.join(","))
    {
        resp.headers_mut().insert(LAYERS_HEADER, v);
    }
    Ok(resp)
}

/// The query of `POST /cluster/relay/{stream}`.
#[derive(Debug, Default, serde::Deserialize)]
pub struct RelayQuery {
    /// `?layer=`: the rid of the simulcast layer to pull.
    layer: Option<String>,
}

/// `DELETE /cluster/relay/{stream}/{session}`: a relay ends its pull.
#[utoipa::path(
    delete,
    path = "/cluster/relay/{stream}/{session}",
    operation_id = "cluster_relay_stop",
    tag = "cluster",
    summary = "End a relay's pull (node to node)",
    params(
        ("stream" = String, Path, description = "Stream name"),
        ("session" = String, Path, description = "Session id from the `Location` of the 201"),
    ),
    responses(
        (status = 200, description = "The session ended"),
        (status = 400, description = "Invalid stream name"),
        (status = 401, description = "No ticket, or one not signed with the cluster secret for this stream"),
        (status = 404, description = "No such session, or not a cluster node"),
        (status = 429, description = "Too many requests from the relaying node's address"),
    ),
)]
pub async fn delete(
    State(state): State<AppState>,
    Path((stream, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let name = session::stream_name(&stream)?;
    require_ticket(cluster(&state)?, &headers, &name)?;
    session::delete(&state, RoleKind::Viewer, &name, &id).await
}
