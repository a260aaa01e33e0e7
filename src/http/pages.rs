//! castgate's own web pages: home (`/`), publish (`/publish`), watch
//! (`/watch/{stream}`) and recordings (`/recordings`), plus their assets under
//! `/web/{file}`.
//!
//! Every file of `web/` is compiled into the binary, so a deployment is the one
//! executable. For working on the pages, set `CASTGATE_WEB_DIR` to a directory
//! (usually the repository's `web/`): files are then read from there on every
//! request, and an edit shows up on the next reload without a rebuild.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;

use axum::Router;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;

/// Environment variable naming a directory to serve the pages from instead of
/// the copies built into the binary (for development).
pub const WEB_DIR_ENV: &str = "CASTGATE_WEB_DIR";

/// A file of `web/` built into the binary.
struct Asset {
    name: &'static str,
    body: &'static [u8],
}

macro_rules! assets {
    ($($name:literal),* $(,)?) => {
        &[$(Asset { name: $name, body: include_bytes!(concat!("../../web/", $name)) }),*]
    };
}

/// Every file of `web/` (a test checks that none is missing).
const ASSETS: &[Asset] = assets![
    "index.html",
    "publish.html",
    "watch.html",
    "recordings.html",
    "index.js",
    "publish.js",
    "watch.js",
    "recordings.js",
    "style.css",
    "app.js",
    "whip.js",
    "whep.js",
    "favicon.svg",
];

/// Sent with the HTML pages: scripts, styles and media from this origin only;
/// WHIP/WHEP and the API are fetched from this origin too.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   media-src 'self' blob: mediastream:; connect-src 'self'; object-src 'none'; \
                   base-uri 'none'; form-action 'self'";

/// The page routes and `/web/{file}`, to be merged into the main router.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/publish", get(publish))
        .route("/watch/{stream}", get(watch))
        .route("/recordings", get(recordings))
        .route("/web/{file}", get(asset))
}

/// `GET /`: the home page.
#[utoipa::path(
    get,
    path = "/",
    operation_id = "page_home",
    tag = "pages",
    summary = "Home page: live streams",
    responses(
        (status = 200, description = "The page", body = String, content_type = "text/html"),
        (status = 304, description = "Unchanged since the `If-None-Match` ETag"),
    ),
)]
pub async fn home(h: HeaderMap) -> Response {
    serve("index.html", h).await
}

/// `GET /publish`: the publish page (camera → WHIP).
#[utoipa::path(
    get,
    path = "/publish",
    operation_id = "page_publish",
    tag = "pages",
    summary = "Publish page: camera and microphone over WHIP",
    responses(
        (status = 200, description = "The page", body = String, content_type = "text/html"),
        (status = 304, description = "Unchanged since the `If-None-Match` ETag"),
    ),
)]
pub async fn publish(h: HeaderMap) -> Response {
    serve("publish.html", h).await
}

/// `GET /watch/{stream}`: the watch page (WHEP player); the page reads the
/// stream name from its own URL.
#[utoipa::path(
    get,
    path = "/watch/{stream}",
    operation_id = "page_watch",
    tag = "pages",
    summary = "Watch page: a WHEP player",
    params(("stream" = String, Path, description = "Stream name (read by the page's script)")),
    responses(
        (status = 200, description = "The page", body = String, content_type = "text/html"),
        (status = 304, description = "Unchanged since the `If-None-Match` ETag"),
    ),
)]
pub async fn watch(
    axum::extract::State(state): axum::extract::State<AppState>,
    h: HeaderMap,
) -> Response {
    let mut resp = serve("watch.html", h).await;
    // In a cluster that redirects viewers, the page's WHEP request is sent
    // on to the stream's origin: the other nodes may be connected to too.
    if let Some(c) = &state.cluster
        && c.config().whep == crate::config::ClusterWhep::Redirect
    {
        let origins = c.other_origins();
        if !origins.is_empty()
            && let Ok(v) = HeaderValue::from_str(&CSP.replace(
                "connect-src 'self'",
                &format!("connect-src 'self' {}", origins.join(" ")),
            ))
        {
            resp.headers_mut()
                .insert(header::CONTENT_SECURITY_POLICY, v);
        }
    }
    resp
}

/// `GET /recordings`: the recordings page.
#[utoipa::path(
    get,
    path = "/recordings",
    operation_id = "page_recordings",
    tag = "pages",
    summary = "Recordings page: list, play, download",
    responses(
        (status = 200, description = "The page", body = String, content_type = "text/html"),
        (status = 304, description = "Unchanged since the `If-None-Match` ETag"),
    ),
)]
pub async fn recordings(h: HeaderMap) -> Response {
    serve("recordings.html", h).await
}

/// `GET /web/{file}`: a script, style sheet or image of the pages.
#[utoipa::path(
    get,
    path = "/web/{file}",
    operation_id = "page_asset",
    tag = "pages",
    summary = "An asset of the pages (script, style sheet, image)",
    params(("file" = String, Path, description = "File name, e.g. `whip.js`")),
    responses(
        (status = 200, description = "The file, with its type", body = [u8], content_type = "application/octet-stream"),
        (status = 304, description = "Unchanged since the `If-None-Match` ETag"),
        (status = 404, description = "No such file"),
    ),
)]
pub async fn asset(Path(file): Path<String>, h: HeaderMap) -> Response {
    serve(&file, h).await
}

/// Answers one file: from `CASTGATE_WEB_DIR` when set, else from the binary.
async fn serve(name: &str, request: HeaderMap) -> Response {
    let dir = std::env::var_os(WEB_DIR_ENV)
        .filter(|d| !d.is_empty())
        .map(PathBuf::from);
    match load(dir, name).await {
        Some(body) => respond(name, body, &request),
        None => not_found(),
    }
}

/// The file's bytes from `dir`, or from the binary when `dir` is `None`.
async fn load(dir: Option<PathBuf>, name: &str) -> Option<Bytes> {
    if !is_plain_file_name(name) {
        return None;
    }
    match dir {
        Some(dir) => tokio::fs::read(dir.join(name)).await.ok().map(Bytes::from),
        None => ASSETS
            .iter()
            .find(|a| a.name == name)
            .map(|a| Bytes::from_static(a.body)),
    }
}

fn respond(name: &str, body: Bytes, request: &HeaderMap) -> Response {
    let etag = etag(&body);
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, body).into_response()
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(name)),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    if name.ends_with(".html") {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
    }
    resp
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "no such page\n",
    )
        .into_response()
}

/// One path segment made of safe characters, not hidden: no way out of the directory.
fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn etag(body: &[u8]) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut hasher);
    format!("\"{:016x}\"", hasher.finish())
}

fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map_or("", |(_, e)| e);
    match ext.to_ascii_lowercase().as_str() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "webp" => "image/webp",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_web_file_is_built_in() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
        let entries = std::fs::read_dir(&dir).expect("web/ exists");
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_file() && !name.starts_with('.') {
                assert!(
                    ASSETS.iter().any(|a| a.name == name),
                    "web/{name} is not in pages::ASSETS"
                );
            }
        }
    }

    #[test]
    fn file_names_cannot_escape() {
        for bad in [
            "",
            "..",
            "../Cargo.toml",
            ".hidden",
            "a/b",
            "a\\b",
            "%2e%2e",
        ] {
            assert!(!is_plain_file_name(bad), "{bad:?}");
        }
        assert!(is_plain_file_name("whip.js"));
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("whep.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("style.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("favicon.svg"), "image/svg+xml");
        assert_eq!(content_type("blob"), "application/octet-stream");
    }

    #[tokio::test]
    async fn serves_built_in_files_with_revalidation() {
        let body = load(None, "whip.js").await.expect("built in");
        let resp = respond("whip.js", body.clone(), &HeaderMap::new());
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-cache");
        let mut again = HeaderMap::new();
        again.insert(header::IF_NONE_MATCH, resp.headers()[header::ETAG].clone());
        assert_eq!(
            respond("whip.js", body, &again).status(),
            StatusCode::NOT_MODIFIED
        );
        assert!(load(None, "nope.js").await.is_none());
        assert!(load(None, "../Cargo.toml").await.is_none());
    }

    #[tokio::test]
    async fn reads_from_a_directory_when_asked() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("web");
        let from_disk = load(Some(dir.clone()), "index.html")
            .await
            .expect("on disk");
        assert_eq!(from_disk, load(None, "index.html").await.expect("built in"));
        assert!(load(Some(dir), "../Cargo.toml").await.is_none());
    }
}
