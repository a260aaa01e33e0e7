//! The access decision, without I/O: given a role, a stream name and the
//! token a request carried (if any), allow or say why not.
//!
//! The first rule matching the role and the stream decides (the `rules`
//! list, then the per-stream tokens, then the shared tokens); the role's
//! default applies when none matches. A protected rule accepts one of its
//! static tokens or a JWT that grants the role for the stream; a local one
//! also lets clients on this machine in without a token.

use crate::config::{Access, AccessRule, AuthConfig, Role};
use crate::names;

use super::jwt::{self, KeyError, Verifier};

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// No token was given where one is needed (401).
    Missing,
    /// The token is not valid: unknown, expired, bad signature (401).
    Invalid(String),
    /// The token is valid but does not allow this (403).
    Forbidden(String),
    /// No token, and the role is open only to clients on this machine. With
    /// `token_possible` some token could be accepted (401), else none (403).
    NotLocal {
        /// What to do about it, naming the setting.
        reason: String,
        /// Whether a token (static or JWT) could be accepted here.
        token_possible: bool,
    },
}

/// How a request was allowed (for logs; never the token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// The role is open for this stream.
    Open,
    /// The role is open to this machine, and the client is on it.
    ThisMachine,
    /// One of the matching rule's static tokens.
    StaticToken,
    /// A valid JWT granting the role for the stream.
    Jwt,
}

/// The rules in force and the JWT keys.
#[derive(Debug)]
pub struct Policy {
    rules: Vec<AccessRule>,
    defaults: [Access; 3],
    jwt: Option<Verifier>,
}

fn verb(role: Role) -> &'static str {
    match role {
        Role::Publish => "publish",
        Role::View => "view",
        Role::Admin => "administer",
    }
}

/// Compares without an early exit, so timing does not reveal a token prefix.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Policy {
    /// The policy of `[auth]` (loads the JWT public key, if any).
    pub fn new(auth: &AuthConfig) -> Result<Policy, KeyError> {
        Ok(Policy {
            rules: auth.effective_rules(),
            defaults: Role::ALL.map(|r| auth.default_access(r)),
            jwt: Verifier::from_config(auth)?,
        })
    }

    fn rule(&self, role: Role, stream: &str) -> Option<&AccessRule> {
        self.rules
            .iter()
            .find(|r| r.role == role && names::any_matches(&r.streams, stream))
    }

    fn access(&self, role: Role, stream: &str) -> Access {
        match self.rule(role, stream) {
            Some(r) => r.access,
            None => self.defaults[role as usize],
        }
    }

    /// Whether `role` on `stream` needs no credentials from this client
    /// (`local`: the client is on this machine).
    pub fn is_open(&self, role: Role, stream: &str, local: bool) -> bool {
        match self.access(role, stream) {
            Access::Open => true,
            Access::Local => local,
            Access::Protected => false,
        }
    }

    /// Decides whether `token` (or none) may `role` the stream `stream`, for
    /// a client on this machine (`local`) or elsewhere.
    pub fn decide(
        &self,
        role: Role,
        stream: &str,
        token: Option<&str>,
        local: bool,
    ) -> Result<Grant, Denial> {
        let access = self.access(role, stream);
        match access {
            Access::Open => return Ok(Grant::Open),
            Access::Local if local => return Ok(Grant::ThisMachine),
            _ => {}
        }
        let rule = self.rule(role, stream);
        let Some(token) = token else {
            if access == Access::Local {
                return Err(self.not_local(role, stream, rule));
            }
            return Err(Denial::Missing);
        };
        let statics = rule.map_or(&[][..], |r| &r.tokens[..]);
        // Every candidate is compared, so the time taken does not depend on which matched.
        let matched = statics.iter().fold(false, |m, t| {
            constant_time_eq(t.as_bytes(), token.as_bytes()) | m
        });
        if matched {
            return Ok(Grant::StaticToken);
        }
        let what = format!("{} stream {stream:?}", verb(role));
        match &self.jwt {
            Some(v) if jwt::looks_like_jwt(token) => {
                let claims = v
                    .verify(token)
                    .map_err(|e| Denial::Invalid(e.to_string()))?;
                if !claims.grants(role) {
                    return Err(Denial::Forbidden(format!(
                        "the token does not grant the {role} role needed to {what}"
                    )));
                }
                let patterns = claims.stream_patterns();
                if patterns.is_empty() {
                    return Err(Denial::Forbidden(
                        "the token names no stream (claim \"stream\")".into(),
                    ));
                }
                if !patterns.iter().any(|p| names::matches(p, stream)) {
                    return Err(Denial::Forbidden(format!(
                        "the token is for other streams; it does not allow to {what}"
                    )));
                }
                Ok(Grant::Jwt)
            }
            // A static token carries no identity: a mismatch is a wrong
            // credential (401), and a 403 would tell a guesser that the
            // string is some other role's token.
            _ => Err(Denial::Invalid(format!("the token is not valid to {what}"))),
        }
    }
}

impl Policy {
    /// The refusal of a tokenless request from elsewhere to a local role.
    fn not_local(&self, role: Role, stream: &str, rule: Option<&AccessRule>) -> Denial {
        let token_possible = self.jwt.is_some() || rule.is_some_and(|r| !r.tokens.is_empty());
        let source = match rule {
            Some(_) => "an auth.rules entry with access = \"local\"".to_string(),
            None => format!("auth.{role} = \"local\""),
        };
        let how = if token_possible {
            "send a token (Authorization: Bearer)".to_string()
        } else {
            format!(
                "set auth.{role}_token (or auth.jwt_secret) and send it as Authorization: Bearer"
            )
        };
        Denial::NotLocal {
            reason: format!(
                "to {} stream {stream:?} without a token a client must be on this machine ({source}); \
                 from elsewhere, {how}, or set auth.{role} = \"open\" to let anyone",
                verb(role)
            ),
            token_possible,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn policy() -> Policy {
        let mut auth = AuthConfig {
            publish_token: Some("secret".into()),
            view: Access::Protected,
            jwt_secret: Some(SECRET.into()),
            rules: vec![
                AccessRule {
                    role: Role::View,
                    streams: vec!["public-*".into()],
                    access: Access::Open,
                    tokens: vec![],
                },
                AccessRule {
                    role: Role::Admin,
                    streams: vec!["cam-*".into(), "studio".into()],
                    access: Access::Protected,
                    tokens: vec!["cam-admin".into()],
                },
            ],
            ..Default::default()
        };
        auth.stream_publish_tokens
            .insert("vip".into(), "vip-token".into());
        Policy::new(&auth).unwrap()
    }

    #[test]
    fn shared_and_per_stream_tokens_as_before() {
        let p = policy();
        assert_eq!(
            p.decide(Role::Publish, "demo", Some("secret"), false),
            Ok(Grant::StaticToken)
        );
        assert_eq!(
            p.decide(Role::Publish, "demo", None, false),
            Err(Denial::Missing)
        );
        assert!(matches!(
            p.decide(Role::Publish, "demo", Some("nope"), false),
            Err(Denial::Invalid(_))
        ));
        assert!(matches!(
            p.decide(Role::Publish, "vip", Some("secret"), false),
            Err(Denial::Invalid(_))
        ));
        assert_eq!(
            p.decide(Role::Publish, "vip", Some("vip-token"), false),
            Ok(Grant::StaticToken)
        );
    }

    #[test]
    fn rules_per_pattern_and_role_defaults() {
        let p = policy();
        assert_eq!(
            p.decide(Role::View, "public-1", None, false),
            Ok(Grant::Open)
        );
        assert_eq!(
            p.decide(Role::View, "private", None, false),
            Err(Denial::Missing)
        );
        assert_eq!(
            p.decide(Role::Admin, "cam-7", Some("cam-admin"), false),
            Ok(Grant::StaticToken)
        );
        assert_eq!(
            p.decide(Role::Admin, "cam-7", None, false),
            Err(Denial::Missing)
        );
        assert_eq!(
            p.decide(Role::Admin, "other", None, true),
            Ok(Grant::ThisMachine),
            "outside the rule, admin is open to this machine by default"
        );
        let Err(Denial::NotLocal {
            reason,
            token_possible,
        }) = p.decide(Role::Admin, "other", None, false)
        else {
            panic!("admin from elsewhere without a token must be refused");
        };
        assert!(token_possible, "a JWT secret is configured");
        assert!(reason.contains("auth.admin = \"local\""), "{reason}");
        assert!(reason.contains("auth.admin = \"open\""), "{reason}");
        assert_eq!(
            p.decide(Role::Admin, "cam-7", None, true),
            Err(Denial::Missing),
            "a protected rule wants a token even on this machine"
        );
    }

    #[test]
    fn jwt_role_and_stream_are_checked() {
        let p = policy();
        let hour = Duration::from_secs(3600);
        let view_a = jwt::mint(SECRET, &[Role::View], "a", hour).unwrap();
        assert_eq!(
            p.decide(Role::View, "a", Some(&view_a), false),
            Ok(Grant::Jwt)
        );
        let Err(Denial::Forbidden(why)) = p.decide(Role::View, "b", Some(&view_a), false) else {
            panic!("wrong stream must be forbidden");
        };
        assert!(why.contains("other streams"), "{why}");
        let Err(Denial::Forbidden(why)) = p.decide(Role::Publish, "a", Some(&view_a), false) else {
            panic!("wrong role must be forbidden");
        };
        assert!(why.contains("publish"), "{why}");
        let pattern = jwt::mint(SECRET, &[Role::Publish, Role::View], "cam-*", hour).unwrap();
        assert_eq!(
            p.decide(Role::Publish, "cam-1", Some(&pattern), false),
            Ok(Grant::Jwt)
        );
        let forged =
            jwt::mint("another-secret-another-secret-xx", &[Role::View], "a", hour).unwrap();
        assert_eq!(
            p.decide(Role::View, "a", Some(&forged), false),
            Err(Denial::Invalid("the token's signature is not valid".into()))
        );
    }
}
