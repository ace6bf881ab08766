//! The interactive shell: line editing with rustyline, statements over several lines until
//! `;`, history in a file across runs (Ctrl-R searches it), tab completion of keywords and of
//! the names the server knows, Ctrl-C to clear the line or stop a push query, Ctrl-D to leave.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};
use tokio::runtime::Runtime;

use crate::client::ClientError;
use crate::session::{Next, Session, ShellError};

const PROMPT: &str = "eddy> ";
/// The prompt while a statement is still open (no `;` yet).
const CONTINUATION_PROMPT: &str = "   -> ";

/// Words completed at any point of a statement.
const KEYWORDS: &[&str] = &[
    "ADVANCE",
    "ALL",
    "AND",
    "ARRAY",
    "AS",
    "BEGINNING",
    "BETWEEN",
    "BIGINT",
    "BOOLEAN",
    "BY",
    "BYTES",
    "CASE",
    "CAST",
    "CHANGES",
    "CREATE",
    "DATE",
    "DECIMAL",
    "DEFINE",
    "DELETE",
    "DESCRIBE",
    "DISTINCT",
    "DOUBLE",
    "DROP",
    "ELSE",
    "EMIT",
    "END",
    "EXISTS",
    "EXPLAIN",
    "EXTENDED",
    "FINAL",
    "FROM",
    "FUNCTIONS",
    "GRACE",
    "GROUP",
    "HAVING",
    "HOPPING",
    "IF",
    "IN",
    "INSERT",
    "INT",
    "INTEGER",
    "INTO",
    "IS",
    "JOIN",
    "KEY",
    "LEFT",
    "LIKE",
    "LIMIT",
    "LIST",
    "MAP",
    "NOT",
    "NULL",
    "ON",
    "OR",
    "OUTER",
    "PARTITION",
    "PERIOD",
    "PRIMARY",
    "PRINT",
    "PROPERTIES",
    "QUERIES",
    "REPLACE",
    "RETENTION",
    "RUN",
    "SCRIPT",
    "SELECT",
    "SESSION",
    "SET",
    "SHOW",
    "SIZE",
    "STREAM",
    "STREAMS",
    "STRING",
    "STRUCT",
    "TABLE",
    "TABLES",
    "TERMINATE",
    "THEN",
    "TIME",
    "TIMESTAMP",
    "TOPIC",
    "TOPICS",
    "TUMBLING",
    "UNSET",
    "VALUES",
    "VARCHAR",
    "WHEN",
    "WHERE",
    "WINDOW",
    "WITH",
    "WITHIN",
];

/// Runs the shell until `exit` or Ctrl-D.
pub(crate) fn run(runtime: &Runtime, session: &mut Session) -> anyhow::Result<()> {
    let names = Arc::new(Mutex::new(Vec::new()));
    let mut editor: Editor<ShellHelper, FileHistory> = Editor::new()?;
    editor.set_helper(Some(ShellHelper {
        names: Arc::clone(&names),
    }));
    let history = history_path();
    let _ = editor.load_history(&history);
    refresh_names(runtime, session, &names);
    let mut statement = String::new();
    loop {
        let prompt = if statement.is_empty() {
            PROMPT
        } else {
            CONTINUATION_PROMPT
        };
        match editor.readline(prompt) {
            Ok(line) => {
                if statement.is_empty() && line.trim().is_empty() {
                    continue;
                }
                if !statement.is_empty() {
                    statement.push('\n');
                }
                statement.push_str(&line);
                if !is_complete(&statement) {
                    continue;
                }
                let entry = std::mem::take(&mut statement);
                let _ = editor.add_history_entry(entry.as_str());
                // Saved at once, so history survives a shell that is killed.
                let _ = editor.save_history(&history);
                match runtime.block_on(session.run(&entry)) {
                    Ok(Next::Exit) => break,
                    Ok(Next::Continue) => {}
                    Err(error) => {
                        report(&error);
                        if matches!(error, ShellError::Client(ClientError::Unreachable { .. })) {
                            offer_reconnect(runtime, session, &mut editor);
                        }
                    }
                }
                refresh_names(runtime, session, &names);
            }
            // Ctrl-C at the prompt drops what was typed, as in a terminal.
            Err(ReadlineError::Interrupted) => statement.clear(),
            Err(ReadlineError::Eof) => break,
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

/// Prints an error, with a caret under its position when the server names one.
pub(crate) fn report(error: &ShellError) {
    let statement = match error {
        ShellError::Client(ClientError::Server { statement, .. }) => statement.as_deref(),
        _ => None,
    };
    eprint!("{}", crate::render::error(&error.to_string(), statement));
}

/// Whether what was typed so far is ready to run: a shell command on one line, or text that
/// ends with a `;` outside any quote or comment.
fn is_complete(text: &str) -> bool {
    let first = text.split_whitespace().next().unwrap_or_default();
    let line_command = crate::session::LINE_COMMANDS
        .iter()
        .any(|c| first.eq_ignore_ascii_case(c));
    if line_command && !text.contains('\n') {
        return true;
    }
    matches!(eddy_engine::split_statements(text), Ok((statements, rest)) if !statements.is_empty() && rest.is_empty())
}

fn offer_reconnect(
    runtime: &Runtime,
    session: &mut Session,
    editor: &mut Editor<ShellHelper, FileHistory>,
) {
    let url = session.client.url().to_string();
    let answer = editor.readline(&format!("Reconnect to {url}? [Y/n] "));
    if matches!(answer, Ok(ref a) if a.trim().eq_ignore_ascii_case("n")) || answer.is_err() {
        println!("Type `server URL` to use another server.");
        return;
    }
    match runtime.block_on(session.client.info()) {
        Ok(_) => println!("Reconnected to {url}."),
        Err(error) => {
            println!("Still cannot reach {url} ({error}). Type `server URL` to use another server.")
        }
    }
}

/// The streams, tables, topics and queries the server knows, for completion.
fn refresh_names(runtime: &Runtime, session: &Session, names: &Mutex<Vec<String>>) {
    let listing = runtime.block_on(session.client.ksql(
        "SHOW STREAMS; SHOW TABLES; SHOW TOPICS; SHOW QUERIES;",
        &Default::default(),
    ));
    let Ok(entities) = listing else {
        return;
    };
    // Streams and tables first: a topic named like its stream (`clicks` under `CLICKS`)
    // would otherwise make every completion of the name ambiguous.
    let mut found: Vec<String> = Vec::new();
    for field in ["streams", "tables", "queries", "topics"] {
        for entity in &entities {
            for item in entity[field].as_array().into_iter().flatten() {
                let name = item["name"].as_str().or(item["id"].as_str());
                if let Some(name) = name {
                    if !found.iter().any(|f| f.eq_ignore_ascii_case(name)) {
                        found.push(name.to_string());
                    }
                }
            }
        }
    }
    *names.lock().unwrap_or_else(|e| e.into_inner()) = found;
}

/// `$EDDY_HISTORY_FILE`, or `.eddy_history` in the home directory.
fn history_path() -> PathBuf {
    if let Some(path) = std::env::var_os("EDDY_HISTORY_FILE") {
        return PathBuf::from(path);
    }
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
        .join(".eddy_history")
}

/// Completion for the editor.
struct ShellHelper {
    names: Arc<Mutex<Vec<String>>>,
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let start = line[..pos]
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1);
        let prefix = &line[start..pos];
        if prefix.is_empty() {
            return Ok((pos, Vec::new()));
        }
        let names = self.names.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Ok((start, candidates(prefix, &names)))
    }
}

/// Names the server knows, then keywords, that start with `prefix` (either case). Keywords
/// follow the case of what was typed.
fn candidates(prefix: &str, names: &[String]) -> Vec<Pair> {
    let upper = prefix.to_uppercase();
    let lower_typed = prefix.chars().all(|c| !c.is_uppercase());
    let keywords = KEYWORDS.iter().filter(|k| k.starts_with(&upper)).map(|k| {
        if lower_typed {
            k.to_lowercase()
        } else {
            k.to_string()
        }
    });
    let names = names
        .iter()
        .filter(|n| n.to_uppercase().starts_with(&upper))
        .cloned();
    let mut all: Vec<String> = names.chain(keywords).collect();
    all.dedup();
    all.into_iter()
        .map(|word| Pair {
            display: word.clone(),
            replacement: word,
        })
        .collect()
}

impl Hinter for ShellHelper {
    type Hint = String;
}
impl Highlighter for ShellHelper {}
impl Validator for ShellHelper {}
impl Helper for ShellHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_complete_at_their_semicolon() {
        assert!(!is_complete("CREATE STREAM s (a INT)"));
        assert!(!is_complete(
            "CREATE STREAM s (a STRING)\nWITH (kafka_topic='a;"
        ));
        assert!(is_complete(
            "CREATE STREAM s (a STRING)\nWITH (kafka_topic='a');"
        ));
        assert!(is_complete("exit"));
        assert!(is_complete("help"));
        assert!(!is_complete("SELECT 1; SELECT"));
    }

    #[test]
    fn completion_offers_names_then_keywords() {
        let names = vec!["PAGEVIEWS".to_string(), "PAGES_TOPIC".to_string()];
        let words: Vec<String> = candidates("pa", &names)
            .into_iter()
            .map(|p| p.replacement)
            .collect();
        assert_eq!(words, ["PAGEVIEWS", "PAGES_TOPIC", "partition"]);
        let words: Vec<String> = candidates("SEL", &names)
            .into_iter()
            .map(|p| p.replacement)
            .collect();
        assert_eq!(words, ["SELECT"]);
    }
}
