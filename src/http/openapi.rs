//! The OpenAPI 3 document of the whole HTTP face (WHIP, WHEP, the JSON API,
//! downloads, HLS files, the pages), generated from the handlers'
//! `#[utoipa::path]` attributes and the types they serialize, and served at
//! `GET /api/openapi.json` (open, like `/healthz`).
//!
//! What every operation shares is added here once ([`Finish`]): the document's
//! title, version and license, the two ways to send a token (the
//! `Authorization: Bearer` header, or `?token=`), the access guard's 401, 403
//! and 429 on every guarded operation (an attribute lists them only when it
//! has more to say), and the body of every error (one readable sentence as
//! `text/plain`, see [`super::error`]).
//!
//! Tests keep it complete: every `.route(` in `src/` must be an operation here
//! and every operation a route (unit test below), and the methods and roles
//! documented must be the ones a live gateway enforces (`tests/openapi.rs`).

use std::sync::OnceLock;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    Components, Content, HeaderBuilder, LicenseBuilder, ObjectBuilder, OpenApi as Document,
    PathItem, RefOr, Type,
};
use utoipa::{Modify, OpenApi};

/// Path of the document.
pub const PATH: &str = "/api/openapi.json";
/// Name of the `Authorization: Bearer` security scheme.
pub const BEARER: &str = "bearer";
/// Name of the `?token=` security scheme.
pub const QUERY_TOKEN: &str = "query_token";

#[derive(OpenApi)]
#[openapi(
    paths(
        super::whip::post,
        super::whip::options,
        super::whip::patch,
        super::whip::delete,
        super::whep::post,
        super::whep::options,
        super::whep::patch,
        super::whep::delete,
        super::api::streams,
        super::api::stream,
        super::snapshot::get,
        super::controls::end_stream,
        super::controls::sessions,
        super::controls::end_session,
        super::controls::recording,
        super::controls::start_recording,
        super::controls::stop_recording,
        super::api::healthz,
        super::api::cluster,
        super::relay::post,
        super::relay::delete,
        super::ops::readyz,
        super::ops::metrics,
        super::ops::events,
        super::recordings::list,
        super::recordings::one,
        super::recordings::delete,
        super::recordings::download,
        super::recordings::poster,
        super::recordings::strip,
        super::exports::start,
        super::exports::list,
        super::exports::cancel,
        super::restreams::list_all,
        super::restreams::list,
        super::restreams::add,
        super::restreams::one,
        super::restreams::delete,
        super::hls::get,
        super::hls::start,
        super::hls::stop,
        super::hls::file,
        super::pages::home,
        super::pages::publish,
        super::pages::watch,
        super::pages::recordings,
        super::pages::asset,
        serve,
    ),
    modifiers(&Finish),
    tags(
        (name = "whip", description = "Publishing (WHIP, RFC 9725): POST an SDP offer, then PATCH or DELETE the session resource"),
        (name = "whep", description = "Watching (WHEP): POST an SDP offer, then PATCH or DELETE the session resource"),
        (name = "streams", description = "What is live"),
        (name = "recordings", description = "The recordings catalog: list, inspect, download, delete"),
        (name = "restreams", description = "Pushing live streams to RTMP/RTMPS targets"),
        (name = "hls", description = "HLS output of live streams, and its files"),
        (name = "operations", description = "Health, readiness, metrics, events and this document"),
        (name = "pages", description = "castgate's own web pages and their assets"),
    ),
)]
struct ApiDoc;

/// `GET /api/openapi.json`: this document (built once, on first request).
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    operation_id = "openapi_document",
    tag = "operations",
    summary = "This OpenAPI document",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of every route", body = Object, content_type = "application/json"),
        (status = 500, description = "The document could not be serialized"),
    ),
)]
pub async fn serve() -> Response {
    static JSON: OnceLock<Option<String>> = OnceLock::new();
    match JSON.get_or_init(|| document().to_json().ok()) {
        Some(json) => ([(header::CONTENT_TYPE, "application/json")], json.as_str()).into_response(),
        None => super::error::ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the OpenAPI document could not be serialized",
        )
        .into_response(),
    }
}

/// The document, built from the code.
pub fn document() -> Document {
    ApiDoc::openapi()
}

/// What every operation shares: added once instead of in each attribute.
struct Finish;

impl Modify for Finish {
    fn modify(&self, doc: &mut Document) {
        info(doc);
        security_schemes(doc);
        guard_refusals(doc);
        error_bodies(doc);
    }
}

/// Title, version and license from Cargo.toml.
fn info(doc: &mut Document) {
    doc.info.title = "castgate".into();
    doc.info.version = env!("CARGO_PKG_VERSION").into();
    doc.info.description = Some(format!(
        "{}. Errors are a status code with one readable sentence as text/plain. \
             Whether a route needs a token depends on the `[auth]` config: the roles \
             named in each operation's security are the ones its guard checks.",
        env!("CARGO_PKG_DESCRIPTION")
    ));
    doc.info.license = Some(
        LicenseBuilder::new()
            .name(env!("CARGO_PKG_LICENSE"))
            .identifier(Some(env!("CARGO_PKG_LICENSE")))
            .build(),
    );
}

/// The two ways to send a token, named by every guarded operation's
/// `security` with the role its guard checks.
fn security_schemes(doc: &mut Document) {
    let components = doc.components.get_or_insert_with(Components::new);
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "`Authorization: Bearer <token>`: a static token of `[auth]` or a JWT \
                         granting the role (scope) for the stream",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        QUERY_TOKEN,
        SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
            "token",
            "The same token as `?token=` (for `<video>` sources and download links; \
                 `auth.query_token`)",
        ))),
    );
}

/// The refusals of the access guard, on every guarded operation (one whose
/// `security` names a role) that does not describe its own: 401, 403 for the
/// role the guard checks, 429 for failed attempts.
fn guard_refusals(doc: &mut Document) {
    for item in doc.paths.paths.values_mut() {
        for op in operations_mut(item) {
            let Some(role) = guarded_role(op) else {
                continue;
            };
            let forbidden = match role.as_str() {
                "publish" => "The token does not allow publishing this stream",
                "view" => "The token does not allow viewing this stream",
                _ => {
                    "The token does not grant admin on this stream; or, without a token, the \
                     client is not on this machine (`auth.admin = \"local\"`, the default) and \
                     no admin credential is configured; or a page on another site asked \
                     (`http.admin_origins`)"
                }
            };
            let mut refusals = vec![
                ("401", "A token is required, or the one given is not valid"),
                ("403", forbidden),
                ("429", "Too many failed attempts from this address"),
            ];
            if role == "admin" && op.request_body.is_some() {
                refusals.push(("415", "The body is not `application/json`"));
            }
            for (status, description) in refusals {
                op.responses
                    .responses
                    .entry(status.into())
                    .or_insert_with(|| RefOr::T(utoipa::openapi::Response::new(description)));
            }
        }
    }
}

/// The role (scope) an operation's `security` names, if any.
fn guarded_role(op: &utoipa::openapi::path::Operation) -> Option<String> {
    // utoipa keeps a requirement's scopes private; its JSON form shows them.
    let security = serde_json::to_value(op.security.as_ref()?).ok()?;
    security
        .as_array()?
        .iter()
        .filter_map(|requirement| requirement.as_object())
        .flat_map(|schemes| schemes.values())
        .filter_map(|scopes| scopes.as_array()?.first()?.as_str())
        .map(str::to_owned)
        .next()
}

/// Every refusal's body (one sentence as `text/plain`, [`super::error`]),
/// `WWW-Authenticate` on 401 and `Retry-After` on 429, as every refusal has.
fn error_bodies(doc: &mut Document) {
    let text = || {
        RefOr::T(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some("The reason, one sentence"))
                .build()
                .into(),
        )
    };
    for item in doc.paths.paths.values_mut() {
        for op in operations_mut(item) {
            for (status, resp) in op.responses.responses.iter_mut() {
                let RefOr::T(resp) = resp else { continue };
                if !status.starts_with('4') && !status.starts_with('5') {
                    continue;
                }
                if resp.content.is_empty() {
                    resp.content
                        .insert("text/plain".into(), Content::new(Some(text())));
                }
                let header = |d: &str| {
                    HeaderBuilder::new()
                        .schema(ObjectBuilder::new().schema_type(Type::String))
                        .description(Some(d))
                        .build()
                };
                match status.as_str() {
                    "401" => {
                        resp.headers
                            .insert("WWW-Authenticate".into(), header("`Bearer`: send a token"));
                    }
                    "429" => {
                        resp.headers.insert(
                            "Retry-After".into(),
                            header("Seconds to wait before trying again"),
                        );
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Every operation of a path item.
fn operations_mut(
    item: &mut PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    use serde_json::Value;

    use super::*;

    /// The HTTP methods a path item can hold, as OpenAPI names them.
    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    /// Calls allowed on a method router besides the methods themselves.
    const CHAINED: [&str; 2] = ["layer", "route_layer"];
    /// Router calls that add routes this test cannot see: using one means
    /// teaching the test (and the document) about it first.
    const UNSEEN: [&str; 5] = [
        ".nest(",
        ".nest_service(",
        ".route_service(",
        ".fallback(",
        ".fallback_service(",
    ];

    fn doc() -> Value {
        serde_json::to_value(document()).expect("serializes")
    }

    /// (method, path) of every `.route("PATH", get(…).post(…))` call in Rust
    /// source, or why the source cannot be read that way.
    fn routes_in(src: &str, file: &str) -> Result<Vec<(String, String)>, String> {
        let code: String = src
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .map(|l| format!("{l}\n"))
            .collect();
        if let Some(u) = UNSEEN.iter().find(|u| code.contains(**u)) {
            return Err(format!(
                "{file}: `{u}` adds routes the OpenAPI test cannot list"
            ));
        }
        let mut found = Vec::new();
        for (at, _) in code.match_indices(".route(") {
            let rest = code[at + ".route(".len()..].trim_start();
            let Some(rest) = rest.strip_prefix('"') else {
                return Err(format!(
                    "{file}: a .route( whose path is not a string literal"
                ));
            };
            let (path, rest) = rest
                .split_once('"')
                .ok_or_else(|| format!("{file}: unterminated route path"))?;
            let Some(arg) = rest.trim_start().strip_prefix(',') else {
                return Err(format!("{file}: .route(\"{path}\" has no method router"));
            };
            let calls = top_level_calls(arg)
                .ok_or_else(|| format!("{file}: unbalanced .route(\"{path}\", …)"))?;
            let mut methods = 0;
            for call in calls {
                if METHODS.contains(&call.as_str()) {
                    found.push((call, path.to_string()));
                    methods += 1;
                } else if !CHAINED.contains(&call.as_str()) {
                    return Err(format!(
                        "{file}: .route(\"{path}\", …) calls `{call}`, which this test does not know"
                    ));
                }
            }
            if methods == 0 {
                return Err(format!("{file}: .route(\"{path}\", …) names no method"));
            }
        }
        Ok(found)
    }

    /// The names of the calls at the top level of one call argument (up to
    /// the `)` closing the call it belongs to): `post(a.b(c)).options(d)` →
    /// `post`, `options`. Strings are skipped; `None` if the text ends first.
    fn top_level_calls(arg: &str) -> Option<Vec<String>> {
        let mut calls = Vec::new();
        let mut depth = 0usize;
        let mut ident = String::new();
        let mut chars = arg.chars();
        while let Some(c) = chars.next() {
            match c {
                c if c.is_alphanumeric() || c == '_' => {
                    ident.push(c);
                    continue;
                }
                '(' => {
                    if depth == 0 && !ident.is_empty() {
                        calls.push(ident.clone());
                    }
                    depth += 1;
                }
                '[' | '{' => depth += 1,
                ')' if depth == 0 => return Some(calls),
                ')' | ']' | '}' => depth = depth.checked_sub(1)?,
                '"' => {
                    let mut escaped = false;
                    for s in chars.by_ref() {
                        match s {
                            '\\' if !escaped => escaped = true,
                            '"' if !escaped => break,
                            _ => escaped = false,
                        }
                    }
                }
                _ => {}
            }
            ident.clear();
        }
        None
    }

    fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("src/ is readable").flatten() {
            let path = entry.path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// (method, path) of every operation in the document.
    fn documented(doc: &Value) -> BTreeSet<(String, String)> {
        let mut ops = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for m in METHODS {
                if item.get(m).is_some() {
                    ops.insert((m.to_string(), path.clone()));
                }
            }
        }
        ops
    }

    #[test]
    fn every_route_is_documented_and_every_operation_is_a_route() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let mut routed = BTreeSet::new();
        for f in files {
            // This file names `.route(` in its test's own text.
            if f.ends_with("http/openapi.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&f).expect("readable");
            let name = f.display().to_string();
            routed.extend(routes_in(&text, &name).unwrap_or_else(|e| panic!("{e}")));
        }
        assert!(routed.len() >= 30, "the scan found only {routed:?}");
        let documented = documented(&doc());
        let undocumented: Vec<_> = routed.difference(&documented).collect();
        assert!(
            undocumented.is_empty(),
            "routes with no OpenAPI operation (add #[utoipa::path] to the handler and list it \
             in src/http/openapi.rs): {undocumented:?}"
        );
        let unrouted: Vec<_> = documented.difference(&routed).collect();
        assert!(
            unrouted.is_empty(),
            "OpenAPI operations no .route( serves: {unrouted:?}"
        );
    }

    #[test]
    fn the_route_scan_reads_what_rustfmt_writes_and_refuses_what_it_cannot() {
        let src = r#"
            Router::new()
                .route(
                    "/a/{x}",
                    post(h::post.layer(g.guard(Role::Publish, Scope::Stream, true)))
                        .options(h::options),
                )
                // .route("/commented", get(x))
                .route("/b", get(|h: HeaderMap| async move { serve("x).html", h).await }))
                .route("/c", axum::routing::delete(f).layer(l))
                .route("/d", get(a).put(b).patch(c))
                .with_state(state)
        "#;
        let got: BTreeSet<_> = routes_in(src, "t").unwrap().into_iter().collect();
        let want: BTreeSet<_> = [
            ("post", "/a/{x}"),
            ("options", "/a/{x}"),
            ("get", "/b"),
            ("delete", "/c"),
            ("get", "/d"),
            ("put", "/d"),
            ("patch", "/d"),
        ]
        .into_iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
        assert_eq!(got, want);
        for bad in [
            ".route(PATH, get(x))",
            ".route(\"/e\", on(MethodFilter::GET, h))",
            ".route(\"/e\", get(x)",
            ".route(\"/e\", h)",
            ".nest(\"/api\", api)",
            ".route(\"/\", get(a)).fallback(f)",
        ] {
            assert!(routes_in(bad, "t").is_err(), "{bad}");
        }
    }

    #[test]
    fn the_document_is_openapi_3_with_title_version_and_license() {
        let d = doc();
        assert!(
            d["openapi"].as_str().unwrap().starts_with("3."),
            "{}",
            d["openapi"]
        );
        assert_eq!(d["info"]["title"], "castgate");
        assert_eq!(d["info"]["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(d["info"]["license"]["name"], "MIT OR Apache-2.0");
        let schemes = &d["components"]["securitySchemes"];
        assert_eq!(schemes[BEARER]["scheme"], "bearer");
        assert_eq!(schemes[QUERY_TOKEN]["in"], "query");
        assert_eq!(schemes[QUERY_TOKEN]["name"], "token");
    }

    /// Every `$ref` in `v`.
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(o) => {
                for (k, x) in o {
                    match (k.as_str(), x) {
                        ("$ref", Value::String(r)) => out.push(r),
                        _ => refs(x, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }

    #[test]
    fn every_operation_is_complete() {
        let d = doc();
        let mut ids = BTreeSet::new();
        for (path, item) in d["paths"].as_object().unwrap() {
            let ops: Vec<_> = METHODS
                .iter()
                .filter_map(|m| Some((*m, item.get(*m)?)))
                .collect();
            assert!(!ops.is_empty(), "{path} has no operation");
            let params: Vec<&str> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            for (m, op) in ops {
                let at = format!("{} {path}", m.to_uppercase());
                let id = op["operationId"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{at}: no id"));
                assert!(ids.insert(id.to_string()), "{at}: operationId {id} twice");
                assert!(op["summary"].is_string(), "{at}: no summary");
                let responses = op["responses"].as_object().unwrap();
                assert!(!responses.is_empty(), "{at}: no responses");
                let codes: BTreeSet<u16> = responses.keys().map(|k| k.parse().unwrap()).collect();
                assert!(
                    codes.iter().any(|c| (200..400).contains(c)),
                    "{at}: no success"
                );
                for (code, r) in responses {
                    if code.starts_with('4') || code.starts_with('5') {
                        assert!(r["content"].is_object(), "{at} {code}: no body");
                    }
                }
                for p in &params {
                    let declared = op["parameters"]
                        .as_array()
                        .is_some_and(|ps| ps.iter().any(|x| x["name"] == *p && x["in"] == "path"));
                    assert!(declared, "{at}: path parameter {p} not declared");
                }
                // The layers every such request passes: the rate limiter
                // (POST, PATCH, DELETE), the body limit, the role guard.
                if matches!(m, "post" | "patch" | "delete") {
                    assert!(codes.contains(&429), "{at}: rate limited, no 429");
                }
                if op.get("requestBody").is_some() {
                    assert!(codes.contains(&413), "{at}: has a body, no 413");
                }
                if let Some(sec) = op.get("security") {
                    let reqs = sec.as_array().unwrap();
                    let named: BTreeMap<&str, &Value> = reqs
                        .iter()
                        .flat_map(|r| r.as_object().unwrap().iter())
                        .map(|(k, v)| (k.as_str(), v))
                        .collect();
                    assert_eq!(
                        named.keys().copied().collect::<Vec<_>>(),
                        [BEARER, QUERY_TOKEN],
                        "{at}: both ways to send a token"
                    );
                    let roles: BTreeSet<String> = named.values().map(|v| v.to_string()).collect();
                    assert_eq!(roles.len(), 1, "{at}: one role for both ways: {roles:?}");
                    let role = roles.into_iter().next().unwrap();
                    assert!(
                        ["[\"publish\"]", "[\"view\"]", "[\"admin\"]"].contains(&role.as_str()),
                        "{at}: role {role}"
                    );
                    for c in [401, 403, 429] {
                        assert!(codes.contains(&c), "{at}: guarded, no {c}");
                    }
                }
            }
        }
        let mut all = Vec::new();
        refs(&d, &mut all);
        assert!(!all.is_empty());
        for r in all {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("{r}"));
            assert!(d["components"]["schemas"][name].is_object(), "dangling {r}");
        }
    }

    fn statuses(d: &Value, m: &str, path: &str) -> Vec<u16> {
        d["paths"][path][m]["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{m} {path}"))
            .keys()
            .map(|k| k.parse().unwrap())
            .collect()
    }

    #[test]
    fn whip_and_whep_list_every_answer() {
        let d = doc();
        let mut whip = statuses(&d, "post", "/whip/{stream}");
        whip.sort();
        assert_eq!(
            whip,
            [201, 307, 400, 401, 403, 409, 413, 415, 422, 429, 503]
        );
        let post = &d["paths"]["/whip/{stream}"]["post"];
        assert!(post["requestBody"]["content"]["application/sdp"].is_object());
        let created = &post["responses"]["201"];
        assert!(created["content"]["application/sdp"].is_object());
        for h in ["Location", "ETag", "Link"] {
            assert!(created["headers"][h].is_object(), "201 header {h}");
        }
        assert_eq!(post["security"][0][BEARER][0], "publish");
        assert!(post["responses"]["429"]["headers"]["Retry-After"].is_object());
        assert!(post["responses"]["401"]["headers"]["WWW-Authenticate"].is_object());
        let mut whep = statuses(&d, "post", "/whep/{stream}");
        whep.sort();
        assert_eq!(
            whep,
            [201, 307, 400, 401, 403, 409, 413, 415, 422, 429, 502, 503]
        );
        for base in ["/whip/{stream}/{session}", "/whep/{stream}/{session}"] {
            let mut patch = statuses(&d, "patch", base);
            patch.sort();
            assert_eq!(
                patch,
                [200, 204, 400, 401, 403, 404, 412, 413, 415, 428, 429],
                "{base}"
            );
            let body = &d["paths"][base]["patch"]["requestBody"]["content"];
            assert!(body["application/trickle-ice-sdpfrag"].is_object());
            assert!(d["paths"][base]["delete"].is_object());
        }
        assert!(d["paths"]["/whip/{stream}"]["options"].is_object());
        assert!(d["paths"]["/whep/{stream}"]["options"].is_object());
    }

    #[test]
    fn json_bodies_have_schemas() {
        let d = doc();
        let body = |m: &str, p: &str, code: &str| {
            d["paths"][p][m]["responses"][code]["content"]["application/json"]["schema"]["$ref"]
                .as_str()
                .map(str::to_string)
        };
        for (m, p, code, schema) in [
            ("get", "/api/streams", "200", "StreamList"),
            ("get", "/api/streams/{name}", "200", "StreamInfo"),
            ("get", "/healthz", "200", "Health"),
            ("get", "/readyz", "503", "Readiness"),
            ("get", "/api/recordings", "200", "RecordingList"),
            ("get", "/api/recordings/{id}", "200", "Recording"),
            ("post", "/api/streams/{name}/restreams", "201", "TargetInfo"),
            ("get", "/api/restreams", "200", "TargetList"),
            ("post", "/api/streams/{name}/hls", "201", "HlsInfo"),
        ] {
            assert_eq!(
                body(m, p, code).as_deref(),
                Some(format!("#/components/schemas/{schema}").as_str()),
                "{m} {p} {code}"
            );
        }
        let target = &d["components"]["schemas"]["TargetInfo"]["properties"];
        assert!(target["url"].is_object() && target["state"].is_object());
        let list = &d["paths"]["/api/recordings"]["get"]["parameters"];
        let names: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["in"] == "query")
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["stream", "since", "until", "page", "per_page"]);
    }
}
