//! Running what the user typed: the shell's own commands (RUN SCRIPT, SET, UNSET, OUTPUT
//! FORMAT, server, version, help), queries through `/query-stream` with rows printed as they
//! arrive, and every other statement through `/ksql`. Interactive and scripted use share it.

use std::io::Write;
use std::time::Duration;

use eddy_engine::parser::Statement;
use eddy_engine::Session as Settings;

use crate::client::{Client, ClientError};
use crate::render::{self, OutputFormat, RowTable};

/// How long a push query from the latest offset may show nothing before the shell explains
/// how to read from the beginning.
const EMPTY_PUSH_HINT_AFTER: Duration = Duration::from_secs(4);

/// A failure that stops a script; the interactive shell reports it and carries on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ShellError {
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A shell command used wrongly, or a script that cannot be read.
    #[error("{0}")]
    Usage(String),
}

/// What the shell does after a command.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    Continue,
    Exit,
}

/// Shell commands that need no `;` and stand on a line of their own.
pub(crate) const LINE_COMMANDS: &[&str] = &["exit", "quit", "help", "version", "server", "output"];

/// The shell's state: where statements go and what goes with them.
pub(crate) struct Session {
    pub(crate) client: Client,
    /// Properties set with SET and variables set with DEFINE, kept here and sent with every
    /// later statement and query (the server keeps no session between requests).
    pub(crate) settings: Settings,
    pub(crate) format: OutputFormat,
}

impl Session {
    pub(crate) fn new(client: Client) -> Session {
        Session {
            client,
            settings: Settings::default(),
            format: OutputFormat::Tabular,
        }
    }

    /// Runs every statement and command in `text` in order, stopping at the first error.
    /// Shell commands that need no `;` are recognized on a line of their own.
    pub(crate) async fn run(&mut self, text: &str) -> Result<Next, ShellError> {
        let mut pending = String::new();
        for line in text.lines() {
            if pending.trim().is_empty() {
                if let Some(next) = self.line_command(line).await? {
                    if next == Next::Exit {
                        return Ok(next);
                    }
                    continue;
                }
            }
            pending.push_str(line);
            pending.push('\n');
            // An error here is an open quote: the statement goes on in the next line.
            let Ok((statements, rest)) = eddy_engine::split_statements(&pending) else {
                continue;
            };
            for statement in &statements {
                if self.statement(statement).await? == Next::Exit {
                    return Ok(Next::Exit);
                }
            }
            pending = rest;
        }
        // The last statement may leave out its `;`.
        let (statements, rest) = eddy_engine::split_statements(&pending)
            .map_err(|e| ShellError::Usage(e.to_string()))?;
        for statement in statements
            .iter()
            .chain(Some(&rest).filter(|r| !r.is_empty()))
        {
            if self.statement(statement).await? == Next::Exit {
                return Ok(Next::Exit);
            }
        }
        Ok(Next::Continue)
    }

    /// Commands that need no `;`: exit, quit, help, version, server, output.
    pub(crate) async fn line_command(&mut self, line: &str) -> Result<Option<Next>, ShellError> {
        let words: Vec<&str> = line
            .trim()
            .trim_end_matches(';')
            .split_whitespace()
            .collect();
        let first = words.first().map(|w| w.to_ascii_lowercase());
        let next = match (first.as_deref(), &words[..]) {
            (Some("exit" | "quit"), [_]) => Next::Exit,
            (Some("help"), [_]) => {
                print!("{HELP}");
                Next::Continue
            }
            (Some("version"), [_]) => {
                self.version().await;
                Next::Continue
            }
            (Some("server"), [_]) => {
                println!("Server: {}", self.client.url());
                self.version().await;
                Next::Continue
            }
            (Some("server"), [_, url]) => {
                let client = self.client.at(url);
                client.info().await?;
                self.client = client;
                println!("Server: {url}");
                Next::Continue
            }
            (Some("output"), [_]) => {
                println!("Output format: {}", self.format.name());
                Next::Continue
            }
            (Some("output"), [_, format, name]) if format.eq_ignore_ascii_case("format") => {
                self.format = OutputFormat::parse(name).ok_or_else(|| {
                    ShellError::Usage(format!(
                        "unknown output format '{name}': use TABULAR or JSON"
                    ))
                })?;
                println!("Output format set to {}", self.format.name());
                Next::Continue
            }
            _ => return Ok(None),
        };
        Ok(Some(next))
    }

    /// One `;`-ended statement or shell command.
    async fn statement(&mut self, statement: &str) -> Result<Next, ShellError> {
        if let Some(next) = self.line_command(statement).await? {
            return Ok(next);
        }
        let upper = statement.to_ascii_uppercase();
        let words: Vec<&str> = upper.split_whitespace().collect();
        match words.as_slice() {
            ["RUN", "SCRIPT", ..] => {
                let path = quoted(statement, 0).ok_or_else(|| {
                    ShellError::Usage(
                        "RUN SCRIPT takes a quoted file name: RUN SCRIPT 'file.sql';".into(),
                    )
                })?;
                let script = std::fs::read_to_string(&path)
                    .map_err(|e| ShellError::Usage(format!("cannot read '{path}': {e}")))?;
                Box::pin(self.run(&script)).await
            }
            ["SET", ..] => {
                let (Some(name), Some(value)) = (quoted(statement, 0), quoted(statement, 1)) else {
                    return Err(ShellError::Usage(
                        "SET takes a quoted property and value: SET 'auto.offset.reset'='earliest';"
                            .into(),
                    ));
                };
                println!("Successfully changed local property '{name}' to '{value}'.");
                self.settings.properties.insert(name, value);
                Ok(Next::Continue)
            }
            ["UNSET", ..] => {
                let name = quoted(statement, 0).ok_or_else(|| {
                    ShellError::Usage(
                        "UNSET takes a quoted property: UNSET 'auto.offset.reset';".into(),
                    )
                })?;
                match self.settings.properties.remove(&name) {
                    Some(old) => {
                        println!("Successfully unset local property '{name}' (value was '{old}').")
                    }
                    None => println!("Local property '{name}' was not set."),
                }
                Ok(Next::Continue)
            }
            ["DEFINE", ..] | ["UNDEFINE", ..] => {
                match eddy_engine::parser::parse_one(statement) {
                    Ok(parsed) => match parsed.statement {
                        Statement::Define { name, value } => {
                            self.settings.variables.insert(name, value);
                        }
                        Statement::Undefine { name } => {
                            self.settings.variables.remove(&name);
                        }
                        _ => {}
                    },
                    Err(e) => return Err(ShellError::Usage(e.to_string())),
                }
                Ok(Next::Continue)
            }
            ["SELECT", ..] => self.query(statement).await.map(|()| Next::Continue),
            ["PRINT", ..] => self.print(statement).await.map(|()| Next::Continue),
            _ => {
                let entities = self.client.ksql(statement, &self.settings).await?;
                let mut out = std::io::stdout().lock();
                // INSERT VALUES and a few others answer with no message: nothing to show.
                let silent = |e: &&serde_json::Value| {
                    e["@type"] == "currentStatus" && e["commandStatus"]["message"] == ""
                };
                for entity in entities.iter().filter(|e| !silent(e)) {
                    let _ = write!(out, "{}", render::entity(entity, self.format));
                }
                Ok(Next::Continue)
            }
        }
    }

    /// A query: a pull query's rows come at once and are drawn to fit; a push query's rows
    /// are drawn as they arrive until its LIMIT or Ctrl-C.
    async fn query(&mut self, sql: &str) -> Result<(), ShellError> {
        let push = sql.to_ascii_uppercase().contains("EMIT ");
        let mut stream = self.client.query(sql, &self.settings).await?;
        let columns = stream.columns.clone();
        if !push {
            let mut rows = Vec::new();
            while let Some(row) = stream.next_row().await? {
                rows.push(row);
            }
            let table = RowTable::fitting(&columns, &rows);
            let mut out = String::new();
            match self.format {
                OutputFormat::Tabular => {
                    out.push_str(&table.header(&columns));
                    rows.iter().for_each(|row| out.push_str(&table.row(row)));
                    out.push_str(&table.rule());
                }
                OutputFormat::Json => {
                    rows.iter()
                        .for_each(|row| out.push_str(&render::json_row(&columns, row)));
                }
            }
            print!("{out}Query terminated\n");
            return Ok(());
        }
        let table = RowTable::for_columns(&columns);
        let reads_latest = self
            .settings
            .properties
            .get("auto.offset.reset")
            .is_none_or(|reset| reset != "earliest");
        println!("Press CTRL-C to interrupt");
        if self.format == OutputFormat::Tabular {
            print!("{}", table.header(&columns));
        }
        flush();
        let hint = tokio::time::sleep(EMPTY_PUSH_HINT_AFTER);
        tokio::pin!(hint);
        let mut shown = 0u64;
        let mut hinted = !reads_latest;
        let interrupted = tokio::signal::ctrl_c();
        tokio::pin!(interrupted);
        loop {
            tokio::select! {
                row = stream.next_row() => match row? {
                    Some(row) => {
                        shown += 1;
                        match self.format {
                            OutputFormat::Tabular => print!("{}", table.row(&row)),
                            OutputFormat::Json => print!("{}", render::json_row(&columns, &row)),
                        }
                        flush();
                    }
                    None => {
                        if upper_words(sql).contains(&"LIMIT".to_string()) {
                            println!("Limit Reached");
                        }
                        break;
                    }
                },
                _ = &mut hint, if !hinted && shown == 0 => {
                    hinted = true;
                    println!(
                        "(No rows yet: this query only sees rows written from now on. To read \
                         what is already there, run SET 'auto.offset.reset'='earliest'; and \
                         start the query again.)"
                    );
                    flush();
                }
                _ = &mut interrupted => break,
            }
        }
        println!("Query terminated");
        Ok(())
    }

    /// PRINT: the topic's records as the server prints them, until its LIMIT or Ctrl-C.
    async fn print(&mut self, sql: &str) -> Result<(), ShellError> {
        let mut stream = self.client.print(sql, &self.settings).await?;
        println!("Press CTRL-C to interrupt");
        flush();
        let interrupted = tokio::signal::ctrl_c();
        tokio::pin!(interrupted);
        loop {
            tokio::select! {
                line = stream.next_text_line() => match line? {
                    Some(line) => {
                        println!("{line}");
                        flush();
                    }
                    None => break,
                },
                _ = &mut interrupted => break,
            }
        }
        println!("Topic printing ceased");
        Ok(())
    }

    async fn version(&self) {
        let server = match self.client.info().await {
            Ok(info) => render::text(&info["KsqlServerInfo"]["version"]),
            Err(e) => format!("unknown ({e})"),
        };
        println!(
            "Eddy shell {}, server speaks ksqlDB {server}",
            env!("CARGO_PKG_VERSION")
        );
    }
}

fn upper_words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(str::to_ascii_uppercase)
        .collect()
}

/// The `index`th single-quoted string in `text` ('' inside one is a quote).
fn quoted(text: &str, index: usize) -> Option<String> {
    let mut found = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    value.push('\'');
                }
                '\'' => break,
                other => value.push(other),
            }
        }
        found.push(value);
    }
    found.into_iter().nth(index)
}

fn flush() {
    let _ = std::io::stdout().flush();
}

const HELP: &str = "\
Statements end with ';' and may span lines. What you can type:

  CREATE STREAM | TABLE ... WITH (...);      declare a stream or table over a topic
  CREATE STREAM | TABLE ... AS SELECT ...;   a persistent query into a derived topic
  INSERT INTO s (a, b) VALUES (1, 'x');      write a row
  SELECT ... FROM s EMIT CHANGES;            a push query: rows as they happen (Ctrl-C stops it)
  SELECT ... FROM t WHERE ...;               a pull query: a table's current rows
  PRINT topic FROM BEGINNING LIMIT 10;       a topic's raw records (Ctrl-C stops it)
  SHOW STREAMS | TABLES | TOPICS | QUERIES | PROPERTIES | FUNCTIONS;
  DESCRIBE s;    DESCRIBE FUNCTION f;    TERMINATE id;

Shell commands:
  SET 'auto.offset.reset'='earliest';        send a property with later queries
  UNSET 'auto.offset.reset';                 stop sending it
  RUN SCRIPT 'file.sql';                     run the statements in a file
  OUTPUT FORMAT TABULAR | JSON               how results are drawn
  server [URL]                               show the server, or switch to another
  version                                    the shell's and the server's versions
  help                                       this text
  exit, quit or Ctrl-D                       leave
";

#[cfg(test)]
mod tests {
    use super::quoted;

    #[test]
    fn quoted_strings_are_found_in_order() {
        assert_eq!(
            quoted("SET 'auto.offset.reset' = 'earliest'", 1).as_deref(),
            Some("earliest")
        );
        assert_eq!(
            quoted("RUN SCRIPT 'it''s.sql'", 0).as_deref(),
            Some("it's.sql")
        );
        assert_eq!(quoted("UNSET x", 0), None);
    }
}
