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
#[utoipa::path(
    post,
    path = "/whip/{stream}",
    operation_id = "whip_publish",
    tag = "whip",
    summary = "Publish a stream (WHIP, RFC 9725)",
    params(("stream" = String, Path, description = "Stream name: letters, digits, `-`, `_`, `.`")),
    request_body(content = String, content_type = "application/sdp", description = "The publisher's SDP offer: at most one audio and one video track"),
    responses(
        (status = 201, description = "Publishing: the SDP answer", body = String, content_type = "application/sdp", headers(
            ("Location" = String, description = "The session resource, `/whip/{stream}/{session}`: PATCH and DELETE it"),
            ("ETag" = String, description = "The session's ICE credentials tag, for `If-Match` on a trickle PATCH"),
            ("Link" = String, description = "ICE servers: `<turn:…>; rel=\"ice-server\"`, with credentials when configured"),
            ("Accept-Patch" = String, description = "`application/trickle-ice-sdpfrag`"),
        )),
        (status = 307, description = "In a cluster with placement on (`cluster.placement_max_sessions`): this node is loaded; `Location` is the WHIP URL on the least-loaded node, with a short-lived `cluster_ticket` that lets this publisher in there"),
        (status = 400, description = "Invalid stream name, a body that is not UTF-8, or not a usable SDP offer"),
        (status = 403, description = "The token (or the access callback) does not allow publishing this stream"),
        (status = 409, description = "The stream already has a publisher (in a cluster: on any node)"),
        (status = 413, description = "The offer is larger than `http.max_body_bytes`"),
        (status = 415, description = "The Content-Type is not `application/sdp`"),
        (status = 422, description = "A valid offer asking for something castgate does not do (codecs, track counts)"),
        (status = 429, description = "Too many requests, failed attempts or sessions from this address"),
        (status = 503, description = "Shutting down, the media engine is overloaded (`Retry-After`; the name is not kept), the access callback is unavailable, or (in a cluster) Redis cannot be reached (`Retry-After`)"),
    ),
    security(("bearer" = ["publish"]), ("query_token" = ["publish"])),
)]
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
    // A loaded node sends the publisher to the least-loaded one.
    if let Some((node, ticket)) = state.cluster.as_ref().and_then(|c| c.placement(&name)) {
        tracing::info!(stream = %name, to = %node, "publisher placed on a less loaded node");
        return Ok(session::redirect_with_ticket(
            &node,
            "whip",
            &name,
            &ticket,
            &[],
        ));
    }
    // In a cluster the name is claimed cluster-wide first: one origin per name.
    let claim = match &state.cluster {
        Some(cluster) => {
            let takeover = state.config.whip.on_conflict == crate::config::OnConflict::Takeover;
            Some(cluster.claim(&name, takeover).await?)
        }
        None => None,
    };
    let answer = state.engine.publish(name.clone(), offer, client.ip).await?;
    if let Some(claim) = claim {
        claim.started();
    }
    if let (Some(cluster), Some(stream)) = (&state.cluster, state.hub.get(&name)) {
        take_over_targets(cluster, &state.restreamer, &stream).await;
        take_over_recording(cluster, &state.recorder, &stream).await;
    }
    Ok(session::created(&state, "whip", &name, answer))
}

/// Starts on `stream` (just published here) the API restream targets the
/// name's previous origin kept in the cluster (a publisher that reconnected
/// to this node within `restream.resume_secs`), with their ids; those this
/// node resumed itself are left alone.
async fn take_over_targets(
    cluster: &crate::cluster::Cluster,
    restreamer: &crate::restream::Restreamer,
    stream: &std::sync::Arc<crate::stream::LiveStream>,
) {
    use crate::restream::SavedTarget;
    let Some(json) = cluster
        .load_state(stream.name(), SavedTarget::STATE_KIND)
        .await
    else {
        return;
    };
    match serde_json::from_str::<Vec<SavedTarget>>(&json) {
        // Starting a target only spawns its thread: nothing here blocks.
        Ok(saved) if !saved.is_empty() => {
            restreamer.adopt(stream, saved);
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(stream = %stream.name(), error = %e, "the kept restream targets are not readable; none taken over");
        }
    }
}

/// Records `stream` (just published here) if its previous origin did, e.g.
/// on an operator's request that `record.streams` alone would not repeat.
async fn take_over_recording(
    cluster: &crate::cluster::Cluster,
    recorder: &crate::record::Recorder,
    stream: &std::sync::Arc<crate::stream::LiveStream>,
) {
    if cluster
        .load_state(stream.name(), crate::record::RECORDING_STATE_KIND)
        .await
        .as_deref()
        == Some("on")
        && let Err(e) = recorder.record(stream)
    {
        tracing::warn!(stream = %stream.name(), error = %e, "the recording of the stream's previous origin is not continued here");
    }
}

/// `OPTIONS /whip/{stream}`.
#[utoipa::path(
    options,
    path = "/whip/{stream}",
    operation_id = "whip_options",
    tag = "whip",
    summary = "What the WHIP endpoint accepts (CORS preflight)",
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

/// `PATCH /whip/{stream}/{id}`: trickle ICE or ICE restart.
#[utoipa::path(
    patch,
    path = "/whip/{stream}/{session}",
    operation_id = "whip_patch",
    tag = "whip",
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
    security(("bearer" = ["publish"]), ("query_token" = ["publish"])),
)]
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
#[utoipa::path(
    delete,
    path = "/whip/{stream}/{session}",
    operation_id = "whip_stop",
    tag = "whip",
    summary = "Stop publishing",
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
    security(("bearer" = ["publish"]), ("query_token" = ["publish"])),
)]
pub async fn delete(
    State(state): State<AppState>,
    Path((stream, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let name = session::stream_name(&stream)?;
    session::delete(&state, RoleKind::Publisher, &name, &id).await
}
