//! Stream names: what a URL path segment may carry as a stream's identity.

use std::fmt;

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
}
