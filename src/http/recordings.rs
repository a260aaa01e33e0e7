//! The recordings catalog over HTTP: list, inspect, download (with Range) and
//! delete. Ids are validated by the catalog, so none can reach another file.

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tower::ServiceExt;
use tower_http::services::ServeFile;
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use crate::config::Role;
use crate::config::StorageDelivery;
use crate::record::catalog::{self, Meta};
use crate::record::derived::{self, DerivedError};
use crate::record::index::Location;
use crate::record::mp4::Mp4Audio;

/// Query of `GET /api/recordings`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this stream.
    pub stream: Option<String>,
    /// Only recordings started at or after this RFC 3339 time.
    pub since: Option<String>,
    /// Only recordings started before this RFC 3339 time.
    pub until: Option<String>,
    /// Page number, from 1.
    pub page: Option<usize>,
    /// Items per page (1–500, default 50).
    pub per_page: Option<usize>,
}

/// Body of `GET /api/recordings`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordingList {
    /// This page, newest first.
    pub recordings: Vec<Meta>,
    /// Matching recordings in all pages.
    pub total: usize,
    /// This page's number.
    pub page: usize,
    /// Items per page.
    pub per_page: usize,
}

fn parse_time(key: &str, v: &Option<String>) -> Result<Option<std::time::SystemTime>, ApiError> {
    v.as_deref()
        .map(|s| {
            humantime::parse_rfc3339_weak(s).map_err(|_| {
                ApiError::bad_request(format!(
                    "{key} must be an RFC 3339 time, such as 2026-11-24T15:04:05Z"
                ))
            })
        })
        .transpose()
}

/// `GET /api/recordings`: only the recordings of streams the caller may view
/// (a `stream` filter the caller may not view was refused by the guard).
#[utoipa::path(
    get,
    path = "/api/recordings",
    operation_id = "list_recordings",
    tag = "recordings",
    summary = "List recordings, newest first",
    description = "Without `stream`, lists only the recordings of streams the caller may view; with `stream`, the caller must be allowed to view that stream.",
    params(ListQuery),
    responses(
        (status = 200, description = "One page of recordings", body = RecordingList),
        (status = 400, description = "`since`/`until` are not RFC 3339 times, or `per_page` is out of range"),
        (status = 500, description = "The catalog could not be read"),
    ),
    security(("bearer" = ["view"]), ("query_token" = ["view"])),
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ListQuery>,
) -> Result<Json<RecordingList>, ApiError> {
    let since = parse_time("since", &q.since)?;
    let until = parse_time("until", &q.until)?;
    let per_page = q.per_page.unwrap_or(50);
    if !(1..=500).contains(&per_page) {
        return Err(ApiError::bad_request("per_page must be between 1 and 500"));
    }
    let page = q.page.unwrap_or(1).max(1);
    // The catalog is in memory: one walk in order, only the page copied.
    let mut viewable: std::collections::HashMap<String, bool> = std::collections::HashMap::new();
    let mut may_view = |stream: &str| match viewable.get(stream) {
        Some(&v) => v,
        None => {
            let v = state.gate.may(&caller, Role::View, stream);
            viewable.insert(stream.to_string(), v);
            v
        }
    };
    let in_window = |started_at: &str| {
        if since.is_none() && until.is_none() {
            return true;
        }
        let started = humantime::parse_rfc3339_weak(started_at).ok();
        since.is_none_or(|s| started.is_some_and(|t| t >= s))
            && until.is_none_or(|u| started.is_some_and(|t| t < u))
    };
    let (total, recordings) = state.recorder.page(
        |m| {
            q.stream.as_deref().is_none_or(|s| m.stream == s)
                && may_view(&m.stream)
                && in_window(&m.started_at)
        },
        (page - 1).saturating_mul(per_page),
        per_page,
    );
    Ok(Json(RecordingList {
        recordings,
        total,
        page,
        per_page,
    }))
}

async fn find(state: &AppState, id: String) -> Result<(Meta, Location), ApiError> {
    if catalog::parse_id(&id).is_none() {
        return Err(ApiError::not_found("no such recording"));
    }
    derived::lookup(&state.recorder, &id)
        .await
        .ok_or_else(|| ApiError::not_found("no such recording"))
}

/// `GET /api/recordings/{id}`.
#[utoipa::path(
    get,
    path = "/api/recordings/{id}",
    operation_id = "get_recording",
    tag = "recordings",
    summary = "One recording",
    params(("id" = String, Path, description = "Recording id, `STREAM~TIME`")),
    responses(
        (status = 200, description = "The recording", body = Meta),
        (status = 404, description = "No such recording"),
    ),
    security(("bearer" = ["view"]), ("query_token" = ["view"])),
)]
pub async fn one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Meta>, ApiError> {
    Ok(Json(find(&state, id).await?.0))
}

/// Query of `GET /recordings/{id}/download`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DownloadQuery {
    /// `mp4` for an MP4 copy of an H.264 or AV1 recording (made on the
    /// first request, then kept beside the recording); without it, the
    /// recording's own file (WebM or Matroska).
    pub format: Option<String>,
    /// With `format=mp4`: `aac` re-encodes the Opus audio to AAC, which
    /// Windows' players, DaVinci Resolve, Premiere and Apple devices before
    /// iOS 17 need; `opus` (the default) copies it.
    pub audio: Option<String>,
}

/// `GET /recordings/{id}/download`: the file, with Range support. A recording
/// in progress is served as far as it is written; one only in the bucket is
/// read from there (or redirected to, with `storage.delivery = "redirect"`).
/// With `format=mp4`, an MP4 copy (see [`DownloadQuery`]).
#[utoipa::path(
    get,
    path = "/recordings/{id}/download",
    operation_id = "download_recording",
    tag = "recordings",
    summary = "Download a recording's file, or an MP4 copy of it (Range requests supported)",
    description = "Without `format`, the recording's own file. With `format=mp4`, an H.264 or AV1 recording copied into MP4 with its index first (`faststart`), video not re-encoded; the copy is made on the first request (seconds for an hour) and kept beside the recording, counted by retention. VP8 and VP9 recordings need an export instead (409).",
    params(("id" = String, Path, description = "Recording id, `STREAM~TIME`"), DownloadQuery),
    responses(
        (status = 200, description = "The file (`video/webm`, `audio/webm`, `video/x-matroska`, or `video/mp4` with `format=mp4`) as an attachment", body = [u8], content_type = "video/webm"),
        (status = 206, description = "The requested byte range", body = [u8], content_type = "video/webm"),
        (status = 304, description = "Not modified since `If-Modified-Since`"),
        (status = 307, description = "A stored recording, at a presigned URL of the bucket (`storage.delivery = \"redirect\"`)"),
        (status = 400, description = "`format` or `audio` has an unknown value"),
        (status = 404, description = "No such recording"),
        (status = 409, description = "`format=mp4` of a recording still being written, or of VP8/VP9 video (export it instead)"),
        (status = 416, description = "The range is outside the file"),
        (status = 500, description = "The file could not be read, or the MP4 could not be made"),
        (status = 502, description = "The bucket holding the recording did not answer"),
    ),
    security(("bearer" = ["view"]), ("query_token" = ["view"])),
)]
pub async fn download(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<DownloadQuery>,
    req: Request,
) -> Result<Response, ApiError> {
    match q.format.as_deref() {
        None | Some("original") => {}
        Some("mp4") => {
            let audio = match q.audio.as_deref() {
                None | Some("opus") => Mp4Audio::Opus,
                Some("aac") => Mp4Audio::Aac,
                Some(_) => return Err(ApiError::bad_request("audio must be opus or aac")),
            };
            // A recording made as MP4 (record.h264_container = "mp4") is
            // its own MP4, unless its audio is to become AAC.
            let (meta, location) = find(&state, id.clone()).await?;
            let own =
                meta.file.ends_with(".mp4") && (audio == Mp4Audio::Opus || meta.audio.is_none());
            if !own {
                return download_mp4(&state, &id, meta, location, audio, req).await;
            }
            return original(&state, meta, location, req).await;
        }
        Some(_) => return Err(ApiError::bad_request("format must be mp4 or original")),
    }
    if q.audio.is_some() {
        return Err(ApiError::bad_request("audio is only for format=mp4"));
    }
    let (meta, location) = find(&state, id).await?;
    original(&state, meta, location, req).await
}

/// The recording's own file (local, or from the bucket).
async fn original(
    state: &AppState,
    meta: Meta,
    location: Location,
    req: Request,
) -> Result<Response, ApiError> {
    let mime = meta.content_type();
    let mut resp = match location {
        Location::Local(path) => ServeFile::new_with_mime(
            &path,
            &mime
                .parse()
                .map_err(|_| ApiError::bad_request("bad type"))?,
        )
        .oneshot(req)
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the file"))?
        .map(Body::new),
        Location::Stored => {
            let head = req.method() == axum::http::Method::HEAD;
            stored(state, &meta, mime, req.headers(), head).await?
        }
    };
    attachment(&mut resp, &format!("{}-{}", meta.stream, meta.file));
    Ok(resp.into_response())
}

/// The MP4 copy of a recording, made now if it is not kept yet.
async fn download_mp4(
    state: &AppState,
    id: &str,
    meta: Meta,
    location: Location,
    audio: Mp4Audio,
    req: Request,
) -> Result<Response, ApiError> {
    let path = derived::mp4(&state.recorder, &meta, location, audio)
        .await
        .map_err(|e| match e {
            DerivedError::NeedsExport(_) => {
                ApiError::new(StatusCode::CONFLICT, e.to_string().replace("{id}", id))
            }
            _ => derived_error(e),
        })?;
    let mime = meta.mp4_type();
    let mut resp = ServeFile::new_with_mime(
        &path,
        &mime
            .parse()
            .map_err(|_| ApiError::bad_request("bad type"))?,
    )
    .oneshot(req)
    .await
    .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the file"))?
    .map(Body::new);
    let stem = meta
        .file
        .rsplit_once('.')
        .map_or(meta.file.as_str(), |(s, _)| s);
    attachment(&mut resp, &format!("{}-{stem}.mp4", meta.stream));
    Ok(resp)
}

/// The answer to a derived file that cannot be had.
fn derived_error(e: DerivedError) -> ApiError {
    match e {
        DerivedError::NotFound => ApiError::not_found("no such recording"),
        DerivedError::NoPicture(_) => ApiError::not_found(e.to_string()),
        DerivedError::Busy => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            .with_header(header::RETRY_AFTER, "1"),
        DerivedError::InProgress | DerivedError::NeedsExport(_) => {
            ApiError::new(StatusCode::CONFLICT, e.to_string())
        }
        DerivedError::Storage(_) => ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()),
        DerivedError::Failed(_) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `GET /recordings/{id}/poster.jpg`.
#[utoipa::path(
    get,
    path = "/recordings/{id}/poster.jpg",
    operation_id = "recording_poster",
    tag = "recordings",
    summary = "A recording's poster: its picture about a second in (JPEG, at most 640x360)",
    description = "Made when the recording finishes (or on the first request), kept beside it.",
    params(("id" = String, Path, description = "Recording id, `STREAM~TIME`")),
    responses(
        (status = 200, description = "The picture", body = [u8], content_type = "image/jpeg"),
        (status = 304, description = "Not modified since `If-Modified-Since`"),
        (status = 404, description = "No such recording, no video, still being written, or only in object storage with no picture made"),
        (status = 503, description = "Too many pictures are being made (`Retry-After`)"),
    ),
    security(("bearer" = ["view"]), ("query_token" = ["view"])),
)]
pub async fn poster(
    State(state): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    picture(&state, &id, derived::Kind::Poster, req).await
}

/// `GET /recordings/{id}/strip.jpg`.
#[utoipa::path(
    get,
    path = "/recordings/{id}/strip.jpg",
    operation_id = "recording_strip",
    tag = "recordings",
    summary = "A row of small pictures (160x90 each) at even times through a recording, for hover previews",
    description = "`N` = width / 160 pictures (one per 2 s of recording, at most 60); picture `i` shows the time `(i + 0.5) × duration / N`. Made when the recording finishes (or on the first request), kept beside it.",
    params(("id" = String, Path, description = "Recording id, `STREAM~TIME`")),
    responses(
        (status = 200, description = "The strip", body = [u8], content_type = "image/jpeg"),
        (status = 304, description = "Not modified since `If-Modified-Since`"),
        (status = 404, description = "No such recording, no video, still being written, or only in object storage with no picture made"),
        (status = 503, description = "Too many pictures are being made (`Retry-After`)"),
    ),
    security(("bearer" = ["view"]), ("query_token" = ["view"])),
)]
pub async fn strip(
    State(state): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    picture(&state, &id, derived::Kind::Strip, req).await
}

async fn picture(
    state: &AppState,
    id: &str,
    kind: derived::Kind,
    req: Request,
) -> Result<Response, ApiError> {
    if catalog::parse_id(id).is_none() {
        return Err(ApiError::not_found("no such recording"));
    }
    let path = derived::picture(&state.recorder, id, kind, state.snapshots.places())
        .await
        .map_err(derived_error)?;
    let jpeg = "image/jpeg"
        .parse()
        .map_err(|_| ApiError::bad_request("bad type"))?;
    let mut resp = ServeFile::new_with_mime(&path, &jpeg)
        .oneshot(req)
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the file"))?
        .map(Body::new);
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    Ok(resp)
}

/// Names the file a browser saves a download as.
fn attachment(resp: &mut Response, name: &str) {
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
}

/// A stored recording: the requested range read from the bucket and passed
/// on as it arrives, or a redirect to a presigned URL.
async fn stored(
    state: &AppState,
    meta: &Meta,
    mime: &'static str,
    headers: &axum::http::HeaderMap,
    head: bool,
) -> Result<Response, ApiError> {
    let unavailable = |e: crate::record::storage::StorageError| {
        tracing::warn!(recording = %meta.id, error = %e, "cannot read a stored recording");
        match e {
            crate::record::storage::StorageError::NotFound => {
                ApiError::not_found("the recording is no longer in the bucket")
            }
            _ => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "the storage holding this recording did not answer; try again",
            ),
        }
    };
    let Some(storage) = state.recorder.storage().cloned() else {
        return Err(ApiError::not_found("no such recording"));
    };
    if storage.config().delivery == StorageDelivery::Redirect {
        let url = storage
            .presigned_url(meta, storage.presign_validity(meta))
            .await
            .map_err(unavailable)?;
        let mut resp = StatusCode::TEMPORARY_REDIRECT.into_response();
        if let Ok(v) = HeaderValue::from_str(&url) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return Ok(resp);
    }
    let size = match meta.size_bytes {
        Some(s) => s,
        None => storage.size(meta).await.map_err(unavailable)?,
    };
    // One satisfiable range is served as such; a malformed header or several
    // ranges are ignored (the whole file, as RFC 9110 allows); a range
    // outside the file is refused.
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => None,
        Some(r) => match http_range_header::parse_range_header(r) {
            Err(_) => None,
            Ok(parsed) => match parsed.validate(size) {
                Ok(ranges) if ranges.len() == 1 => Some(*ranges[0].start()..*ranges[0].end() + 1),
                Ok(_) => None,
                Err(_) => {
                    let mut resp = (
                        StatusCode::RANGE_NOT_SATISFIABLE,
                        "the range is outside the file",
                    )
                        .into_response();
                    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                        resp.headers_mut().insert(header::CONTENT_RANGE, v);
                    }
                    return Ok(resp);
                }
            },
        },
    };
    let partial = range.is_some();
    let (body, served, total) = if head {
        // HEAD: the headers a GET would have, without reading the bucket.
        let served = range.clone().unwrap_or(0..size);
        (Body::empty(), served, size)
    } else {
        let read = storage.read(meta, range).await.map_err(unavailable)?;
        (Body::from_stream(read.body), read.range, read.size)
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = if partial {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(served.end - served.start),
    );
    if partial
        && let Ok(v) = HeaderValue::from_str(&format!(
            "bytes {}-{}/{}",
            served.start,
            served.end.saturating_sub(1),
            total
        ))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    Ok(resp)
}

/// `DELETE /api/recordings/{id}`: 204; 409 while it is being recorded.
#[utoipa::path(
    delete,
    path = "/api/recordings/{id}",
    operation_id = "delete_recording",
    tag = "recordings",
    summary = "Delete a recording",
    params(("id" = String, Path, description = "Recording id, `STREAM~TIME`")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such recording"),
        (status = 409, description = "The recording is still being written"),
        (status = 429, description = "Too many requests or failed attempts from this address"),
        (status = 500, description = "The files could not be deleted"),
    ),
    security(("bearer" = ["admin"]), ("query_token" = ["admin"])),
)]
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if catalog::parse_id(&id).is_none() {
        return Err(ApiError::not_found("no such recording"));
    }
    if state.recorder.is_active(&id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "the recording is still being written; stop the stream first",
        ));
    }
    let recorder = state.recorder.clone();
    match tokio::task::spawn_blocking(move || recorder.delete(&id)).await {
        Ok(Ok(true)) => Ok(StatusCode::NO_CONTENT.into_response()),
        Ok(Ok(false)) => Err(ApiError::not_found("no such recording")),
        Ok(Err(e)) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot delete: {e}"),
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot delete",
        )),
    }
}
