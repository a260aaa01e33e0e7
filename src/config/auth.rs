//! The `[auth]` section: who may publish, view and administer which streams,
//! with which tokens, and how signed tokens (JWTs) are checked.
//!
//! Kept apart from the rest of the config because it is the one section with
//! secrets and its own validation (key files, rule patterns).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};
use crate::names::Pattern;

/// What a request wants to do with a stream.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Send media (WHIP).
    Publish,
    /// Receive media: WHEP, HLS, a stream's recordings (list, play, download).
    View,
    /// Change things through the API: restream targets, HLS start/stop,
    /// deleting recordings.
    Admin,
}

impl Role {
    /// Every role, in a fixed order.
    pub const ALL: [Role; 3] = [Role::Publish, Role::View, Role::Admin];

    /// The role's name as written in the config and in tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Publish => "publish",
            Role::View => "view",
            Role::Admin => "admin",
        }
    }

    /// Parses a role name as written in the config and in tokens.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a role needs credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// Anyone may.
    #[default]
    Open,
    /// Clients on this machine may without a credential (a loopback
    /// connection, no forwarding headers, a loopback `Host`); everyone else
    /// needs one, as with `protected`. The admin role's default.
    Local,
    /// A static token of the matching rule, a JWT granting the role for the
    /// stream, or (for the legacy keys) the configured token is required.
    Protected,
}

impl Access {
    /// The value as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Open => "open",
            Access::Local => "local",
            Access::Protected => "protected",
        }
    }
}

/// One access rule: for `role` on streams matching `streams`, either open,
/// local (open to this machine) or protected by `tokens` (and any JWT that
/// grants the role for the stream).
/// The first rule matching a request's role and stream decides.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRule {
    /// The role this rule is about.
    pub role: Role,
    /// Stream name patterns (`*` and `?` wildcards); default: every stream.
    #[serde(default = "every_stream")]
    pub streams: Vec<Pattern>,
    /// `open` or `protected` (the default).
    #[serde(default = "protected")]
    pub access: Access,
    /// Static Bearer tokens accepted by a protected rule (secrets: never logged).
    #[serde(default)]
    pub tokens: Vec<String>,
}

fn every_stream() -> Vec<Pattern> {
    vec!["*".into()]
}

fn protected() -> Access {
    Access::Protected
}

/// Access control for publishing, viewing and the API's writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Publishing when no rule matches: `open`, `local` or `protected`.
    pub publish: Access,
    /// Viewing (WHEP, HLS, recordings) when no rule matches: `open`,
    /// `local` or `protected`.
    pub view: Access,
    /// The admin role (the API's writes, `/api/events`) when no rule
    /// matches: `local` (the default: this machine only, a token from
    /// anywhere else), `protected` (a token always) or `open` (anyone: a
    /// warning is logged at start-up).
    pub admin: Access,
    /// Rules per role and stream name pattern; the first match decides, before
    /// the per-stream and shared tokens below.
    pub rules: Vec<AccessRule>,
    /// One token required to publish any stream (unless a per-stream token is set).
    pub publish_token: Option<String>,
    /// One token required to view any stream (unless a per-stream token is set):
    /// WHEP, HLS and recordings.
    pub view_token: Option<String>,
    /// One token required for the API's writes on any stream.
    pub admin_token: Option<String>,
    /// Per-stream publish tokens: stream name → token. Overrides `publish_token`.
    pub stream_publish_tokens: BTreeMap<String, String>,
    /// Per-stream view tokens: stream name → token. Overrides `view_token`.
    pub stream_view_tokens: BTreeMap<String, String>,
    /// Shared secret of HS256-signed JWTs (at least 32 bytes); `castgate
    /// token` mints with it.
    pub jwt_secret: Option<String>,
    /// PEM public key (RSA → RS256, EC P-256 → ES256) of JWTs signed elsewhere.
    pub jwt_public_key: Option<PathBuf>,
    /// Seconds of clock difference tolerated on a JWT's `exp`/`nbf`.
    pub jwt_leeway_secs: u64,
    /// Accept the token as `?token=` in the URL too (for `<video>` sources and
    /// download links, which cannot send headers).
    pub query_token: bool,
    /// Failed attempts (401/403) a client address may make at once …
    pub failure_burst: u32,
    /// … and per minute after that; beyond, it gets 429 with `Retry-After`.
    pub failures_per_min: u32,
    /// URL asked (POST JSON) before each WHIP/WHEP session starts; 2xx allows.
    pub callback_url: Option<String>,
    /// Seconds the callback may take; no answer in time denies (fail closed).
    pub callback_timeout_secs: f64,
    /// Extra CA certificates (PEM) an `https://` callback is verified against,
    /// besides the built-in Mozilla roots (for a private CA).
    pub callback_ca_file: Option<PathBuf>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            publish: Access::Open,
            view: Access::Open,
            admin: Access::Local,
            rules: vec![],
            publish_token: None,
            view_token: None,
            admin_token: None,
            stream_publish_tokens: BTreeMap::new(),
            stream_view_tokens: BTreeMap::new(),
            jwt_secret: None,
            jwt_public_key: None,
            jwt_leeway_secs: 30,
            query_token: true,
            failure_burst: 10,
            failures_per_min: 6,
            callback_url: None,
            callback_timeout_secs: 2.0,
            callback_ca_file: None,
        }
    }
}

/// Shortest accepted HS256 secret, in bytes (RFC 7518 §3.2: at least the
/// hash size).
pub const MIN_JWT_SECRET: usize = 32;

impl AuthConfig {
    /// The rules in force, in the order they are tried: the `rules` list,
    /// then the per-stream tokens, then the shared tokens. The role defaults
    /// (`publish`, `view`, `admin`) apply when none matches.
    pub fn effective_rules(&self) -> Vec<AccessRule> {
        let mut rules = self.rules.clone();
        let legacy = |role, streams: Vec<Pattern>, token: &String| AccessRule {
            role,
            streams,
            access: Access::Protected,
            tokens: vec![token.clone()],
        };
        for (name, t) in &self.stream_publish_tokens {
            rules.push(legacy(Role::Publish, vec![name.as_str().into()], t));
        }
        for (name, t) in &self.stream_view_tokens {
            rules.push(legacy(Role::View, vec![name.as_str().into()], t));
        }
        let shared = [
            (Role::Publish, &self.publish_token),
            (Role::View, &self.view_token),
            (Role::Admin, &self.admin_token),
        ];
        for (role, t) in shared {
            if let Some(t) = t {
                rules.push(legacy(role, every_stream(), t));
            }
        }
        rules
    }

    /// The default access of a role (when no rule matches).
    pub fn default_access(&self, role: Role) -> Access {
        match role {
            Role::Publish => self.publish,
            Role::View => self.view,
            Role::Admin => self.admin,
        }
    }

    /// Every static token of the section (for redaction and validation).
    pub fn static_tokens_mut(&mut self) -> impl Iterator<Item = &mut String> {
        self.publish_token
            .iter_mut()
            .chain(self.view_token.iter_mut())
            .chain(self.admin_token.iter_mut())
            .chain(self.stream_publish_tokens.values_mut())
            .chain(self.stream_view_tokens.values_mut())
            .chain(self.rules.iter_mut().flat_map(|r| r.tokens.iter_mut()))
    }

    /// Hides every secret (tokens, JWT secret, the callback URL's password and
    /// query) before
    /// the config is shown.
    pub fn redact(&mut self) {
        for t in self.static_tokens_mut() {
            *t = "<redacted>".into();
        }
        if let Some(s) = self.jwt_secret.as_mut() {
            *s = "<redacted>".into();
        }
        if let Some(u) = self.callback_url.as_mut()
            && let Ok(mut url) = reqwest::Url::parse(u)
        {
            if url.query().is_some() {
                url.set_query(Some("redacted"));
            }
            if url.password().is_some() {
                let _ = url.set_password(Some("redacted"));
            }
            *u = url.to_string();
        }
    }

    /// Checks the section; errors name the key and never repeat a secret.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut copy = self.clone();
        for t in copy.static_tokens_mut() {
            if t.is_empty() || !t.chars().all(|c| c.is_ascii_graphic()) {
                return Err(invalid(
                    "auth",
                    "tokens must be non-empty printable ASCII without spaces",
                ));
            }
        }
        for name in self
            .stream_publish_tokens
            .keys()
            .chain(self.stream_view_tokens.keys())
        {
            if let Err(e) = crate::names::StreamName::parse(name) {
                return Err(invalid("auth.stream_*_tokens", format!("{name:?}: {e}")));
            }
        }
        for (i, r) in self.rules.iter().enumerate() {
            if r.streams.is_empty() || r.streams.iter().any(|p| p.is_empty()) {
                return Err(invalid(
                    "auth.rules",
                    format!(
                        "rule {}: `streams` needs at least one non-empty pattern",
                        i + 1
                    ),
                ));
            }
            if r.access == Access::Open && !r.tokens.is_empty() {
                return Err(invalid(
                    "auth.rules",
                    format!("rule {}: an open rule takes no tokens", i + 1),
                ));
            }
        }
        if let Some(s) = &self.jwt_secret
            && s.len() < MIN_JWT_SECRET
        {
            return Err(invalid(
                "auth.jwt_secret",
                format!("must be at least {MIN_JWT_SECRET} bytes"),
            ));
        }
        if !(1..=10_000).contains(&self.failure_burst)
            || !(1..=100_000).contains(&self.failures_per_min)
        {
            return Err(invalid(
                "auth.failure_burst",
                "failure_burst must be 1–10000 and failures_per_min 1–100000",
            ));
        }
        if self.jwt_leeway_secs > 3600 {
            return Err(invalid("auth.jwt_leeway_secs", "must be at most 3600"));
        }
        if let Some(u) = &self.callback_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(invalid(
                "auth.callback_url",
                "must be an http:// or https:// URL",
            ));
        }
        if !(0.1..=60.0).contains(&self.callback_timeout_secs) {
            return Err(invalid(
                "auth.callback_timeout_secs",
                "must be between 0.1 and 60 seconds",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_keys_become_rules_after_the_list() {
        let mut a = AuthConfig {
            publish_token: Some("shared".into()),
            rules: vec![AccessRule {
                role: Role::View,
                streams: vec!["public-*".into()],
                access: Access::Open,
                tokens: vec![],
            }],
            ..Default::default()
        };
        a.stream_publish_tokens.insert("vip".into(), "v".into());
        let rules = a.effective_rules();
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0].role, Role::View);
        assert_eq!(rules[1].streams, vec![Pattern::from("vip")]);
        assert_eq!(rules[2].streams, vec![Pattern::from("*")]);
        assert_eq!(rules[2].tokens, vec!["shared".to_string()]);
    }

    #[test]
    fn rules_parse_and_validate() {
        let c = crate::config::Config::from_toml(
            "[auth]\nadmin = \"protected\"\n\
             [[auth.rules]]\nrole = \"publish\"\nstreams = [\"cam-*\"]\ntokens = [\"t1\"]\n\
             [[auth.rules]]\nrole = \"view\"\naccess = \"open\"\n",
        )
        .expect("parses");
        c.auth.validate().expect("valid");
        assert_eq!(c.auth.rules[1].streams, vec![Pattern::from("*")]);
        assert_eq!(c.auth.rules[0].access, Access::Protected);
        assert_eq!(c.auth.admin, Access::Protected);

        let mut bad = c.auth.clone();
        bad.rules[1].tokens.push("x".into());
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .starts_with("auth.rules")
        );
        let mut bad = c.auth.clone();
        bad.jwt_secret = Some("short".into());
        let e = bad.validate().unwrap_err().to_string();
        assert!(
            e.starts_with("auth.jwt_secret") && !e.contains("short"),
            "{e}"
        );
        let mut bad = c.auth;
        bad.rules[0].tokens.push("has space".into());
        let e = bad.validate().unwrap_err().to_string();
        assert!(!e.contains("has space"), "{e}");
    }

    #[test]
    fn redact_hides_every_secret() {
        let mut a = AuthConfig {
            view_token: Some("v-secret".into()),
            jwt_secret: Some("j".repeat(40)),
            rules: vec![AccessRule {
                role: Role::Admin,
                streams: every_stream(),
                access: Access::Protected,
                tokens: vec!["a-secret".into()],
            }],
            ..Default::default()
        };
        a.redact();
        let shown = toml::to_string(&a).unwrap();
        assert!(
            !shown.contains("v-secret") && !shown.contains("a-secret") && !shown.contains("jjjj"),
            "{shown}"
        );
    }
}
