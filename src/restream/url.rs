//! Restream target URLs: parsing, the allow-list check, and the masked form
//! that is the only one ever shown in logs or the API (stream keys are secrets).

use crate::record::glob;

/// Why a target URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not a URL castgate can parse.
    #[error("malformed URL: {0}")]
    Malformed(&'static str),
    /// Neither `rtmp://` nor `rtmps://`.
    #[error("unsupported scheme {0:?}: use rtmp:// or rtmps://")]
    Scheme(String),
    /// The host is not in `restream.allowed_hosts`.
    #[error("host {0:?} is not in restream.allowed_hosts")]
    HostNotAllowed(String),
}

/// The protocols a target can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain RTMP.
    Rtmp,
    /// RTMP over TLS (verified against the system CA file).
    Rtmps,
}

/// A parsed, allowed target URL.
#[derive(Clone, PartialEq, Eq)]
pub struct TargetUrl {
    full: String,
    scheme: Scheme,
    host: String,
    port: u16,
    masked: String,
    /// What `masked` hides: the path after the application (key, query).
    secret: String,
}

impl std::fmt::Debug for TargetUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key, even in debug output.
        f.write_str(&self.masked)
    }
}

impl std::fmt::Display for TargetUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.masked)
    }
}

impl TargetUrl {
    /// Parses `url` and checks its host against `allowed_hosts` (patterns with
    /// `*` and `?`; empty allows any host).
    pub fn parse(url: &str, allowed_hosts: &[String]) -> Result<TargetUrl, UrlError> {
        let url = url.trim();
        if url.len() > 2048 {
            return Err(UrlError::Malformed("longer than 2048 characters"));
        }
        if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(UrlError::Malformed("contains spaces or control characters"));
        }
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(UrlError::Malformed("expected scheme://host/app/key"));
        };
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "rtmp" => Scheme::Rtmp,
            "rtmps" => Scheme::Rtmps,
            other => {
                let shown: String = other.chars().take(16).collect();
                return Err(UrlError::Scheme(shown));
            }
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.contains('@') {
            return Err(UrlError::Malformed(
                "credentials in the host part are not supported",
            ));
        }
        let (host, port) = split_host_port(authority)?;
        let port = port.unwrap_or(match scheme {
            Scheme::Rtmp => 1935,
            Scheme::Rtmps => 443,
        });
        if host.is_empty() {
            return Err(UrlError::Malformed("no host"));
        }
        if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
        {
            return Err(UrlError::Malformed("invalid characters in the host"));
        }
        let host = host.to_ascii_lowercase();
        let (app, key) = path.split_once('/').unwrap_or((path, ""));
        let app = app.split(['?', '#']).next().unwrap_or("");
        if app.is_empty() {
            return Err(UrlError::Malformed(
                "no application in the path (rtmp://host/app/key)",
            ));
        }
        if !allowed_hosts.is_empty()
            && !allowed_hosts
                .iter()
                .any(|p| glob(&p.to_ascii_lowercase(), &host))
        {
            return Err(UrlError::HostNotAllowed(host));
        }
        let scheme_name = match scheme {
            Scheme::Rtmp => "rtmp",
            Scheme::Rtmps => "rtmps",
        };
        let shown_host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        let mut masked = format!("{scheme_name}://{shown_host}");
        if port_given(authority) {
            masked.push_str(&format!(":{port}"));
        }
        masked.push('/');
        masked.push_str(app);
        if !key.is_empty() || path.len() > app.len() {
            masked.push_str("/****");
        }
        let secret = path
            .get(app.len()..)
            .unwrap_or("")
            .trim_start_matches('/')
            .to_string();
        Ok(TargetUrl {
            full: url.to_string(),
            scheme,
            host,
            port,
            masked,
            secret,
        })
    }

    /// The URL with its stream key: only for FFmpeg, never to print.
    pub fn secret_full(&self) -> &str {
        &self.full
    }

    /// The secret part (stream key and anything after the application),
    /// to be masked wherever FFmpeg might print it.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// `rtmp://host/app/****`: safe to show.
    pub fn masked(&self) -> &str {
        &self.masked
    }

    /// The protocol.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Host name or address, lower case.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Port (explicit, or 1935 / 443).
    pub fn port(&self) -> u16 {
        self.port
    }
}

fn port_given(authority: &str) -> bool {
    match authority.rsplit_once(']') {
        Some((_, after)) => after.starts_with(':'),
        None => authority.matches(':').count() == 1,
    }
}

fn split_host_port(authority: &str) -> Result<(&str, Option<u16>), UrlError> {
    let bad_port = UrlError::Malformed("invalid port");
    if let Some(rest) = authority.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(UrlError::Malformed("unclosed [ in the host"));
        };
        return match after.strip_prefix(':') {
            Some(p) => Ok((host, Some(p.parse().map_err(|_| bad_port)?))),
            None if after.is_empty() => Ok((host, None)),
            None => Err(UrlError::Malformed("junk after the host")),
        };
    }
    match authority.split_once(':') {
        Some((host, p)) => {
            let port: u16 = p.parse().map_err(|_| bad_port)?;
            if port == 0 {
                return Err(UrlError::Malformed("invalid port"));
            }
            Ok((host, Some(port)))
        }
        None => Ok((authority, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_masks() {
        let u = TargetUrl::parse("rtmp://a.rtmp.youtube.com/live2/abcd-efgh", &[]).unwrap();
        assert_eq!(u.masked(), "rtmp://a.rtmp.youtube.com/live2/****");
        assert_eq!(u.port(), 1935);
        assert_eq!(u.secret_full(), "rtmp://a.rtmp.youtube.com/live2/abcd-efgh");
        assert!(!format!("{u:?} {u}").contains("abcd"));
        assert_eq!(u.secret(), "abcd-efgh");
        let u = TargetUrl::parse("RTMPS://Live.Example.com:4443/app/k/e/y?x=1", &[]).unwrap();
        assert_eq!(u.masked(), "rtmps://live.example.com:4443/app/****");
        assert_eq!(u.secret(), "k/e/y?x=1");
        assert_eq!(u.scheme(), Scheme::Rtmps);
        let u = TargetUrl::parse("rtmp://[::1]:1935/live/key", &[]).unwrap();
        assert_eq!(u.masked(), "rtmp://[::1]:1935/live/****");
        let u = TargetUrl::parse("rtmp://127.0.0.1/live", &[]).unwrap();
        assert_eq!(u.masked(), "rtmp://127.0.0.1/live");
    }

    #[test]
    fn refuses_bad_urls() {
        for bad in [
            "http://x/live/k",
            "file:///etc/passwd",
            "rtmp://",
            "rtmp://host",
            "rtmp://host:99999/live/k",
            "rtmp://user:pw@host/live/k",
            "rtmp://ho st/live/k",
            "nonsense",
        ] {
            assert!(TargetUrl::parse(bad, &[]).is_err(), "{bad}");
        }
        let allow = vec!["*.youtube.com".to_string(), "127.0.0.1".to_string()];
        assert!(TargetUrl::parse("rtmp://a.rtmp.youtube.com/live2/k", &allow).is_ok());
        assert!(TargetUrl::parse("rtmp://127.0.0.1:1/live/k", &allow).is_ok());
        assert_eq!(
            TargetUrl::parse("rtmp://10.0.0.1/live/k", &allow),
            Err(UrlError::HostNotAllowed("10.0.0.1".into()))
        );
    }
}
