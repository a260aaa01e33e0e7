//! Stream names and the patterns that match them: the bottom floor that
//! the hub, access control, the config, the recorder and the restreamer all
//! name streams with.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest accepted stream name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// A validated stream name: 1–128 characters from `A–Z a–z 0–9 . _ -`, not
/// starting with a dot, so it is safe as a path segment and a file name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamName(String);

/// Why a stream name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty string.
    #[error("stream name is empty")]
    Empty,
    /// Over [`MAX_NAME_LEN`].
    #[error("stream name is longer than {MAX_NAME_LEN} characters")]
    TooLong,
    /// A character outside the allowed set.
    #[error("stream name may only contain letters, digits, '.', '_' and '-' (found {0:?})")]
    BadChar(char),
    /// Starts with a dot (hidden files, `..`).
    #[error("stream name may not start with '.'")]
    LeadingDot,
}

impl StreamName {
    /// Validates a name.
    pub fn parse(s: &str) -> Result<StreamName, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong);
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(NameError::BadChar(c));
        }
        if s.starts_with('.') {
            return Err(NameError::LeadingDot);
        }
        Ok(StreamName(s.to_string()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A name pattern: `*` matches any run of characters, `?` one character,
/// everything else itself (`cam-*`, `studio-?`, `*`). The config's lists of
/// stream names (what to record, restream, protect) are patterns, and so are
/// `restream.allowed_hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Pattern(String);

impl Pattern {
    /// The pattern `text`.
    pub fn new(text: impl Into<String>) -> Pattern {
        Pattern(text.into())
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the pattern is the empty string (which matches nothing).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        matches(&self.0, name)
    }

    /// Whether `name` matches, ignoring ASCII case (host names).
    pub fn matches_ignoring_case(&self, name: &str) -> bool {
        matches(&self.0.to_ascii_lowercase(), &name.to_ascii_lowercase())
    }
}

impl From<&str> for Pattern {
    fn from(s: &str) -> Pattern {
        Pattern::new(s)
    }
}

impl From<String> for Pattern {
    fn from(s: String) -> Pattern {
        Pattern(s)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether any of `patterns` matches `name`.
pub fn any_matches(patterns: &[Pattern], name: &str) -> bool {
    patterns.iter().any(|p| p.matches(name))
}

/// Whether `name` matches the pattern text `pattern` (for patterns that
/// come from elsewhere than the config, such as a token's claims).
pub fn matches(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_refuses() {
        assert!(StreamName::parse("demo").is_ok());
        assert!(StreamName::parse("cam-1_a.b").is_ok());
        assert_eq!(StreamName::parse(""), Err(NameError::Empty));
        assert_eq!(StreamName::parse("a/b"), Err(NameError::BadChar('/')));
        assert_eq!(StreamName::parse(".."), Err(NameError::LeadingDot));
        assert_eq!(StreamName::parse("é"), Err(NameError::BadChar('é')));
        assert_eq!(StreamName::parse(&"x".repeat(129)), Err(NameError::TooLong));
        assert!(StreamName::parse(&"x".repeat(128)).is_ok());
    }

    #[test]
    fn patterns_match() {
        assert!(matches("*", "demo"));
        assert!(matches("cam-*", "cam-1"));
        assert!(!matches("cam-*", "demo"));
        assert!(matches("a?c", "abc"));
        assert!(matches("*-test", "x-test"));
        assert!(!matches("", "x"));
        let p = Pattern::from("*.RTMP.youtube.com");
        assert!(!p.matches("a.rtmp.youtube.com"));
        assert!(p.matches_ignoring_case("A.rtmp.YouTube.com"));
        assert!(any_matches(&["x".into(), "cam-*".into()], "cam-2"));
        let parsed: Vec<Pattern> = serde_json::from_str(r#"["cam-*"]"#).unwrap();
        assert_eq!(parsed[0].as_str(), "cam-*");
    }
}
