//! What operators and their tools poll: `/metrics` (Prometheus), `/readyz`
//! (can this instance take sessions?) and `/api/events` (server-sent events).

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use utoipa::ToSchema;

use super::AppState;
use super::error::ApiError;

/// `GET /metrics`: every figure in the Prometheus text format (404 when
/// `metrics.enabled` is off).
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "operations",
    summary = "Prometheus metrics",
    responses(
        (status = 200, description = "Every figure in the Prometheus text format 0.0.4", body = String, content_type = "text/plain"),
        (status = 401, description = "From another machine without `metrics.token`, an admin token or a network in `metrics.allow_networks`"),
        (status = 403, description = "The token does not grant admin on every stream, or a page on another site asked (`http.admin_origins`)"),
        (status = 404, description = "Metrics are turned off (`metrics.enabled = false`)"),
        (status = 500, description = "The metrics could not be rendered"),
    ),
    security(("bearer" = ["admin"]), ("query_token" = ["admin"])),
)]
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let Some(m) = state.metrics.clone() else {
        return Err(ApiError::not_found("metrics are turned off"));
    };
    // A scrape walks every stream; keep it off the async workers.
    let text = tokio::task::spawn_blocking(move || m.render())
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "metrics could not be rendered",
            )
        })?
        .map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "metrics could not be rendered",
            )
        })?;
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
}

/// One readiness check.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Check {
    /// Whether it passed.
    pub ok: bool,
    /// What was found (or why it failed).
    pub detail: String,
}

/// Body of `GET /readyz`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not ready`.
    pub status: &'static str,
    /// The first failed check's reason, when not ready.
    pub reason: Option<String>,
    /// The media socket is bound and read.
    pub udp: Check,
    /// The recordings folder accepts a new file (when recording is on).
    pub recordings_dir: Check,
    /// Free space where recordings go is at least `record.min_free_mib`.
    pub disk: Check,
    /// The server is not shutting down.
    pub accepting: Check,
    /// In a cluster: Redis answers (without it no publish can be accepted
    /// safely); absent on a single node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Check>,
}

/// `GET /readyz`: 200 when this instance can take publishers and record,
/// 503 with the reason otherwise (`/healthz` only says the process answers).
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "operations",
    summary = "Readiness: can this instance take publishers and record?",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready: `reason` names the first failed check", body = Readiness),
    ),
)]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let udp = Check {
        ok: state.engine.is_running(),
        detail: format!("udp {}", state.engine.local_addr()),
    };
    let accepting = Check {
        ok: !state.hub.is_closed(),
        detail: if state.hub.is_closed() {
            "shutting down".into()
        } else {
            "accepting sessions".into()
        },
    };
    let recorder = state.recorder.clone();
    let (recordings_dir, disk) = if recorder.enabled() {
        let dir = recorder.dir().to_path_buf();
        let min = recorder.min_free_bytes();
        // File-system calls can stall: not on the async workers.
        tokio::task::spawn_blocking(move || (dir_writable(&dir), disk_space(&dir, min)))
            .await
            .unwrap_or_else(|_| {
                let c = Check {
                    ok: false,
                    detail: "check failed".into(),
                };
                (c.clone(), c)
            })
    } else {
        let off = Check {
            ok: true,
            detail: "recording is off".into(),
        };
        (off.clone(), off)
    };
    let cluster = state.cluster.as_ref().map(|c| {
        if c.duplicate_id() {
            Check {
                ok: false,
                detail: format!(
                    "another live node uses the node id {}: give each node its own (cluster.node_id)",
                    c.node_id()
                ),
            }
        } else if c.is_reachable() {
            Check {
                ok: true,
                detail: format!("node {} reaches Redis", c.node_id()),
            }
        } else {
            Check {
                ok: false,
                detail: format!(
                    "node {} cannot reach the cluster's Redis: streams here carry on, new publishes are refused",
                    c.node_id()
                ),
            }
        }
    });
    let reason = [
        ("udp", Some(&udp)),
        ("recordings_dir", Some(&recordings_dir)),
        ("disk", Some(&disk)),
        ("accepting", Some(&accepting)),
        ("cluster", cluster.as_ref()),
    ]
    .iter()
    .filter_map(|(name, c)| Some((name, (*c)?)))
    .find(|(_, c)| !c.ok)
    .map(|(name, c)| format!("{name}: {}", c.detail));
    let ready = reason.is_none();
    let body = Readiness {
        status: if ready { "ready" } else { "not ready" },
        reason,
        udp,
        recordings_dir,
        disk,
        accepting,
        cluster,
    };
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// Creates and removes a probe file in `dir`.
fn dir_writable(dir: &Path) -> Check {
    let probe: PathBuf = dir.join(format!(".castgate-ready-{}", std::process::id()));
    let result = std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::write(&probe, b"ok"))
        .and_then(|_| std::fs::remove_file(&probe));
    match result {
        Ok(()) => Check {
            ok: true,
            detail: format!("{} is writable", dir.display()),
        },
        Err(e) => Check {
            ok: false,
            detail: format!("{} is not writable: {e}", dir.display()),
        },
    }
}

fn disk_space(dir: &Path, min: u64) -> Check {
    match crate::record::free_bytes(dir) {
        Some(free) => Check {
            ok: free >= min,
            detail: format!(
                "{} MiB free, minimum {} MiB",
                free / (1024 * 1024),
                min / (1024 * 1024)
            ),
        },
        None => Check {
            ok: false,
            detail: format!("cannot read the free space of {}", dir.display()),
        },
    }
}

/// `GET /api/events`: the event bus as server-sent events (`event:` the type,
/// `id:` the sequence number, `data:` the JSON). A client that falls behind
/// gets a `lagged` event with the number of events it missed. The stream ends
/// when the server shuts down. At most `events.max_sse_clients` at once:
/// beyond, 503 with `Retry-After`.
#[utoipa::path(
    get,
    path = "/api/events",
    operation_id = "events",
    tag = "operations",
    summary = "The event stream (server-sent events)",
    description = "Each event has `event:` its type (e.g. `stream_started`, `recording_finalized`, `restream_state`, `config_reloaded`), `id:` its sequence number and `data:` the event as JSON; `lagged` (data: how many were missed) when the client fell behind. Ends when the server shuts down. At most `events.max_sse_clients` clients at once.",
    responses(
        (status = 200, description = "A `text/event-stream` that stays open", body = String, content_type = "text/event-stream"),
        (status = 403, description = "The token does not grant admin on every stream"),
        (status = 503, description = "Too many event stream clients (`events.max_sse_clients`); `Retry-After` says when to try again"),
    ),
    security(("bearer" = ["admin"]), ("query_token" = ["admin"])),
)]
pub async fn events(
    State(state): State<AppState>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    // Held by the stream: the place is given back when the client goes.
    let place = state.sse_clients.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "too many event stream clients (events.max_sse_clients = {}); retry later",
                state.config.events.max_sse_clients
            ),
        )
        .with_header(header::RETRY_AFTER, "10")
    })?;
    let bus = state.hub.events().clone();
    let rx = bus.subscribe();
    let stream =
        futures_util::stream::unfold((rx, bus, place), |(mut rx, bus, place)| async move {
            let next = tokio::select! {
                _ = bus.closed() => return None,
                r = rx.recv() => r,
            };
            let event = match next {
                Ok(env) => SseEvent::default()
                    .event(env.event.kind())
                    .id(env.seq.to_string())
                    .json_data(&*env)
                    .unwrap_or_else(|_| SseEvent::default().comment("unserializable event")),
                Err(RecvError::Lagged(n)) => {
                    SseEvent::default().event("lagged").data(n.to_string())
                }
                Err(RecvError::Closed) => return None,
            };
            Some((Ok(event), (rx, bus, place)))
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
