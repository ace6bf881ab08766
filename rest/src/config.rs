//! The server's config file, in the Java properties format ksqlDB's
//! `ksql-server.properties` uses:
//!
//! ```text
//! # where the HTTP API listens (overridden by --listen)
//! listeners=http://127.0.0.1:8088
//! # a separate Kafka-compatible broker instead of the embedded one (or --bootstrap)
//! bootstrap.servers=127.0.0.1:9092
//! # the embedded broker's data (or --data-dir)
//! data.dir=./eddy-data
//! # basic authentication: one line per user, with a hash from `eddy hash-password`
//! authentication.users.ann=$argon2id$v=19$m=19456,t=2,p=1$...
//! ```
//!
//! An unknown key is an error naming its line, so a typo is not silently ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::auth::Users;

/// What the config file sets; `None` where it is silent.
#[derive(Default)]
pub struct ServerConfig {
    /// `listeners`: the address of the HTTP API, as `host:port`.
    pub listen: Option<String>,
    /// `bootstrap.servers`.
    pub bootstrap: Option<String>,
    /// `data.dir`.
    pub data_dir: Option<PathBuf>,
    /// `authentication.users.<name>`: when any is set, every endpoint but /healthcheck needs
    /// basic authentication.
    pub users: Option<Users>,
}

impl ServerConfig {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<ServerConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        ServerConfig::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<ServerConfig, String> {
        let mut config = ServerConfig::default();
        let mut users = BTreeMap::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let Some((key, value)) = line.split_once(['=', ':']) else {
                return Err(format!(
                    "line {}: expected key=value, found '{line}'",
                    number + 1
                ));
            };
            let (key, value) = (key.trim(), value.trim().to_string());
            match key {
                "listeners" => {
                    let first = value.split(',').next().unwrap_or_default().trim();
                    let address = first
                        .strip_prefix("http://")
                        .unwrap_or(first)
                        .trim_end_matches('/');
                    config.listen = Some(address.to_string());
                }
                "bootstrap.servers" => config.bootstrap = Some(value),
                "data.dir" => config.data_dir = Some(PathBuf::from(value)),
                _ => match key.strip_prefix("authentication.users.") {
                    Some(user) if !user.is_empty() => {
                        users.insert(user.to_string(), value);
                    }
                    _ => {
                        return Err(format!(
                        "line {}: unknown setting '{key}' (known: listeners, bootstrap.servers, \
                             data.dir, authentication.users.<name>)",
                        number + 1
                    ))
                    }
                },
            }
        }
        if !users.is_empty() {
            config.users = Some(Users::new(users)?);
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_read_and_typos_named() {
        let hash = crate::auth::hash_password("pw");
        let config = ServerConfig::parse(&format!(
            "# comment\nlisteners=http://0.0.0.0:8088\ndata.dir = /tmp/x\nauthentication.users.ann={hash}\n"
        ))
        .unwrap();
        assert_eq!(config.listen.as_deref(), Some("0.0.0.0:8088"));
        assert_eq!(config.data_dir, Some(PathBuf::from("/tmp/x")));
        assert!(config.users.is_some());
        let error = ServerConfig::parse("listners=x").err().unwrap();
        assert!(
            error.starts_with("line 1: unknown setting 'listners'"),
            "{error}"
        );
    }
}
