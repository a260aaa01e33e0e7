//! HLS over HTTP: start, stop and inspect a stream's HLS output
//! (`POST`/`DELETE`/`GET /api/streams/{name}/hls`) and serve its files
//! (`GET /hls/{stream}/index.m3u8` and the segments the muxer names; any
//! other file name is a 404, so no path can be reached outside the folder).

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use super::session::stream_name;
use crate::restream::hls::PLAYLIST;
use crate::restream::{HlsInfo, RestreamError, Source};

fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such HLS file")
}

/// `POST /api/streams/{name}/hls`: starts HLS for the live stream (201), or
/// answers the running output (200).
#[utoipa::path(
    post,
    path = "/api/streams/{name}/hls",
    operation_id = "start_hls",
    tag = "hls",
    summary = "Start HLS output for a live stream",
    params(("name" = String, Path, description = "Stream name")),
    responses(
        (status = 201, description = "Started", body = HlsInfo),
        (status = 200, description = "Already running", body = HlsInfo),
        (status = 400, description = "Invalid stream name"),
        (status = 403, description = "The token does not grant admin on this stream, or restreaming (and HLS) is disabled"),
        (status = 404, description = "The stream is not live"),
        (status = 429, description = "Too many requests or failed attempts from this address"),
        (status = 500, description = "A thread could not be started"),
        (status = 503, description = "Shutting down"),
    ),
    security(("bearer" = ["admin"]), ("query_token" = ["admin"])),
)]
pub async fn start(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let name = stream_name(&name)?;
    if !state.config.restream.enabled {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "restreaming (and HLS) is disabled (restream.enabled = false)",
        ));
    }
    let running = state.restreamer.hls_info(name.as_str()).is_some();
    let stream = state
        .hub
        .get(&name)
        .ok_or_else(|| RestreamError::NotLive(name.to_string()))?;
    let info = state.restreamer.start_hls(&stream, Source::Api)?;
    let status = if running {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(info)).into_response())
}

/// `GET /api/streams/{name}/hls`: the output's state, 404 if none.
#[utoipa::path(
    get,
    path = "/api/streams/{name}/hls",
    operation_id = "get_hls",
    tag = "hls",
    summary = "A stream's HLS output",
    params(("name" = String, Path, description = "Stream name")),
    responses(
        (status = 200, description = "The output's state", body = HlsInfo),
        (status = 400, description = "Invalid stream name"),
        (status = 404, description = "No HLS output for this stream"),
    ),
)]
pub async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<HlsInfo>, ApiError> {
    let name = stream_name(&name)?;
    state
        .restreamer
        .hls_info(name.as_str())
        .map(Json)
        .ok_or_else(|| RestreamError::NotFound("hls".into()).into())
}

/// `DELETE /api/streams/{name}/hls`: stops the output; its files are gone
/// when this answers.
#[utoipa::path(
    delete,
    path = "/api/streams/{name}/hls",
    operation_id = "stop_hls",
    tag = "hls",
    summary = "Stop HLS output; its files are gone when this answers",
    params(("name" = String, Path, description = "Stream name")),
    responses(
        (status = 200, description = "The output's last state", body = HlsInfo),
        (status = 400, description = "Invalid stream name"),
        (status = 404, description = "No HLS output for this stream"),
        (status = 429, description = "Too many requests or failed attempts from this address"),
        (status = 500, description = "The output could not be stopped"),
    ),
    security(("bearer" = ["admin"]), ("query_token" = ["admin"])),
)]
pub async fn stop(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<HlsInfo>, ApiError> {
    let name = stream_name(&name)?;
    let r = state.restreamer.clone();
    let stream = name.to_string();
    tokio::task::spawn_blocking(move || r.stop_hls(&stream))
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "stop failed"))?
        .map(Json)
        .map_err(ApiError::from)
}

/// `GET /hls/{stream}/{file}`: the playlist (`no-cache`) or a segment. A
/// playlist asked for with `?token=` lists its segments with the same
/// `?token=`, since players resolve segment names without the playlist's query.
#[utoipa::path(
    get,
    path = "/hls/{stream}/{file}",
    operation_id = "get_hls_file",
    tag = "hls",
    summary = "An HLS playlist or segment",
    params(
        ("stream" = String, Path, description = "Stream name"),
        ("file" = String, Path, description = "`index.m3u8` or a segment `seg<N>.ts`"),
    ),
    responses(
        (status = 200, description = "The playlist (`application/vnd.apple.mpegurl`, `no-cache`) or a segment (`video/mp2t`)", body = [u8], content_type = "application/vnd.apple.mpegurl"),
        (status = 404, description = "No such file"),
    ),
    security(("bearer" = ["view"]), ("query_token" = ["view"])),
)]
pub async fn file(
    State(state): State<AppState>,
    Path((name, file)): Path<(String, String)>,
    uri: axum::http::Uri,
) -> Result<Response, ApiError> {
    let name = stream_name(&name).map_err(|_| not_found())?;
    let path = state
        .restreamer
        .hls_file(name.as_str(), &file)
        .ok_or_else(not_found)?;
    let mut data = tokio::fs::read(&path).await.map_err(|_| not_found())?;
    let playlist = file == PLAYLIST;
    if playlist && let Some(token) = raw_query_token(&uri) {
        data = with_token(&String::from_utf8_lossy(&data), token).into_bytes();
    }
    let (ctype, cache) = if playlist {
        ("application/vnd.apple.mpegurl", "no-cache")
    } else {
        ("video/mp2t", "max-age=60")
    };
    Ok((
        [
            (header::CONTENT_TYPE, ctype),
            (header::CACHE_CONTROL, cache),
        ],
        Body::from(data),
    )
        .into_response())
}

/// The `token` query parameter as sent (still percent-encoded).
fn raw_query_token(uri: &axum::http::Uri) -> Option<&str> {
    uri.query()?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, v)| *k == "token" && !v.is_empty())
        .map(|(_, v)| v)
}

/// The playlist with `?token=TOKEN` added to every segment URI.
fn with_token(playlist: &str, token: &str) -> String {
    let mut out = String::with_capacity(playlist.len() + 64);
    for line in playlist.lines() {
        out.push_str(line);
        if !line.is_empty() && !line.starts_with('#') {
            out.push_str("?token=");
            out.push_str(token);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn playlist_segments_carry_the_query_token() {
        let uri: axum::http::Uri = "/hls/a/index.m3u8?x=1&token=a%2Bb".parse().unwrap();
        let t = raw_query_token(&uri).unwrap();
        assert_eq!(t, "a%2Bb");
        let p = "#EXTM3U\n#EXTINF:2.0,\nseg3.ts\n#EXTINF:2.0,\nseg4.ts\n";
        assert_eq!(
            with_token(p, t),
            "#EXTM3U\n#EXTINF:2.0,\nseg3.ts?token=a%2Bb\n#EXTINF:2.0,\nseg4.ts?token=a%2Bb\n"
        );
        assert_eq!(raw_query_token(&"/hls/a/index.m3u8".parse().unwrap()), None);
    }
}
