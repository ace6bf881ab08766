//! The shell's side of ksqlDB's HTTP API: statements to `POST /ksql`, queries to
//! `POST /query-stream` (one JSON row per line, read as it arrives), `GET /info`.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use eddy_engine::Session as Settings;
use serde_json::{json, Value};

/// The content type of `/query-stream`'s line-per-row answer.
const DELIMITED: &str = "application/vnd.ksqlapi.delimited.v1";

/// What can go wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    /// No answer: the server is down, the address is wrong, or the connection broke.
    #[error("cannot reach the server at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The server answered with one of ksqlDB's error bodies.
    #[error("{message}")]
    Server {
        message: String,
        /// The statement the error is about, when the server names one.
        statement: Option<String>,
    },
    /// The server answered with something that is not ksqlDB's API.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
}

pub(crate) type Result<T> = std::result::Result<T, ClientError>;

/// A connection to one server.
#[derive(Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    url: String,
    credentials: Option<(String, String)>,
}

impl Client {
    /// `url` is the server's base address, such as `http://127.0.0.1:8088` or
    /// `https://host:8443`; an https server's certificate must chain to the system's roots or
    /// to the PEM certificate in `trusted`.
    pub(crate) fn new(
        url: &str,
        credentials: Option<(String, String)>,
        trusted: Option<&Path>,
    ) -> anyhow::Result<Client> {
        // reqwest's rustls takes the process's crypto provider: ring, as the server uses.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(5));
        if let Some(path) = trusted {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading the certificate {}", path.display()))?;
            for certificate in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("no PEM certificate in {}", path.display()))?
            {
                builder = builder.add_root_certificate(certificate);
            }
        }
        Ok(Client {
            http: builder.build().context("setting up the HTTP client")?,
            url: url.trim_end_matches('/').to_string(),
            credentials,
        })
    }

    /// The same credentials and trusted certificates, for another server.
    pub(crate) fn at(&self, url: &str) -> Client {
        Client {
            http: self.http.clone(),
            url: url.trim_end_matches('/').to_string(),
            credentials: self.credentials.clone(),
        }
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// `GET /info`: the server's version, and whether it answers at all.
    pub(crate) async fn info(&self) -> Result<Value> {
        let request = self.http.get(format!("{}/info", self.url));
        let response = self.send(request).await?;
        self.json_body(response).await
    }

    /// Runs statements (not queries) through `POST /ksql`; one entity per statement.
    pub(crate) async fn ksql(&self, sql: &str, session: &Settings) -> Result<Vec<Value>> {
        let body = json!({
            "ksql": sql,
            "streamsProperties": session.properties,
            "sessionVariables": session.variables,
        });
        let request = self
            .http
            .post(format!("{}/ksql", self.url))
            .header(reqwest::header::ACCEPT, "application/vnd.ksql.v1+json")
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        let response = self.send(request).await?;
        match self.json_body(response).await? {
            Value::Array(entities) => Ok(entities),
            other => Err(ClientError::Protocol(format!(
                "/ksql answered {other} instead of an array"
            ))),
        }
    }

    /// Starts a push or pull query through `POST /query-stream`; its rows are read from the
    /// returned stream as the server sends them.
    pub(crate) async fn query(&self, sql: &str, session: &Settings) -> Result<RowStream> {
        let mut stream = self.stream(sql, session).await?;
        let header = stream
            .next_line()
            .await?
            .ok_or_else(|| ClientError::Protocol("the query ended before its header".into()))?;
        if let Some(error) = error_in(&header) {
            return Err(error);
        }
        stream.query_id = header["queryId"].as_str().unwrap_or_default().to_string();
        let names = header["columnNames"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let types = header["columnTypes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        stream.columns = names
            .iter()
            .zip(types.iter().chain(std::iter::repeat(&Value::Null)))
            .map(|(name, data_type)| {
                (
                    name.as_str().unwrap_or_default().to_string(),
                    data_type.as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        Ok(stream)
    }

    /// Starts PRINT through `POST /query-stream`; its text lines are read from the returned
    /// stream with [`RowStream::next_text_line`].
    pub(crate) async fn print(&self, sql: &str, session: &Settings) -> Result<RowStream> {
        self.stream(sql, session).await
    }

    async fn stream(&self, sql: &str, session: &Settings) -> Result<RowStream> {
        let body = json!({
            "sql": sql,
            "properties": session.properties,
            "sessionVariables": session.variables,
        });
        let request = self
            .http
            .post(format!("{}/query-stream", self.url))
            .header(reqwest::header::ACCEPT, DELIMITED)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        let response = self.send(request).await?;
        Ok(RowStream {
            response,
            buffer: Vec::new(),
            url: self.url.clone(),
            query_id: String::new(),
            columns: Vec::new(),
        })
    }

    /// Sends a request; an error status becomes the server's error message.
    async fn send(&self, mut request: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        if let Some((user, password)) = &self.credentials {
            request = request.basic_auth(user, Some(password));
        }
        let response = request
            .send()
            .await
            .map_err(|e| unreachable(&self.url, &e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| unreachable(&self.url, &e))?;
        let error = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|body| error_in(&body));
        Err(error.unwrap_or_else(|| ClientError::Server {
            message: format!("the server answered {status}: {}", text.trim()),
            statement: None,
        }))
    }

    async fn json_body(&self, response: reqwest::Response) -> Result<Value> {
        let text = response
            .text()
            .await
            .map_err(|e| unreachable(&self.url, &e))?;
        serde_json::from_str(&text).map_err(|e| ClientError::Protocol(format!("{e}: {text}")))
    }
}

/// The rows of a running query, one JSON array per line of the answer.
pub(crate) struct RowStream {
    response: reqwest::Response,
    buffer: Vec<u8>,
    url: String,
    /// The server's id for the query (used to close it).
    pub(crate) query_id: String,
    /// Each column's name and type.
    pub(crate) columns: Vec<(String, String)>,
}

impl RowStream {
    /// The next row, or `None` when the query has ended (its LIMIT, or a pull query's last
    /// row).
    pub(crate) async fn next_row(&mut self) -> Result<Option<Vec<Value>>> {
        loop {
            let Some(line) = self.next_line().await? else {
                return Ok(None);
            };
            match line {
                Value::Array(values) => return Ok(Some(values)),
                other => {
                    if let Some(error) = error_in(&other) {
                        return Err(error);
                    }
                }
            }
        }
    }

    async fn next_line(&mut self) -> Result<Option<Value>> {
        let Some(line) = self.next_text_line().await? else {
            return Ok(None);
        };
        serde_json::from_str(line.trim())
            .map(Some)
            .map_err(|e| ClientError::Protocol(format!("{e}: {line}")))
    }

    /// The next line that is not blank, without its line end.
    pub(crate) async fn next_text_line(&mut self) -> Result<Option<String>> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line).trim_end().to_string();
                if line.trim().is_empty() {
                    continue;
                }
                return Ok(Some(line));
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => self.buffer.extend_from_slice(&chunk),
                Ok(None) if self.buffer.iter().all(u8::is_ascii_whitespace) => return Ok(None),
                Ok(None) => self.buffer.push(b'\n'),
                Err(e) => return Err(unreachable(&self.url, &e)),
            }
        }
    }
}

/// ksqlDB's error body (`error_code` and `message`) as an error.
fn error_in(body: &Value) -> Option<ClientError> {
    body.get("error_code")?;
    Some(ClientError::Server {
        message: body["message"]
            .as_str()
            .unwrap_or("unknown error")
            .to_string(),
        statement: body["statementText"].as_str().map(str::to_string),
    })
}

fn unreachable(url: &str, error: &reqwest::Error) -> ClientError {
    let mut reason = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        reason = format!("{reason}: {cause}");
        source = cause.source();
    }
    ClientError::Unreachable {
        url: url.to_string(),
        reason,
    }
}
