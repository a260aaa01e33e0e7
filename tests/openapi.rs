//! The OpenAPI document against a live gateway: it is served open at
//! `/api/openapi.json`, every method it documents is routed and every other
//! one is not (405), and the role each operation names is the one its guard
//! enforces. (That every `.route(` in the code is documented is checked by
//! the unit tests of `src/http/openapi.rs`.)

use crate::common;

use castgate::server::Server;
use common::gateway::{self, url};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Methods a route can be probed with (OPTIONS is answered by the CORS
/// layer for every path, HEAD by every GET route).
const PROBED: [&str; 5] = ["get", "post", "put", "patch", "delete"];
const ROLES: [&str; 3] = ["publish", "view", "admin"];

fn token(role: &str) -> String {
    format!("openapi-test-{role}-token")
}

/// A gateway where every role needs its own token, and failed attempts are
/// never limited (the test makes many on purpose).
async fn protected() -> Server {
    gateway::start(|c| {
        c.auth.publish_token = Some(token("publish"));
        c.auth.view_token = Some(token("view"));
        c.auth.admin_token = Some(token("admin"));
        c.auth.failure_burst = 1_000_000;
        c.auth.failures_per_min = 1_000_000;
    })
    .await
}

/// A concrete URL path for a path template. Recording ids must parse as
/// such (`STREAM~TIME`), or the guard leaves the refusal to the handler.
fn concrete(template: &str) -> String {
    let path: Vec<String> = template
        .split('/')
        .map(|seg| match seg {
            "{id}" => "probe~2026-01-01T00-00-00Z".to_string(),
            "{file}" => "index.m3u8".to_string(),
            "{session}" => "no-such-session".to_string(),
            s if s.starts_with('{') => "probe".to_string(),
            s => s.to_string(),
        })
        .collect();
    // `stream=` makes the listing of recordings check the caller's role.
    format!("{}?stream=probe", path.join("/"))
}

async fn document(server: &Server) -> Value {
    let resp = reqwest::get(url(server, "/api/openapi.json"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "served without a token");
    assert_eq!(resp.headers()["content-type"], "application/json");
    resp.json().await.unwrap()
}

/// An operation of the document.
struct Op {
    method: String,
    path: String,
    /// The role its security names, if any.
    role: Option<String>,
    /// The statuses it lists.
    statuses: Vec<u16>,
}

/// Every operation but OPTIONS (answered by the CORS layer).
fn operations(doc: &Value) -> Vec<Op> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if method == "options" || !op.is_object() {
                continue;
            }
            ops.push(Op {
                method: method.clone(),
                path: path.clone(),
                role: op["security"][0]["bearer"][0].as_str().map(str::to_string),
                statuses: statuses(op),
            });
        }
    }
    ops
}

fn statuses(op: &Value) -> Vec<u16> {
    op["responses"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.parse().unwrap())
        .collect()
}

async fn status(server: &Server, method: &str, path: &str, bearer: Option<&str>) -> StatusCode {
    let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let mut req = reqwest::Client::new().request(method, url(server, path));
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    // The body is not read: the event stream stays open.
    req.send().await.unwrap().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_document_is_the_generated_one() {
    let server = protected().await;
    let served = document(&server).await;
    let built = serde_json::to_value(castgate::http::openapi::document()).unwrap();
    assert_eq!(served, built);
    assert!(served["openapi"].as_str().unwrap().starts_with("3."));
    assert!(served["paths"]["/api/openapi.json"]["get"].is_object());
    // Served again: the same bytes (built once).
    let again = document(&server).await;
    assert_eq!(served, again);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_methods_are_exactly_the_routed_ones() {
    let server = protected().await;
    let doc = document(&server).await;
    assert_eq!(
        status(&server, "get", "/no/such/route", None).await,
        StatusCode::NOT_FOUND
    );
    let mut probed = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        if let Some(op) = item.get("options") {
            // A browser's preflight, as the CORS layer answers it.
            let resp = reqwest::Client::new()
                .request(Method::OPTIONS, url(&server, &concrete(path)))
                .header("origin", "http://example.test")
                .header("access-control-request-method", "POST")
                .send()
                .await
                .unwrap();
            let got = resp.status().as_u16();
            assert!(statuses(op).contains(&got), "OPTIONS {path}: {got}");
            assert_eq!(resp.headers()["accept-post"], "application/sdp");
        }
        for m in PROBED {
            let got = status(&server, m, &concrete(path), None).await;
            let documented = item.get(m).is_some();
            if documented {
                assert_ne!(
                    got,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{m} {path} is documented"
                );
                probed += 1;
            } else {
                assert_eq!(
                    got,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{m} {path} answers but is not documented"
                );
            }
        }
    }
    assert!(probed >= 30, "only {probed} operations probed");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_roles_are_the_enforced_ones() {
    let server = protected().await;
    let doc = document(&server).await;
    let ops = operations(&doc);
    assert!(ops.iter().filter(|o| o.role.is_some()).count() >= 15);
    for op in ops {
        let (m, path) = (&op.method, &op.path);
        let listed = |s: StatusCode| op.statuses.contains(&s.as_u16());
        let p = concrete(path);
        let anonymous = status(&server, m, &p, None).await;
        assert!(
            listed(anonymous),
            "{m} {path} answered {anonymous}, not documented"
        );
        let Some(role) = op.role.clone() else {
            assert!(
                anonymous != StatusCode::UNAUTHORIZED && anonymous != StatusCode::FORBIDDEN,
                "{m} {path} is documented open but answered {anonymous}"
            );
            continue;
        };
        assert_eq!(
            anonymous,
            StatusCode::UNAUTHORIZED,
            "{m} {path} is documented as needing {role}"
        );
        let right = status(&server, m, &p, Some(&token(&role))).await;
        assert!(listed(right), "{m} {path} answered {right}, not documented");
        assert!(
            ![
                StatusCode::UNAUTHORIZED,
                StatusCode::FORBIDDEN,
                StatusCode::TOO_MANY_REQUESTS
            ]
            .contains(&right),
            "{m} {path} refused the {role} token: {right}"
        );
        for other in ROLES.iter().filter(|r| **r != role) {
            let wrong = status(&server, m, &p, Some(&token(other))).await;
            assert!(
                wrong == StatusCode::UNAUTHORIZED || wrong == StatusCode::FORBIDDEN,
                "{m} {path} (role {role}) let the {other} token through: {wrong}"
            );
        }
    }
    server.shutdown().await;
}
