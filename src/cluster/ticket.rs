//! Tickets signed with the cluster secret: short-lived proof that a node of
//! the cluster let a request through. A viewer redirected from one node to a
//! stream's origin carries one in the URL (browsers drop `Authorization` on
//! a cross-origin redirect), so the origin can let it view that one stream
//! without asking for the token again.
//!
//! Form: `v1.<expiry, unix seconds>.<HMAC-SHA256, base64url>`, the MAC over
//! the purpose, the stream name and the expiry, so a ticket is good for one
//! purpose on one stream until it expires, and for nothing else.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// What a ticket lets its bearer do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// View one stream (WHEP, HLS) on its origin after a redirect.
    View,
    /// Pull one stream from its origin (a relay, node to node).
    Relay,
    /// Publish one stream on the node a loaded node placed it on.
    Publish,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::View => "view",
            Purpose::Relay => "relay",
            Purpose::Publish => "publish",
        }
    }
}

/// Why a ticket was refused (said in the 401; never which part of the MAC
/// differed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// Not `v1.<number>.<mac>`.
    #[error("the cluster ticket is malformed")]
    Malformed,
    /// Past its expiry.
    #[error("the cluster ticket has expired; ask the first node again")]
    Expired,
    /// Not signed with this cluster's secret for this stream and purpose.
    #[error("the cluster ticket is not valid for this stream")]
    Invalid,
}

/// Signs and checks tickets with the cluster secret.
#[derive(Clone)]
pub struct TicketKey {
    key: hmac::Key,
}

impl std::fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketKey(****)")
    }
}

impl TicketKey {
    /// The key of `secret` (`cluster.secret`).
    pub fn new(secret: &str) -> TicketKey {
        TicketKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
        }
    }

    fn message(purpose: Purpose, stream: &str, expiry: u64) -> String {
        format!("castgate-ticket|v1|{}|{stream}|{expiry}", purpose.as_str())
    }

    /// A ticket for `purpose` on `stream`, valid until `now + ttl`.
    pub fn sign(&self, purpose: Purpose, stream: &str, now: SystemTime, ttl: Duration) -> String {
        let expiry = unix_secs(now).saturating_add(ttl.as_secs().max(1));
        let tag = hmac::sign(&self.key, Self::message(purpose, stream, expiry).as_bytes());
        format!("v1.{expiry}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// Checks `ticket` for `purpose` on `stream` at `now`.
    pub fn verify(
        &self,
        ticket: &str,
        purpose: Purpose,
        stream: &str,
        now: SystemTime,
    ) -> Result<(), TicketError> {
        let mut parts = ticket.splitn(3, '.');
        let (Some("v1"), Some(expiry), Some(mac)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(TicketError::Malformed);
        };
        let expiry: u64 = expiry.parse().map_err(|_| TicketError::Malformed)?;
        let mac = URL_SAFE_NO_PAD
            .decode(mac)
            .map_err(|_| TicketError::Malformed)?;
        hmac::verify(
            &self.key,
            Self::message(purpose, stream, expiry).as_bytes(),
            &mac,
        )
        .map_err(|_| TicketError::Invalid)?;
        if unix_secs(now) > expiry {
            return Err(TicketError::Expired);
        }
        Ok(())
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TicketKey {
        TicketKey::new("0123456789abcdef0123456789abcdef")
    }

    #[test]
    fn a_ticket_is_good_for_its_stream_until_it_expires() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let t = key().sign(Purpose::View, "demo", now, Duration::from_secs(60));
        assert!(t.starts_with("v1.1800000060."));
        assert_eq!(key().verify(&t, Purpose::View, "demo", now), Ok(()));
        let later = now + Duration::from_secs(60);
        assert_eq!(key().verify(&t, Purpose::View, "demo", later), Ok(()));
        let too_late = now + Duration::from_secs(61);
        assert_eq!(
            key().verify(&t, Purpose::View, "demo", too_late),
            Err(TicketError::Expired)
        );
    }

    #[test]
    fn another_stream_secret_or_expiry_is_refused() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let t = key().sign(Purpose::View, "demo", now, Duration::from_secs(60));
        assert_eq!(
            key().verify(&t, Purpose::View, "other", now),
            Err(TicketError::Invalid)
        );
        let other = TicketKey::new("another secret of at least 32 bytes!");
        assert_eq!(
            other.verify(&t, Purpose::View, "demo", now),
            Err(TicketError::Invalid)
        );
        // A viewer's ticket does not let a node pull.
        assert_eq!(
            key().verify(&t, Purpose::Relay, "demo", now),
            Err(TicketError::Invalid)
        );
        // Moving the expiry breaks the MAC.
        let forged = t.replacen("1800000060", "1900000060", 1);
        assert_eq!(
            key().verify(&forged, Purpose::View, "demo", now),
            Err(TicketError::Invalid)
        );
        for bad in ["", "v1", "v2.1.x", "v1.x.abc", "v1.5.!!"] {
            assert_eq!(
                key().verify(bad, Purpose::View, "demo", now),
                Err(TicketError::Malformed),
                "{bad}"
            );
        }
    }
}
