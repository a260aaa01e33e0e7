//! Where a config comes from: defaults, then a TOML file (given, or
//! `./castgate.toml`), then the environment and flags (`cli`).

use std::path::Path;

use super::{Config, ConfigError, ServeArgs};

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "castgate.toml";

impl Config {
    /// Loads defaults, the TOML file (explicit or `./castgate.toml`), then the
    /// environment and flags carried by `args`, and validates the result.
    pub fn load(args: &ServeArgs) -> Result<Config, ConfigError> {
        let mut config = match &args.config {
            Some(path) => Config::from_file(path)?,
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => {
                Config::from_file(Path::new(DEFAULT_CONFIG_FILE))?
            }
            None => Config::default(),
        };
        config.apply(args)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML file; unknown keys are errors, so typos do not pass silently.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses TOML text; the error is the parser's one-line message.
    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.message().to_string() + &location(text, e.span()))
    }
}

fn location(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(span) = span else {
        return String::new();
    };
    let line = text
        .get(..span.start)
        .map(|s| s.matches('\n').count() + 1)
        .unwrap_or(1);
    format!(" (line {line})")
}
