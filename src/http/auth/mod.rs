//! Access control over HTTP: which role a route needs for which stream, the
//! request's token (`Authorization: Bearer`, or `?token=` for browsers that
//! cannot set headers), the decision ([`policy`]), the optional callback
//! ([`callback`]), and the limit on failed attempts per client address.
//!
//! Routes are guarded with [`Gate::guard`] layers after routing, so the
//! stream is read from axum's own (decoded) path parameters: the name that
//! is checked is the name the handler gets.

pub mod callback;
pub mod jwt;
pub mod policy;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRequestParts, Query, RawPathParams, Request, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::client::Client;
use super::error::ApiError;
use super::ratelimit::RateLimiter;
use crate::config::{AuthConfig, Role};
use crate::names::StreamName;
use crate::outbound::OutboundPolicy;
use crate::record::catalog;
use callback::{Callback, Question, Verdict};
use policy::{Denial, Grant, Policy};

/// Why the gate could not be set up from the config.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// The JWT public key.
    #[error("auth.jwt_public_key: {0}")]
    Key(#[from] jwt::KeyError),
    /// The callback client.
    #[error(transparent)]
    Callback(#[from] callback::CallbackError),
}

/// Where a guarded route finds the stream it is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The path parameter `{stream}` or `{name}`.
    Stream,
    /// The path parameter `{id}`, a recording id (`STREAM~TIME`).
    Recording,
    /// The `stream` query parameter, when given (listings: without it, the
    /// handler shows only what the caller may see).
    QueryStream,
    /// No one stream: the whole server (metrics, the event stream). Decided
    /// as for the stream pattern `*`, so only a grant for every stream passes.
    Server,
}

/// The token a request carried, for handlers that filter by it (stored in
/// the request's extensions by every guard). Never printed.
#[derive(Clone, Default)]
pub struct Caller {
    token: Option<Arc<str>>,
    local: bool,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("token", &self.token.as_ref().map(|_| "****"))
            .field("local", &self.local)
            .finish()
    }
}

/// Access control in force: the current [`GateRules`], swapped whole when
/// the config is reloaded (a request decides with the rules it started with).
pub struct Gate {
    current: parking_lot::RwLock<Arc<GateRules>>,
    /// In a cluster: checks the tickets other nodes sign for the viewers
    /// they redirect here.
    tickets: std::sync::OnceLock<crate::cluster::TicketKey>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("rules", &self.rules())
            .finish()
    }
}

/// One `[auth]` made ready: the access policy, the failed-attempt limiter
/// and the callback. Built (and so validated: keys loaded, callback client
/// made) before it replaces the rules in force.
pub struct GateRules {
    policy: Policy,
    failures: Arc<RateLimiter>,
    failure_rate: (u32, u32),
    callback: Option<Callback>,
    query_token: bool,
}

impl std::fmt::Debug for GateRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GateRules")
            .field("policy", &self.policy)
            .field("callback", &self.callback.is_some())
            .finish()
    }
}

impl GateRules {
    /// The rules of `[auth]`; fails on a JWT key or callback that cannot be
    /// used. The callback is asked only where `outbound` allows.
    pub fn new(auth: &AuthConfig, outbound: &Arc<OutboundPolicy>) -> Result<GateRules, GateError> {
        let failure_rate = (auth.failures_per_min, auth.failure_burst);
        Ok(GateRules {
            policy: Policy::new(auth)?,
            failures: Arc::new(RateLimiter::with_rate(
                f64::from(failure_rate.0) / 60.0,
                f64::from(failure_rate.1),
            )),
            failure_rate,
            callback: Callback::from_config(auth, outbound)?,
            query_token: auth.query_token,
        })
    }
}

/// What one guard layer checks.
#[derive(Clone)]
pub struct Guard {
    gate: Arc<Gate>,
    role: Role,
    scope: Scope,
    callback: bool,
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
    stream: Option<String>,
    cluster_ticket: Option<String>,
}

/// The request's token: the `Authorization: Bearer` header, else (when
/// allowed) the `token` query parameter.
pub fn token_of(headers: &HeaderMap, uri: &Uri, query_token: bool) -> Option<String> {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_string())
        })
        .filter(|t| !t.is_empty());
    if header.is_some() || !query_token {
        return header;
    }
    Query::<TokenQuery>::try_from_uri(uri)
        .ok()
        .and_then(|q| q.0.token)
        .filter(|t| !t.is_empty())
}

fn verb(role: Role) -> &'static str {
    match role {
        Role::Publish => "publish",
        Role::View => "view",
        Role::Admin => "administer",
    }
}

impl Gate {
    /// The gate of rules made ready beforehand (`GateRules::new`).
    pub fn from_rules(rules: GateRules) -> Gate {
        Gate {
            current: parking_lot::RwLock::new(Arc::new(rules)),
            tickets: std::sync::OnceLock::new(),
        }
    }

    /// Accepts cluster tickets signed with `key` on view routes (set once,
    /// when the node joins a cluster).
    pub fn accept_cluster_tickets(&self, key: crate::cluster::TicketKey) {
        let _ = self.tickets.set(key);
    }

    /// The rules in force now (a snapshot: a reload does not change it).
    pub fn rules(&self) -> Arc<GateRules> {
        self.current.read().clone()
    }

    /// Puts `rules` in force for every request that starts from now on;
    /// requests already being decided finish with the rules they took. The
    /// failed-attempt counts carry over when their rate did not change.
    pub fn replace(&self, mut rules: GateRules) {
        let mut current = self.current.write();
        if current.failure_rate == rules.failure_rate {
            rules.failures = current.failures.clone();
        }
        *current = Arc::new(rules);
    }

    /// A route layer requiring `role` on the stream found by `scope`. With
    /// `callback`, the access callback (if configured) is asked too.
    pub fn guard(self: &Arc<Self>, role: Role, scope: Scope, callback: bool) -> GuardLayer {
        axum::middleware::from_fn_with_state(
            Guard {
                gate: self.clone(),
                role,
                scope,
                callback,
            },
            guard_entry as GuardFn,
        )
    }

    /// Whether `caller` may `role` the stream `stream` (no callback, no
    /// failure counting): for filtering listings.
    pub fn may(&self, caller: &Caller, role: Role, stream: &str) -> bool {
        self.rules()
            .policy
            .decide(role, stream, caller.token.as_deref(), caller.local)
            .is_ok()
    }

    /// The whole decision for one request (with the rules in force now):
    /// failure limit, policy, callback.
    pub async fn check(
        &self,
        client: Client,
        role: Role,
        stream: &str,
        token: Option<&str>,
        ask_callback: bool,
    ) -> Result<Grant, ApiError> {
        self.rules()
            .check(client, role, stream, token, ask_callback)
            .await
    }
}

impl GateRules {
    /// The whole decision for one request: failure limit, policy, callback.
    pub async fn check(
        &self,
        client: Client,
        role: Role,
        stream: &str,
        token: Option<&str>,
        ask_callback: bool,
    ) -> Result<Grant, ApiError> {
        let callback = self.callback.as_ref().filter(|_| ask_callback);
        let open = self.policy.is_open(role, stream, client.local);
        if (!open || callback.is_some())
            && let Some(wait) = self.failures.wait(client.ip, Instant::now())
        {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many failed attempts from this address; retry in {secs} s"),
            )
            .with_header(header::RETRY_AFTER, &secs.to_string()));
        }
        let grant = match self.policy.decide(role, stream, token, client.local) {
            Ok(g) => g,
            Err(d) => return Err(self.refuse(client, role, stream, d)),
        };
        if let Some(cb) = callback {
            let q = Question {
                action: role.as_str(),
                stream,
                client_address: client.ip.to_string(),
                https: client.https,
                token_present: token.is_some(),
            };
            match cb.ask(&q).await {
                Verdict::Allow => {}
                Verdict::Deny(reason) => {
                    return Err(self.refuse(client, role, stream, Denial::Forbidden(reason)));
                }
                Verdict::Unavailable(reason) => {
                    tracing::warn!(%reason, stream, role = %role, "access callback unavailable; denied");
                    return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, reason));
                }
            }
        }
        tracing::debug!(client = %client.ip, role = %role, stream, grant = ?grant, "access granted");
        Ok(grant)
    }

    /// Counts a failure against the address and words the refusal.
    fn refuse(&self, client: Client, role: Role, stream: &str, d: Denial) -> ApiError {
        self.failures.allow(client.ip, Instant::now());
        let err = match d {
            Denial::Missing => ApiError::new(
                StatusCode::UNAUTHORIZED,
                format!(
                    "a Bearer token is required to {} stream {stream:?} (Authorization: Bearer, or ?token= in the URL)",
                    verb(role)
                ),
            )
            .with_header(header::WWW_AUTHENTICATE, "Bearer"),
            Denial::Invalid(reason) => ApiError::new(StatusCode::UNAUTHORIZED, reason)
                .with_header(header::WWW_AUTHENTICATE, "Bearer"),
            Denial::Forbidden(reason) => ApiError::new(StatusCode::FORBIDDEN, reason),
            Denial::NotLocal {
                reason,
                token_possible: true,
            } => ApiError::new(StatusCode::UNAUTHORIZED, reason)
                .with_header(header::WWW_AUTHENTICATE, "Bearer"),
            Denial::NotLocal {
                reason,
                token_possible: false,
            } => ApiError::new(StatusCode::FORBIDDEN, reason),
        };
        tracing::info!(
            client = %client.ip,
            role = %role,
            stream,
            status = err.status.as_u16(),
            reason = %err.reason,
            "access denied"
        );
        err
    }
}

/// The future of a guard layer.
pub type GuardFuture = std::pin::Pin<Box<dyn Future<Output = Response> + Send>>;
/// The function of a guard layer.
pub type GuardFn = fn(State<Guard>, Request, Next) -> GuardFuture;
/// A route layer made by [`Gate::guard`].
pub type GuardLayer = axum::middleware::FromFnLayer<GuardFn, Guard, (State<Guard>, Request)>;

fn guard_entry(State(g): State<Guard>, req: Request, next: Next) -> GuardFuture {
    Box::pin(guard(g, req, next))
}

async fn guard(g: Guard, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    // One set of rules for the whole request, even if a reload swaps them meanwhile.
    let rules = g.gate.rules();
    let token = token_of(&parts.headers, &parts.uri, rules.query_token);
    let stream: Option<String> = match g.scope {
        Scope::Server => Some("*".to_string()),
        Scope::Stream | Scope::Recording => {
            let params = RawPathParams::from_request_parts(&mut parts, &()).await;
            let raw = params.ok().and_then(|p| {
                p.iter()
                    .find(|(k, _)| match g.scope {
                        Scope::Recording => *k == "id",
                        _ => *k == "stream" || *k == "name",
                    })
                    .map(|(_, v)| v.to_string())
            });
            match g.scope {
                Scope::Recording => raw.and_then(|id| catalog::parse_id(&id)).map(|(s, _)| s),
                _ => raw.and_then(|s| StreamName::parse(&s).ok()),
            }
            .map(|s| s.as_str().to_string())
        }
        Scope::QueryStream => Query::<TokenQuery>::try_from_uri(&parts.uri)
            .ok()
            .and_then(|q| q.0.stream)
            .and_then(|s| StreamName::parse(&s).ok())
            .map(|s| s.as_str().to_string()),
    };
    let client = client_of(&parts.extensions);
    // A viewer another node of the cluster let through and redirected here,
    // or a publisher a loaded node placed here.
    let purpose = match g.role {
        Role::View => Some(crate::cluster::Purpose::View),
        Role::Publish => Some(crate::cluster::Purpose::Publish),
        Role::Admin => None,
    };
    let ticket = match (&stream, g.gate.tickets.get(), purpose) {
        (Some(stream), Some(key), Some(purpose)) if g.scope == Scope::Stream => {
            Query::<TokenQuery>::try_from_uri(&parts.uri)
                .ok()
                .and_then(|q| q.0.cluster_ticket)
                .map(|t| key.verify(&t, purpose, stream, std::time::SystemTime::now()))
        }
        _ => None,
    };
    match ticket {
        Some(Ok(())) => {}
        Some(Err(e)) => {
            return ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()).into_response();
        }
        // No valid stream: the handler refuses the request itself (400/404)
        // before touching anything, or (a listing) filters by the caller.
        None => {
            if let Some(stream) = stream
                && let Err(e) = rules
                    .check(client, g.role, &stream, token.as_deref(), g.callback)
                    .await
            {
                return e.into_response();
            }
        }
    }
    // An admin write's body is JSON: no "simple" cross-site form post.
    if g.role == Role::Admin
        && let Err(e) = super::crosssite::require_json(&parts.method, &parts.headers)
    {
        return e.into_response();
    }
    parts.extensions.insert(Caller {
        token: token.map(Arc::from),
        local: client.local,
    });
    next.run(Request::from_parts(parts, body)).await
}

/// The request's client (from the [`super::client`] layer); a router
/// served without it sees an unknown remote client.
fn client_of(extensions: &axum::http::Extensions) -> Client {
    extensions.get::<Client>().copied().unwrap_or(Client {
        ip: std::net::IpAddr::from([0, 0, 0, 0]),
        https: false,
        local: false,
    })
}

/// Who may read `/metrics` besides an admin grant for every stream (which
/// includes clients on this machine while the admin role is `local`): a
/// scraper with its own token, or a client in an allowed network. Set at
/// start-up (`[metrics]`).
#[derive(Clone, Default)]
pub struct MetricsAccess {
    /// `metrics.token` (a secret).
    pub token: Option<Arc<str>>,
    /// `metrics.allow_networks`.
    pub networks: Arc<[crate::address::Network]>,
}

impl std::fmt::Debug for MetricsAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsAccess")
            .field("token", &self.token.as_ref().map(|_| "****"))
            .field("networks", &self.networks)
            .finish()
    }
}

/// The function of the `/metrics` guard layer.
pub type MetricsGuardFn = fn(State<MetricsGuard>, Request, Next) -> GuardFuture;
/// The route layer made by [`Gate::metrics_guard`].
pub type MetricsGuardLayer =
    axum::middleware::FromFnLayer<MetricsGuardFn, MetricsGuard, (State<MetricsGuard>, Request)>;

/// The state of the `/metrics` guard.
#[derive(Clone)]
pub struct MetricsGuard {
    gate: Arc<Gate>,
    access: MetricsAccess,
}

impl Gate {
    /// The route layer of `/metrics`: [`MetricsAccess`], else the admin role
    /// for every stream.
    pub fn metrics_guard(self: &Arc<Self>, access: MetricsAccess) -> MetricsGuardLayer {
        axum::middleware::from_fn_with_state(
            MetricsGuard {
                gate: self.clone(),
                access,
            },
            metrics_entry as MetricsGuardFn,
        )
    }
}

fn metrics_entry(State(g): State<MetricsGuard>, req: Request, next: Next) -> GuardFuture {
    Box::pin(async move {
        let client = client_of(req.extensions());
        let rules = g.gate.rules();
        let token = token_of(req.headers(), req.uri(), rules.query_token);
        let by_token = match (&g.access.token, &token) {
            (Some(want), Some(got)) => policy::constant_time_eq(want.as_bytes(), got.as_bytes()),
            _ => false,
        };
        if by_token || crate::address::in_networks(&g.access.networks, client.ip) {
            return next.run(req).await;
        }
        match rules
            .check(client, Role::Admin, "*", token.as_deref(), false)
            .await
        {
            Ok(_) => next.run(req).await,
            Err(e) if matches!(e.status.as_u16(), 401 | 403) => {
                // With a scraper token configured, a token is the way in.
                let status = if g.access.token.is_some() {
                    StatusCode::UNAUTHORIZED
                } else {
                    e.status
                };
                let err = ApiError::new(
                    status,
                    "/metrics is readable from this machine (while auth.admin is \"local\"), \
                     from a network in metrics.allow_networks, or with metrics.token or an admin \
                     token as Authorization: Bearer",
                );
                if status == StatusCode::UNAUTHORIZED {
                    err.with_header(header::WWW_AUTHENTICATE, "Bearer")
                } else {
                    err
                }
                .into_response()
            }
            Err(e) => e.into_response(),
        }
    })
}

/// Whether a raw query key means `token` once percent-decoded (`%74oken`
/// is read as `token` by the query parser, so it must be hidden too).
fn is_token_key(raw: &str) -> bool {
    let mut decoded = Vec::with_capacity(raw.len());
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied(),
            bytes.get(i + 2).copied(),
        ) {
            (b'%', Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                decoded.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                decoded.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    decoded.eq_ignore_ascii_case(b"token")
        || decoded.eq_ignore_ascii_case(CLUSTER_TICKET.as_bytes())
}

/// The query parameter of a cluster ticket: a node that redirected a viewer
/// to a stream's origin vouches for it there (see [`crate::cluster::ticket`]).
pub const CLUSTER_TICKET: &str = "cluster_ticket";

/// The request's URI with the value of every `token` query parameter
/// replaced by `****`, for logs.
pub fn redacted_uri(uri: &Uri) -> String {
    let Some(query) = uri.query() else {
        return uri.to_string();
    };
    let cleaned: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if is_token_key(k) => format!("{k}=****"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{}?{}", uri.path(), cleaned.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_token_keys_are_redacted_too() {
        let uri: Uri = "/hls/a/index.m3u8?%74oken=SECRET&x=1&TOKEN=two"
            .parse()
            .unwrap();
        let shown = redacted_uri(&uri);
        assert!(
            !shown.contains("SECRET") && !shown.contains("two"),
            "{shown}"
        );
        assert!(shown.contains("x=1"), "{shown}");
    }

    #[test]
    fn token_from_header_then_query() {
        let mut h = HeaderMap::new();
        let uri: Uri = "/hls/a/index.m3u8?x=1&token=q-tok".parse().unwrap();
        assert_eq!(token_of(&h, &uri, true).as_deref(), Some("q-tok"));
        assert_eq!(token_of(&h, &uri, false), None, "query tokens can be off");
        h.insert(header::AUTHORIZATION, "bearer  h-tok ".parse().unwrap());
        assert_eq!(token_of(&h, &uri, true).as_deref(), Some("h-tok"));
        h.insert(header::AUTHORIZATION, "Basic xyz".parse().unwrap());
        assert_eq!(token_of(&h, &"/x".parse().unwrap(), true), None);
    }

    #[test]
    fn tokens_are_redacted_from_logged_uris() {
        let uri: Uri = "/recordings/a~b/download?v=3&token=SECRET&TOKEN=S2"
            .parse()
            .unwrap();
        let shown = redacted_uri(&uri);
        assert!(
            !shown.contains("SECRET") && !shown.contains("S2"),
            "{shown}"
        );
        assert!(
            shown.contains("v=3") && shown.contains("token=****"),
            "{shown}"
        );
        let plain: Uri = "/whip/demo".parse().unwrap();
        assert_eq!(redacted_uri(&plain), "/whip/demo");
    }
}
