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
//! # a client must send a request's line and headers within this long (default 30 s)
//! http.header.read.timeout.ms=30000
//! # ... and its body within this long (default 60 s; on /inserts-stream: between pieces)
//! http.body.read.timeout.ms=60000
//! # a pull query that would hold more rows, or more bytes of its source or result, fails
//! ksql.query.pull.max.rows=100000
//! ksql.query.pull.max.bytes=67108864
//! ```
//!
//! An unknown key is an error naming its line, so a typo is not silently ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use eddy_engine::pull::PullLimits;

use crate::auth::Users;
use crate::limits::{BODY_READ_TIMEOUT_DEFAULT, HEADER_READ_TIMEOUT_DEFAULT};
use crate::tls::TlsConfig;

/// The keys a config file may set, for the error on an unknown one.
const KNOWN_KEYS: &str = "listeners, bootstrap.servers, data.dir, authentication.users.<name>, \
    tls.cert, tls.key, push.slow.client.timeout.ms, http.header.read.timeout.ms, \
    http.body.read.timeout.ms, ksql.query.pull.max.rows, ksql.query.pull.max.bytes";

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
    /// `http.header.read.timeout.ms`: how long a connection may take to send a request's line
    /// and headers (see [`crate::limits::HEADER_READ_TIMEOUT_DEFAULT`]).
    pub header_read_timeout: Duration,
    /// `http.body.read.timeout.ms`: how long a request body may take to arrive; on
    /// `/inserts-stream`, the longest pause between two pieces of it (see
    /// [`crate::limits::BODY_READ_TIMEOUT_DEFAULT`]).
    pub body_read_timeout: Duration,
}

impl Default for ApiSettings {
    fn default() -> ApiSettings {
        ApiSettings {
            users: None,
            tls: None,
            slow_client_limit: Duration::from_secs(30),
            header_read_timeout: HEADER_READ_TIMEOUT_DEFAULT,
            body_read_timeout: BODY_READ_TIMEOUT_DEFAULT,
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
    /// Authentication, TLS, timeouts and push-client settings.
    pub api: ApiSettings,
    /// `ksql.query.pull.max.rows` and `ksql.query.pull.max.bytes`: what one pull query may
    /// hold; the server hands them to [`eddy_engine::pull::set_limits`].
    pub pull: PullLimits,
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
                    config.api.slow_client_limit = milliseconds(key, &value, number)?;
                }
                "http.header.read.timeout.ms" => {
                    config.api.header_read_timeout = milliseconds(key, &value, number)?;
                }
                "http.body.read.timeout.ms" => {
                    config.api.body_read_timeout = milliseconds(key, &value, number)?;
                }
                "ksql.query.pull.max.rows" => config.pull.rows_max = count(key, &value, number)?,
                "ksql.query.pull.max.bytes" => config.pull.bytes_max = count(key, &value, number)?,
                _ => match key.strip_prefix("authentication.users.") {
                    Some(user) if !user.is_empty() => {
                        users.insert(user.to_string(), value);
                    }
                    _ => {
                        return Err(format!(
                            "line {}: unknown setting '{key}' (known: {KNOWN_KEYS})",
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

/// A duration setting in milliseconds (at least 1); `number` is the line's, from 0.
fn milliseconds(key: &str, value: &str, number: usize) -> Result<Duration, String> {
    let ms: u64 = value.parse().map_err(|_| {
        format!(
            "line {}: {key} must be a number of milliseconds, not '{value}'",
            number + 1
        )
    })?;
    Ok(Duration::from_millis(ms.max(1)))
}

/// A count setting (rows, bytes), at least 1; `number` is the line's, from 0.
fn count(key: &str, value: &str, number: usize) -> Result<usize, String> {
    let count: usize = value.parse().map_err(|_| {
        format!(
            "line {}: {key} must be a whole number, not '{value}'",
            number + 1
        )
    })?;
    Ok(count.max(1))
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

    #[test]
    fn timeouts_and_pull_limits_are_read_with_defaults() {
        let config = ServerConfig::parse("", Path::new(".")).unwrap();
        assert_eq!(config.api.header_read_timeout, HEADER_READ_TIMEOUT_DEFAULT);
        assert_eq!(config.api.body_read_timeout, BODY_READ_TIMEOUT_DEFAULT);
        assert_eq!(config.pull, PullLimits::default());
        let config = ServerConfig::parse(
            "http.header.read.timeout.ms=250\nhttp.body.read.timeout.ms=500\n\
             ksql.query.pull.max.rows=10\nksql.query.pull.max.bytes=2048\n",
            Path::new("."),
        )
        .unwrap();
        assert_eq!(config.api.header_read_timeout, Duration::from_millis(250));
        assert_eq!(config.api.body_read_timeout, Duration::from_millis(500));
        assert_eq!(config.pull.rows_max, 10);
        assert_eq!(config.pull.bytes_max, 2048);
        let error = ServerConfig::parse("http.body.read.timeout.ms=soon", Path::new("."))
            .err()
            .unwrap();
        assert!(
            error.contains("http.body.read.timeout.ms must be a number"),
            "{error}"
        );
    }
}
