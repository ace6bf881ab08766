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
//! # TLS: a PEM certificate chain and its PEM key (listeners may then say https://)
//! tls.cert=/etc/eddy/server.crt
//! tls.key=/etc/eddy/server.key
//! # a push-query client that reads nothing for this long is disconnected (default 30 s)
//! push.slow.client.timeout.ms=30000
//! ```
//!
//! An unknown key is an error naming its line, so a typo is not silently ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::auth::Users;
use crate::tls::TlsConfig;

/// How the HTTP API treats its clients: who may call, over what, and how long a push-query
/// client may fall behind.
pub struct ApiSettings {
    /// `authentication.users.<name>`: when any is set, every endpoint but /healthcheck needs
    /// basic authentication.
    pub users: Option<Users>,
    /// `tls.cert` and `tls.key`: when set, the API is served over TLS only.
    pub tls: Option<TlsConfig>,
    /// `push.slow.client.timeout.ms`: a push query whose client leaves its buffer full this
    /// long is ended and the client disconnected, so it cannot hold rows back for others.
    pub slow_client_limit: Duration,
}

impl Default for ApiSettings {
    fn default() -> ApiSettings {
        ApiSettings {
            users: None,
            tls: None,
            slow_client_limit: Duration::from_secs(30),
        }
    }
}

/// What the config file sets; `None` where it is silent.
#[derive(Default)]
pub struct ServerConfig {
    /// `listeners`: the address of the HTTP API, as `host:port`.
    pub listen: Option<String>,
    /// `bootstrap.servers`.
    pub bootstrap: Option<String>,
    /// `data.dir`.
    pub data_dir: Option<PathBuf>,
    /// Authentication, TLS and push-client settings.
    pub api: ApiSettings,
}

impl ServerConfig {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<ServerConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        ServerConfig::parse(&text, base).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses a config file's text; relative file names are taken from `base`.
    pub fn parse(text: &str, base: &Path) -> Result<ServerConfig, String> {
        let mut config = ServerConfig::default();
        let mut users = BTreeMap::new();
        let (mut tls_cert, mut tls_key, mut https) = (None, None, false);
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
                    https = first.starts_with("https://");
                    let address = first
                        .strip_prefix("http://")
                        .or_else(|| first.strip_prefix("https://"))
                        .unwrap_or(first)
                        .trim_end_matches('/');
                    config.listen = Some(address.to_string());
                }
                "bootstrap.servers" => config.bootstrap = Some(value),
                "data.dir" => config.data_dir = Some(PathBuf::from(value)),
                "tls.cert" => tls_cert = Some(base.join(value)),
                "tls.key" => tls_key = Some(base.join(value)),
                "push.slow.client.timeout.ms" => {
                    let ms: u64 = value.parse().map_err(|_| {
                        format!(
                            "line {}: push.slow.client.timeout.ms must be a number of \
                             milliseconds, not '{value}'",
                            number + 1
                        )
                    })?;
                    config.api.slow_client_limit = Duration::from_millis(ms.max(1));
                }
                _ => match key.strip_prefix("authentication.users.") {
                    Some(user) if !user.is_empty() => {
                        users.insert(user.to_string(), value);
                    }
                    _ => {
                        return Err(format!(
                        "line {}: unknown setting '{key}' (known: listeners, bootstrap.servers, \
                             data.dir, authentication.users.<name>, tls.cert, tls.key, \
                             push.slow.client.timeout.ms)",
                        number + 1
                    ))
                    }
                },
            }
        }
        if !users.is_empty() {
            config.api.users = Some(Users::new(users)?);
        }
        config.api.tls = match (tls_cert, tls_key) {
            (Some(cert), Some(key)) => Some(TlsConfig::load(&cert, &key)?),
            (None, None) if https => {
                return Err("listeners says https:// but tls.cert and tls.key are not set".into())
            }
            (None, None) => None,
            (Some(_), None) => return Err("tls.cert is set but tls.key is not".into()),
            (None, Some(_)) => return Err("tls.key is set but tls.cert is not".into()),
        };
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_read_and_typos_named() {
        let hash = crate::auth::hash_password("pw");
        let config = ServerConfig::parse(
            &format!(
                "# comment\nlisteners=http://0.0.0.0:8088\ndata.dir = /tmp/x\nauthentication.users.ann={hash}\n"
            ),
            Path::new("."),
        )
        .unwrap();
        assert_eq!(config.listen.as_deref(), Some("0.0.0.0:8088"));
        assert_eq!(config.data_dir, Some(PathBuf::from("/tmp/x")));
        assert!(config.api.users.is_some());
        let error = ServerConfig::parse("listners=x", Path::new("."))
            .err()
            .unwrap();
        assert!(
            error.starts_with("line 1: unknown setting 'listners'"),
            "{error}"
        );
        let error = ServerConfig::parse("listeners=https://0.0.0.0:8443", Path::new("."))
            .err()
            .unwrap();
        assert!(
            error.contains("tls.cert and tls.key are not set"),
            "{error}"
        );
        let error = ServerConfig::parse("tls.cert=/nonexistent.pem\ntls.key=/k", Path::new("."))
            .err()
            .unwrap();
        assert!(error.contains("/nonexistent.pem"), "{error}");
    }
}
