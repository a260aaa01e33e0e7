//! What a config needs beyond its values, checked and made ready before it
//! is put in force — at start-up, on a reload and by `castgate
//! check-config` — with errors that name the key, like the value checks:
//! the TLS certificate and key are loaded, the access rules built (JWT key
//! read, callback client made), standing restream targets parsed, and
//! webhook and callback URLs written with an internal address refused.
//!
//! Reads files: call it off the async workers.

use std::sync::Arc;

use crate::config::{Config, ConfigError};
use crate::http::auth::callback::CallbackError;
use crate::http::auth::{GateError, GateRules};
use crate::outbound::OutboundPolicy;
use crate::record::storage::{Credentials, Storage};
use crate::restream::TargetUrl;

/// A checked config's ready parts.
pub struct Checked {
    /// The HTTPS configuration, when `http.tls_cert` is set.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The access rules of `[auth]`.
    pub gate: GateRules,
    /// The bucket of `[storage]` (`kind = "s3"`), credentials found.
    pub storage: Option<Arc<Storage>>,
}

impl std::fmt::Debug for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checked")
            .field("tls", &self.tls.is_some())
            .field("gate", &self.gate)
            .field("storage", &self.storage)
            .finish()
    }
}

/// The rule for connections made for a request, from `[outbound]`.
pub fn outbound_policy(config: &Config) -> Arc<OutboundPolicy> {
    Arc::new(OutboundPolicy::new(
        config.outbound.allow_networks.iter().map(|n| n.0).collect(),
    ))
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// Checks what `config` names beyond its values (those are
/// [`Config::validate`]'s) and makes its parts ready; the access callback
/// will connect only where `outbound` allows.
pub fn check(config: &Config, outbound: &Arc<OutboundPolicy>) -> Result<Checked, ConfigError> {
    let tls = match (&config.http.tls_cert, &config.http.tls_key) {
        (Some(cert), Some(key)) => Some(
            crate::http::tls::load(cert, key)
                .map_err(|e| invalid("http.tls_cert", e.to_string()))?,
        ),
        _ => None,
    };
    let gate = GateRules::new(&config.auth, outbound).map_err(|e| match e {
        GateError::Key(e) => invalid("auth.jwt_public_key", e.to_string()),
        GateError::Callback(CallbackError::Ca { path, reason }) => {
            invalid("auth.callback_ca_file", format!("{path}: {reason}"))
        }
        GateError::Callback(e @ CallbackError::Client(_)) => {
            invalid("auth.callback_url", e.to_string())
        }
    })?;
    let r = &config.restream;
    for (i, t) in r.targets.iter().enumerate() {
        // The error never repeats the URL: it holds a stream key.
        if let Err(e) = TargetUrl::parse(&t.url, &r.allowed_hosts) {
            return Err(invalid(
                "restream.targets",
                format!("target {}: {e}", i + 1),
            ));
        }
    }
    // Names are checked when they are resolved; an address can be now.
    for (i, w) in config.events.webhooks.iter().enumerate() {
        if let Err(e) = outbound.check_url(&w.url) {
            return Err(invalid(
                "events.webhooks",
                format!("webhook {}: {e}", i + 1),
            ));
        }
    }
    if let Some(u) = &config.auth.callback_url
        && let Err(e) = outbound.check_url(u)
    {
        return Err(invalid("auth.callback_url", e.to_string()));
    }
    let storage = if config.storage.enabled() {
        let credentials = Credentials::resolve(&config.storage).map_err(|e| {
            invalid(
                if config.storage.credentials_file.is_some() {
                    "storage.credentials_file"
                } else {
                    "storage.access_key_id"
                },
                e.to_string(),
            )
        })?;
        let storage = Storage::open(&config.storage, &credentials)
            .map_err(|e| invalid("storage.endpoint", e.to_string()))?;
        Some(Arc::new(storage))
    } else {
        None
    };
    Ok(Checked { tls, gate, storage })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WebhookConfig;

    fn checked(c: &Config) -> Result<Checked, ConfigError> {
        c.validate()?;
        check(c, &outbound_policy(c))
    }

    #[test]
    fn standing_target_urls_are_checked_without_leaking_keys() {
        let mut c = Config::from_toml(
            "[restream]\nallowed_hosts = [\"*.youtube.com\"]\n\
             [[restream.targets]]\nstreams = [\"studio-*\"]\n\
             url = \"rtmp://a.rtmp.youtube.com/live2/SECRET\"\n",
        )
        .expect("parses");
        checked(&c).expect("valid");
        c.restream.targets[0].url = "rtmp://10.0.0.1/live/SECRET".into();
        let err = checked(&c).unwrap_err().to_string();
        assert!(
            err.starts_with("restream.targets: target 1:") && !err.contains("SECRET"),
            "{err}"
        );
        c.restream.targets[0].url = "http://x/live/SECRET".into();
        assert!(checked(&c).is_err());
    }

    #[test]
    fn webhook_and_callback_urls_at_internal_addresses_are_refused() {
        let mut c = Config::default();
        c.events.webhooks.push(WebhookConfig {
            url: "http://user:pw@10.0.0.9/hook".into(),
            ..Default::default()
        });
        let e = checked(&c).unwrap_err().to_string();
        assert!(
            e.starts_with("events.webhooks:") && e.contains("private"),
            "{e}"
        );
        assert!(!e.contains("pw"), "{e}");
        c.outbound.allow_networks = vec!["10.0.0.0/24".parse().unwrap()];
        checked(&c).expect("allowed network");
        let mut c = Config::default();
        c.auth.callback_url = Some("http://0x7f000001:9000/decide".into());
        let e = checked(&c).unwrap_err().to_string();
        assert!(
            e.starts_with("auth.callback_url") && e.contains("loopback"),
            "{e}"
        );
    }

    #[test]
    fn files_that_cannot_be_read_are_named_by_their_key() {
        let mut c = Config::default();
        c.http.tls_cert = Some("/nonexistent/cert.pem".into());
        c.http.tls_key = Some("/nonexistent/key.pem".into());
        let e = checked(&c).unwrap_err().to_string();
        assert!(e.starts_with("http.tls_cert:"), "{e}");
        let mut c = Config::default();
        c.auth.jwt_public_key = Some("/nonexistent/jwt.pem".into());
        let e = checked(&c).unwrap_err().to_string();
        assert!(e.starts_with("auth.jwt_public_key:"), "{e}");
        checked(&Config::default()).expect("the defaults need no file");
    }
}
