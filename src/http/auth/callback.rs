//! The optional access callback: before a WHIP or WHEP session starts,
//! castgate POSTs JSON about it to a configured URL; a 2xx answer allows,
//! anything else denies with the answer's text, and no answer in time
//! denies too (fail closed).

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::config::AuthConfig;
use crate::outbound::OutboundPolicy;

/// Longest part of a denial's body passed on to the client.
const MAX_REASON: usize = 300;

/// Why the callback client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    /// The CA file for an `https://` callback could not be read.
    #[error("auth.callback_ca_file {path}: {reason}")]
    Ca {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The HTTP client could not be set up.
    #[error("cannot set up the callback client: {0}")]
    Client(String),
}

/// What the callback is told (never the token).
#[derive(Debug, Clone, Serialize)]
pub struct Question<'a> {
    /// `publish` or `view`.
    pub action: &'a str,
    /// The stream name.
    pub stream: &'a str,
    /// The client's IP address (from `X-Forwarded-For` when trusted).
    pub client_address: String,
    /// Whether the client came over HTTPS.
    pub https: bool,
    /// Whether the request carried a token (checked by castgate's own rules first).
    pub token_present: bool,
}

/// The callback's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx.
    Allow,
    /// Another status; the reason is the answer's text (or the status).
    Deny(String),
    /// No answer in time, or no connection: denied (fail closed).
    Unavailable(String),
}

/// The callback's URL and HTTP client.
#[derive(Debug, Clone)]
pub struct Callback {
    url: String,
    client: reqwest::Client,
    outbound: Arc<OutboundPolicy>,
}

impl Callback {
    /// The callback of the config, or `None` when no URL is set; it is only
    /// asked where `outbound` allows (no redirect is followed).
    pub fn from_config(
        auth: &AuthConfig,
        outbound: &Arc<OutboundPolicy>,
    ) -> Result<Option<Callback>, CallbackError> {
        let Some(url) = &auth.callback_url else {
            return Ok(None);
        };
        let mut builder = outbound
            .http_client()
            .timeout(Duration::from_secs_f64(auth.callback_timeout_secs));
        if let Some(path) = &auth.callback_ca_file {
            let ca = |reason: String| CallbackError::Ca {
                path: path.display().to_string(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| ca(e.to_string()))?;
            for cert in
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca(e.to_string()))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| CallbackError::Client(e.to_string()))?;
        Ok(Some(Callback {
            url: url.clone(),
            client,
            outbound: outbound.clone(),
        }))
    }

    /// Asks the callback about one session.
    pub async fn ask(&self, q: &Question<'_>) -> Verdict {
        let unreachable =
            || Verdict::Unavailable("the access callback could not be reached".into());
        if let Err(refusal) = self.outbound.check_url(&self.url) {
            tracing::error!(error = %refusal, "access callback not asked");
            return unreachable();
        }
        let resp = match self.client.post(&self.url).json(q).send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Verdict::Unavailable("the access callback did not answer in time".into());
            }
            Err(e) => {
                if let Some(refusal) = crate::events::webhook::refused_address(&e) {
                    tracing::error!(error = %refusal, "access callback not asked");
                }
                return unreachable();
            }
        };
        let status = resp.status();
        if status.is_success() {
            return Verdict::Allow;
        }
        let text = read_reason(resp).await;
        if text.is_empty() {
            Verdict::Deny(format!(
                "denied by the access callback (status {})",
                status.as_u16()
            ))
        } else {
            Verdict::Deny(text)
        }
    }
}

/// The first [`MAX_REASON`] characters of the body, on one line, without
/// control characters; reads no more than needed.
async fn read_reason(mut resp: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < MAX_REASON * 4 {
        match resp.chunk().await {
            Ok(Some(c)) => body.extend_from_slice(&c),
            _ => break,
        }
    }
    String::from_utf8_lossy(&body)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_REASON)
        .collect::<String>()
        .trim()
        .to_string()
}
