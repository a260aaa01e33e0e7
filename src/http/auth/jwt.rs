//! Signed tokens (JWT): HS256 with the configured shared secret, or RS256 /
//! ES256 with a configured PEM public key. A token carries the role(s) it
//! grants, the stream name or pattern, and an expiry; `castgate token` mints
//! HS256 ones with [`mint`].

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::{AuthConfig, Role};

/// Why a JWT key could not be loaded or a token not made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not a PEM RSA or EC (P-256) public key.
    #[error("{0} is not a PEM RSA or EC public key")]
    NotAKey(String),
    /// No `auth.jwt_secret` to sign with.
    #[error("no auth.jwt_secret is configured (set it in the config file or CASTGATE_JWT_SECRET)")]
    NoSecret,
    /// Signing failed.
    #[error("cannot sign the token: {0}")]
    Sign(String),
}

/// One claim that may be a single string or a list of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// `"view"`.
    One(String),
    /// `["view", "publish"]`.
    Many(Vec<String>),
}

impl OneOrMany {
    fn iter(&self) -> impl Iterator<Item = &str> {
        let v: Vec<&str> = match self {
            OneOrMany::One(s) => vec![s.as_str()],
            OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
        };
        v.into_iter()
    }
}

/// The claims castgate reads. `role`/`roles` and `stream`/`streams` are
/// interchangeable; a stream may be a pattern (`*`, `cam-*`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Role(s) granted: `publish`, `view`, `admin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<OneOrMany>,
    /// Same as `role`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<OneOrMany>,
    /// Stream name or pattern the roles apply to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<OneOrMany>,
    /// Same as `stream`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streams: Option<OneOrMany>,
    /// Expiry, seconds since the Unix epoch (required).
    pub exp: u64,
    /// Issued at, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

impl Claims {
    /// Whether the token grants `role`.
    pub fn grants(&self, role: Role) -> bool {
        self.role
            .iter()
            .chain(self.roles.iter())
            .flat_map(OneOrMany::iter)
            .any(|r| r == role.as_str())
    }

    /// The stream patterns the token names.
    pub fn stream_patterns(&self) -> Vec<&str> {
        self.stream
            .iter()
            .chain(self.streams.iter())
            .flat_map(OneOrMany::iter)
            .collect()
    }
}

/// Why a JWT was refused (said to the client, so never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Past its `exp`.
    #[error("the token has expired")]
    Expired,
    /// `nbf` in the future.
    #[error("the token is not valid yet")]
    NotYet,
    /// The signature does not verify with the configured key.
    #[error("the token's signature is not valid")]
    BadSignature,
    /// Signed with an algorithm the server does not accept.
    #[error("the token is signed with an algorithm this server does not accept")]
    Algorithm,
    /// Not a JWT, or its claims are not as expected.
    #[error("the token is malformed: {0}")]
    Malformed(String),
}

/// Checks JWTs against the configured secret and/or public key.
pub struct Verifier {
    keys: Vec<(DecodingKey, Validation)>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.keys.len())
            .finish()
    }
}

fn validation(alg: Algorithm, leeway: u64) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = leeway;
    v.validate_aud = false;
    v.set_required_spec_claims(&["exp"]);
    v
}

/// Loads a PEM public key: RSA (RS256) or EC P-256 (ES256).
pub fn load_public_key(path: &Path) -> Result<(DecodingKey, Algorithm), KeyError> {
    let pem = std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.display().to_string(),
        source,
    })?;
    if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
        return Ok((k, Algorithm::RS256));
    }
    if let Ok(k) = DecodingKey::from_ec_pem(&pem) {
        return Ok((k, Algorithm::ES256));
    }
    Err(KeyError::NotAKey(path.display().to_string()))
}

impl Verifier {
    /// The verifier of the config, or `None` when no JWT key is configured.
    pub fn from_config(auth: &AuthConfig) -> Result<Option<Verifier>, KeyError> {
        let mut keys = Vec::new();
        if let Some(s) = &auth.jwt_secret {
            keys.push((
                DecodingKey::from_secret(s.as_bytes()),
                validation(Algorithm::HS256, auth.jwt_leeway_secs),
            ));
        }
        if let Some(p) = &auth.jwt_public_key {
            let (key, alg) = load_public_key(p)?;
            keys.push((key, validation(alg, auth.jwt_leeway_secs)));
        }
        Ok((!keys.is_empty()).then_some(Verifier { keys }))
    }

    /// Verifies signature and times; the claims when the token is good.
    pub fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        let alg = jsonwebtoken::decode_header(token)
            .map_err(|e| JwtError::Malformed(describe(e.kind())))?
            .alg;
        let Some((key, v)) = self.keys.iter().find(|(_, v)| v.algorithms.contains(&alg)) else {
            return Err(JwtError::Algorithm);
        };
        jsonwebtoken::decode::<Claims>(token, key, v)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => JwtError::Expired,
                ErrorKind::ImmatureSignature => JwtError::NotYet,
                ErrorKind::InvalidSignature => JwtError::BadSignature,
                ErrorKind::InvalidAlgorithm => JwtError::Algorithm,
                k => JwtError::Malformed(describe(k)),
            })
    }
}

/// The error in words, without anything from the token.
fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::MissingRequiredClaim(c) => format!("the claim {c:?} is missing"),
        ErrorKind::InvalidClaimFormat(c) => format!("the claim {c:?} has the wrong type"),
        ErrorKind::Json(_) => "its claims are not the expected JSON".into(),
        ErrorKind::Base64(_) | ErrorKind::Utf8(_) | ErrorKind::InvalidToken => {
            "it is not a JWT".into()
        }
        _ => "it cannot be decoded".into(),
    }
}

/// Whether `token` has the shape of a JWT (three base64url parts).
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

/// Mints an HS256 token granting `roles` on `stream` (a name or pattern)
/// for `ttl` from now, signed with `secret`.
pub fn mint(secret: &str, roles: &[Role], stream: &str, ttl: Duration) -> Result<String, KeyError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let roles: Vec<String> = roles.iter().map(|r| r.as_str().to_string()).collect();
    let claims = Claims {
        roles: Some(OneOrMany::Many(roles)),
        stream: Some(OneOrMany::One(stream.to_string())),
        exp: now.saturating_add(ttl.as_secs().max(1)),
        iat: Some(now),
        ..Default::default()
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| KeyError::Sign(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn verifier() -> Verifier {
        Verifier::from_config(&AuthConfig {
            jwt_secret: Some(SECRET.into()),
            jwt_leeway_secs: 0,
            ..Default::default()
        })
        .unwrap()
        .unwrap()
    }

    fn signed(claims: &serde_json::Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn minted_token_verifies_with_its_claims() {
        let t = mint(SECRET, &[Role::View], "demo", Duration::from_secs(3600)).unwrap();
        assert!(looks_like_jwt(&t));
        let c = verifier().verify(&t).unwrap();
        assert!(c.grants(Role::View) && !c.grants(Role::Publish));
        assert_eq!(c.stream_patterns(), vec!["demo"]);
        assert!(c.exp > now() + 3500);
    }

    #[test]
    fn refusals_say_why() {
        let v = verifier();
        let exp = serde_json::json!({"role": "view", "stream": "x", "exp": now() - 10});
        assert_eq!(v.verify(&signed(&exp, SECRET)), Err(JwtError::Expired));
        let other = serde_json::json!({"role": "view", "stream": "x", "exp": now() + 60});
        assert_eq!(
            v.verify(&signed(&other, "another-secret-another-secret-xx")),
            Err(JwtError::BadSignature)
        );
        let no_exp = serde_json::json!({"role": "view", "stream": "x"});
        let e = v.verify(&signed(&no_exp, SECRET)).unwrap_err();
        assert!(
            matches!(&e, JwtError::Malformed(m) if m.contains("exp")),
            "{e}"
        );
        assert!(matches!(v.verify("a.b.c"), Err(JwtError::Malformed(_))));
        let roles = serde_json::json!({"roles": ["publish", "view"], "streams": ["a", "b-*"], "exp": now() + 60});
        let c = v.verify(&signed(&roles, SECRET)).unwrap();
        assert!(c.grants(Role::Publish) && c.grants(Role::View) && !c.grants(Role::Admin));
        assert_eq!(c.stream_patterns(), vec!["a", "b-*"]);
    }

    #[test]
    fn es256_tokens_verify_with_the_public_key() {
        let key = rcgen::KeyPair::generate().unwrap();
        let path = std::env::temp_dir().join(format!("castgate-es256-{}.pem", std::process::id()));
        std::fs::write(&path, key.public_key_pem()).unwrap();
        let v = Verifier::from_config(&AuthConfig {
            jwt_public_key: Some(path.clone()),
            ..Default::default()
        })
        .unwrap()
        .unwrap();
        let _ = std::fs::remove_file(&path);
        let claims = serde_json::json!({"role": "publish", "stream": "cam-*", "exp": now() + 60});
        let signing = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
        let t = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &signing).unwrap();
        let c = v.verify(&t).unwrap();
        assert!(c.grants(Role::Publish));
        let other = rcgen::KeyPair::generate().unwrap();
        let forged = jsonwebtoken::encode(
            &Header::new(Algorithm::ES256),
            &claims,
            &EncodingKey::from_ec_pem(other.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(v.verify(&forged), Err(JwtError::BadSignature));
        let hs = mint(SECRET, &[Role::Publish], "cam-1", Duration::from_secs(60)).unwrap();
        assert_eq!(
            v.verify(&hs),
            Err(JwtError::Algorithm),
            "no HS256 secret: HS256 tokens are refused"
        );
    }

    #[test]
    fn no_key_no_verifier() {
        assert!(
            Verifier::from_config(&AuthConfig::default())
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            load_public_key(Path::new("/nonexistent.pem")),
            Err(KeyError::Read { .. })
        ));
    }
}
