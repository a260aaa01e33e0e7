//! Restream target URLs: parsing, the allow-list check, the masked form
//! that is the only one ever shown in logs or the API (stream keys are
//! secrets), and the URL FFmpeg connects with once the address is checked.

use std::net::IpAddr;

use crate::address;
use crate::names::Pattern;

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
    /// Everything after the authority (`/app/key?query`), as written.
    path: String,
    /// The host, when it is written as an address (any spelling), normalised.
    literal: Option<IpAddr>,
    /// The host matched a pattern of a non-empty `restream.allowed_hosts`.
    named: bool,
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
    pub fn parse(url: &str, allowed_hosts: &[Pattern]) -> Result<TargetUrl, UrlError> {
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
        let literal = address::parse_address(&host)
            .map_err(|_| UrlError::Malformed("the host is numeric but not a valid IP address"))?
            .map(address::canonical);
        let (app, key) = path.split_once('/').unwrap_or((path, ""));
        let app = app.split(['?', '#']).next().unwrap_or("");
        if app.is_empty() {
            return Err(UrlError::Malformed(
                "no application in the path (rtmp://host/app/key)",
            ));
        }
        if !allowed_hosts.is_empty()
            && !allowed_hosts.iter().any(|p| p.matches_ignoring_case(&host))
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
            path: format!("/{path}"),
            literal,
            named: !allowed_hosts.is_empty(),
        })
    }

    /// Whether the host was let in by name through a non-empty
    /// `restream.allowed_hosts`: such a host may be internal.
    pub fn allowed_by_name(&self) -> bool {
        self.named
    }

    /// The host when written as an address (`127.1` read as 127.0.0.1).
    pub fn literal(&self) -> Option<IpAddr> {
        self.literal
    }

    /// What FFmpeg is given to connect to the checked address `ip`: the URL
    /// (with its stream key: never to print) and, when the host was a name
    /// replaced by `ip`, the `rtmp_tcurl` that keeps telling the server the
    /// name (servers that route by it, like SRS's vhosts, still see it).
    /// `rtmps://` keeps its host name, which TLS needs for SNI and to verify
    /// the certificate (FFmpeg sends no SNI to a numeric host), unless the
    /// host was an address to begin with.
    pub fn connect_to(&self, ip: IpAddr) -> (String, Option<String>) {
        let named_host = self.literal.is_none();
        if self.scheme == Scheme::Rtmps && named_host {
            return (self.full.clone(), None);
        }
        let scheme = match self.scheme {
            Scheme::Rtmp => "rtmp",
            Scheme::Rtmps => "rtmps",
        };
        let url = format!(
            "{scheme}://{}:{}{}",
            bracketed(&ip.to_string()),
            self.port,
            self.path
        );
        let tcurl = named_host.then(|| {
            format!(
                "rtmp://{}:{}/{}",
                bracketed(&self.host),
                self.port,
                ffmpeg_app(&self.path)
            )
        });
        (url, tcurl)
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

fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// The RTMP application FFmpeg reads from a URL's path (`/app/key`,
/// `/app/instance/key`, `/app/mp4:file`, `?slist=`, `/ondemand/`), as its
/// RTMP client does when no `rtmp_app` is set, so the `tcUrl` given for a
/// name is the one FFmpeg would have sent itself.
fn ffmpeg_app(path: &str) -> String {
    if let Some(q) = path.find('?')
        && path[q..].contains("slist=")
    {
        return path.get(1..q).unwrap_or("").to_string();
    }
    if path.starts_with("/ondemand/") {
        return "ondemand".into();
    }
    let next = path.strip_prefix('/').unwrap_or(path);
    let Some(p) = next.find('/') else {
        return String::new();
    };
    let after = &next[p + 1..];
    let colon = after.find(':');
    match after.find('/') {
        // An application instance (`app/instance/key`), unless a `:`
        // (`mp4:dir/file`) comes first.
        Some(f) if colon.is_none_or(|c| c > f) => next[..p + 1 + f].to_string(),
        _ => next[..p].to_string(),
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
        let allow: Vec<Pattern> = vec!["*.youtube.com".into(), "127.0.0.1".into()];
        assert!(TargetUrl::parse("rtmp://a.rtmp.youtube.com/live2/k", &allow).is_ok());
        assert!(TargetUrl::parse("rtmp://127.0.0.1:1/live/k", &allow).is_ok());
        assert_eq!(
            TargetUrl::parse("rtmp://10.0.0.1/live/k", &allow),
            Err(UrlError::HostNotAllowed("10.0.0.1".into()))
        );
        assert!(
            TargetUrl::parse("rtmp://127.0.0.1:1/live/k", &allow)
                .unwrap()
                .allowed_by_name()
        );
        assert!(
            !TargetUrl::parse("rtmp://127.0.0.1:1/live/k", &[])
                .unwrap()
                .allowed_by_name()
        );
        assert!(TargetUrl::parse("rtmp://999.1.1.1/live/k", &[]).is_err());
    }

    #[test]
    fn address_spellings_are_read_as_the_address() {
        for host in [
            "127.1",
            "0177.0.0.1",
            "2130706433",
            "0x7f000001",
            "[::ffff:127.0.0.1]",
        ] {
            let u = TargetUrl::parse(&format!("rtmp://{host}/live/k"), &[]).unwrap();
            assert_eq!(u.literal(), Some("127.0.0.1".parse().unwrap()), "{host}");
        }
        assert_eq!(
            TargetUrl::parse("rtmp://a.example/live/k", &[])
                .unwrap()
                .literal(),
            None
        );
    }

    #[test]
    fn connects_to_the_checked_address_and_keeps_the_name_for_the_server() {
        let ip: IpAddr = "203.0.113.5".parse().unwrap();
        let u = TargetUrl::parse("rtmp://live.example.com/app/inst/key?x=1", &[]).unwrap();
        let (url, tcurl) = u.connect_to(ip);
        assert_eq!(url, "rtmp://203.0.113.5:1935/app/inst/key?x=1");
        assert_eq!(
            tcurl.as_deref(),
            Some("rtmp://live.example.com:1935/app/inst")
        );
        let u = TargetUrl::parse("rtmp://live.example.com:1936/live2/key", &[]).unwrap();
        assert_eq!(
            u.connect_to("2001:db8::1".parse().unwrap()),
            (
                "rtmp://[2001:db8::1]:1936/live2/key".to_string(),
                Some("rtmp://live.example.com:1936/live2".to_string())
            )
        );
        // TLS needs the name (SNI, certificate): kept.
        let u = TargetUrl::parse("rtmps://live.example.com/app/key", &[]).unwrap();
        assert_eq!(u.connect_to(ip), (u.secret_full().to_string(), None));
        // A written address is used in its normal form.
        let u = TargetUrl::parse("rtmp://0x7f000001/live/key", &[]).unwrap();
        assert_eq!(
            u.connect_to("127.0.0.1".parse().unwrap()),
            ("rtmp://127.0.0.1:1935/live/key".to_string(), None)
        );
    }

    #[test]
    fn the_application_is_read_as_ffmpeg_reads_it() {
        for (path, app) in [
            ("/live2/key", "live2"),
            ("/app/inst/key", "app/inst"),
            ("/app/mp4:dir/file", "app"),
            ("/app/key?x=1", "app"),
            ("/ondemand/file", "ondemand"),
            ("/app/x?slist=stream", "app/x"),
            ("/app", ""),
        ] {
            assert_eq!(ffmpeg_app(path), app, "{path}");
        }
    }
}
