//! The origin's side of a relay between cluster nodes: another node pulls a
//! stream published here, as a WHEP client, with a ticket signed with the
//! cluster secret (`Authorization: Bearer`). Nothing else gets in: these
//! routes take neither the view token nor a redirect ticket.

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;

use super::AppState;
use super::error::ApiError;
use super::session::{self, SDP};
use crate::cluster::{Cluster, Purpose};
use crate::names::StreamName;
use crate::rtc::RoleKind;

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
    params(("stream" = String, Path, description = "Stream name")),
    request_body(content = String, content_type = "application/sdp", description = "The relaying node's receive-only offer"),
    responses(
        (status = 201, description = "The SDP answer; `Location` is the session resource (DELETE it with a ticket)", body = String, content_type = "application/sdp"),
        (status = 400, description = "Invalid stream name, a body that is not UTF-8, or not a usable SDP offer"),
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
    let answer = state.engine.view_for_relay(live, offer, client.ip).await?;
    Ok(session::created(&state, "cluster/relay", &name, answer))
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
