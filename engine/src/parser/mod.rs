//! ksqlDB's dialect on sqlparser's tokenizer and parser.
//!
//! The text is tokenized once by sqlparser (keeping line and column). Statement shells only
//! ksqlDB has (CREATE STREAM, WITH properties, KEY columns, SHOW, TERMINATE, PRINT, ...) are read
//! here from the tokens; every SELECT, expression and value list is handed to sqlparser's own
//! parser, after ksqlDB's clauses (WINDOW, EMIT, PARTITION BY) are cut out of the token stream
//! into our nodes. Unquoted identifiers are upper-cased, backquoted ones keep their case, as in
//! ksqlDB. Lambdas (`x => ..`, `(x, y) => ..`) are cut out too and parsed on their own, because
//! sqlparser spells them `->`, which ksqlDB spends on struct field access. Errors name the
//! line and column and what was expected.

pub mod ast;

use std::collections::BTreeMap;

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    visit_expressions_mut, Expr, Ident, LambdaFunction, LambdaFunctionParameter, LambdaSyntax,
    OneOrManyWithParens, VisitMut,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Span, Token, TokenWithSpan, Tokenizer, Word};

pub use ast::*;

use crate::error::{EngineError, Position, Result};
use crate::limits;
use crate::types::SqlType;

/// Parses every `;`-separated statement in `sql`, substituting `${name}` variables first.
/// The last statement may leave out its `;`.
///
/// Texts and expressions past the limits in [`crate::limits`] are refused here, so nothing
/// later meets a tree deep enough to overflow a stack.
pub fn parse(sql: &str, variables: &BTreeMap<String, String>) -> Result<Vec<ParsedStatement>> {
    limits::check_text(sql)?;
    let sql = substitute(sql, variables)?;
    limits::check_text(&sql)?;
    limits::on_parse_stack(&sql, || parse_checked(&sql))
}

fn parse_checked(sql: &str) -> Result<Vec<ParsedStatement>> {
    let (mut groups, rest) = statement_tokens(sql)?;
    if !rest.is_empty() {
        groups.push(rest);
    }
    groups
        .into_iter()
        .map(|tokens| {
            let position = position_of(&tokens[0]);
            let text = text_of(sql, &tokens);
            let statement = Cursor::new(tokens).statement()?;
            check_statement(&statement, position)?;
            Ok(ParsedStatement {
                statement,
                text,
                position,
            })
        })
        .collect()
}

/// Checks the expressions of a statement against [`limits::check_expressions`].
fn check_statement(statement: &Statement, position: Position) -> Result<()> {
    let check_select = |select: &SelectQuery| {
        limits::check_expressions(&select.query, position)?;
        limits::check_expressions(&select.partition_by, position)
    };
    match statement {
        Statement::CreateAsSelect { query, .. }
        | Statement::InsertInto { query, .. }
        | Statement::Select(query) => check_select(query),
        Statement::InsertValues { values, .. } => limits::check_expressions(values, position),
        Statement::Explain(inner) => check_statement(inner, position),
        _ => Ok(()),
    }
}

/// Cuts `sql` into the text of each statement ended by `;` (quotes and comments respected),
/// and the text after the last `;` that is not a whole statement yet. This is how a shell
/// knows whether a statement typed over several lines is complete.
pub fn split_statements(sql: &str) -> Result<(Vec<String>, String)> {
    let (groups, rest) = statement_tokens(sql)?;
    let statements = groups.iter().map(|tokens| text_of(sql, tokens)).collect();
    Ok((statements, text_of(sql, &rest)))
}

/// The statements of `sql`, when one of them DEFINEs or UNDEFINEs a variable: such a script
/// must be substituted a statement at a time. `None` for any other script (or one that does
/// not split: parsing it whole reports the error with its position).
pub fn statements_defining_variables(sql: &str) -> Option<Vec<String>> {
    let (mut statements, rest) = split_statements(sql).ok()?;
    let defines = |text: &String| {
        let word = text.split_whitespace().next().unwrap_or_default();
        word.eq_ignore_ascii_case("DEFINE") || word.eq_ignore_ascii_case("UNDEFINE")
    };
    if !statements.iter().any(defines) {
        return None;
    }
    if !rest.trim().is_empty() {
        statements.push(rest);
    }
    Some(statements)
}

/// The tokens of each `;`-ended statement (without whitespace, comments or the `;`), and
/// those after the last `;`.
type StatementTokens = (Vec<Vec<TokenWithSpan>>, Vec<TokenWithSpan>);

fn statement_tokens(sql: &str) -> Result<StatementTokens> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| {
            let position = Position {
                line: e.location.line,
                column: e.location.column,
            };
            EngineError::sql(e.message, position)
        })?;
    let mut statements = Vec::new();
    let mut current: Vec<TokenWithSpan> = Vec::new();
    for token in tokens {
        match token.token {
            Token::Whitespace(_) => {}
            Token::SemiColon => {
                if !current.is_empty() {
                    statements.push(std::mem::take(&mut current));
                }
            }
            // ksqlDB's `s->*` (all of a struct's fields): a field named `*`, expanded once the
            // struct's type is known (query::struct_star).
            Token::Mul if current.last().is_some_and(|t| t.token == Token::Arrow) => {
                current.push(TokenWithSpan {
                    token: Token::make_word("*", Some('"')),
                    span: token.span,
                });
            }
            // ksqlDB's identifiers may start with a digit (`AS 1R`), which the tokenizer reads
            // as a number then a word: an alias after AS is taken whole.
            Token::Word(ref word)
                if word.quote_style.is_none() && after_as_number(&current, &token) =>
            {
                let alias = word.value.to_uppercase();
                let number = current.pop().expect("after_as_number saw it");
                let Token::Number(digits, _) = &number.token else {
                    unreachable!("after_as_number saw a number");
                };
                current.push(TokenWithSpan {
                    token: Token::make_word(&format!("{digits}{alias}"), Some('"')),
                    span: Span::new(number.span.start, token.span.end),
                });
            }
            _ => current.push(normalize(token)),
        }
    }
    Ok((statements, current))
}

/// Whether `word` follows `AS` and a number written right against it (`AS 1R`).
fn after_as_number(before: &[TokenWithSpan], word: &TokenWithSpan) -> bool {
    let [.., as_word, number] = before else {
        return false;
    };
    let is_as =
        matches!(&as_word.token, Token::Word(w) if w.quote_style.is_none() && w.value == "AS");
    matches!(number.token, Token::Number(..)) && number.span.end == word.span.start && is_as
}

/// Parses exactly one statement.
pub fn parse_one(sql: &str) -> Result<ParsedStatement> {
    let mut all = parse(sql, &BTreeMap::new())?;
    match all.len() {
        1 => Ok(all.remove(0)),
        n => Err(EngineError::sql(
            format!("expected one statement, found {n}"),
            Position::default(),
        )),
    }
}

/// ksqlDB upper-cases unquoted identifiers; keywords match either way.
fn normalize(mut token: TokenWithSpan) -> TokenWithSpan {
    if let Token::Word(word) = &mut token.token {
        if word.quote_style.is_none() {
            word.value = word.value.to_uppercase();
        } else if word.quote_style == Some('`') {
            word.quote_style = Some('"');
        }
    }
    token
}

fn position_of(token: &TokenWithSpan) -> Position {
    Position {
        line: token.span.start.line,
        column: token.span.start.column,
    }
}

fn substitute(sql: &str, variables: &BTreeMap<String, String>) -> Result<String> {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &rest[start + 2..start + end];
        let value = variables
            .get(name)
            .or_else(|| variables.get(&name.to_uppercase()));
        match value {
            Some(value) => out.push_str(value),
            None => {
                return Err(EngineError::sql(
                    format!("variable '{name}' is not defined: DEFINE {name} = '...' first"),
                    Position::default(),
                ))
            }
        }
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The source text the tokens came from.
fn text_of(sql: &str, tokens: &[TokenWithSpan]) -> String {
    let (Some(first), Some(last)) = (tokens.first(), tokens.last()) else {
        return String::new();
    };
    let start = byte_offset(sql, first.span.start.line, first.span.start.column);
    let end = byte_offset(sql, last.span.end.line, last.span.end.column);
    sql.get(start..end.max(start))
        .unwrap_or(sql)
        .trim()
        .to_string()
}

fn byte_offset(sql: &str, line: u64, column: u64) -> usize {
    let mut offset = 0;
    for (i, text) in sql.split_inclusive('\n').enumerate() {
        if i as u64 + 1 == line {
            return offset
                + text
                    .char_indices()
                    .nth(column.saturating_sub(1) as usize)
                    .map_or(text.len(), |(b, _)| b);
        }
        offset += text.len();
    }
    sql.len()
}

/// Reads ksqlDB statement shells from a statement's tokens.
struct Cursor {
    tokens: Vec<TokenWithSpan>,
    index: usize,
}

impl Cursor {
    fn new(tokens: Vec<TokenWithSpan>) -> Cursor {
        Cursor { tokens, index: 0 }
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.index).map(|t| &t.token)
    }

    fn position(&self) -> Position {
        match self.tokens.get(self.index).or(self.tokens.last()) {
            Some(t) if self.index < self.tokens.len() => position_of(t),
            Some(t) => Position {
                line: t.span.end.line,
                column: t.span.end.column,
            },
            None => Position::default(),
        }
    }

    fn describe_next(&self) -> String {
        match self.peek() {
            Some(token) => format!("'{token}'"),
            None => "end of statement".to_string(),
        }
    }

    fn error<T>(&self, expected: &str) -> Result<T> {
        Err(EngineError::sql(
            format!("expected {expected}, found {}", self.describe_next()),
            self.position(),
        ))
    }

    /// The next token as an unquoted word (upper case), if it is one.
    fn word(&self) -> Option<&str> {
        match self.peek() {
            Some(Token::Word(w)) if w.quote_style.is_none() => Some(w.value.as_str()),
            _ => None,
        }
    }

    fn is(&self, word: &str) -> bool {
        self.word() == Some(word)
    }

    fn eat(&mut self, word: &str) -> bool {
        let matched = self.is(word);
        if matched {
            self.index += 1;
        }
        matched
    }

    fn expect(&mut self, word: &str) -> Result<()> {
        if self.eat(word) {
            Ok(())
        } else {
            self.error(word)
        }
    }

    fn eat_token(&mut self, token: &Token) -> bool {
        let matched = self.peek() == Some(token);
        if matched {
            self.index += 1;
        }
        matched
    }

    fn expect_token(&mut self, token: &Token) -> Result<()> {
        if self.eat_token(token) {
            Ok(())
        } else {
            self.error(&format!("'{token}'"))
        }
    }

    fn identifier(&mut self) -> Result<String> {
        match self.peek() {
            Some(Token::Word(w)) => {
                let name = w.value.clone();
                self.index += 1;
                Ok(name)
            }
            _ => self.error("a name"),
        }
    }

    fn string(&mut self) -> Result<String> {
        match self.peek() {
            Some(Token::SingleQuotedString(s)) => {
                let s = s.clone();
                self.index += 1;
                Ok(s)
            }
            _ => self.error("a quoted string"),
        }
    }

    fn number(&mut self) -> Result<i64> {
        match self.peek() {
            Some(Token::Number(n, _)) => {
                let parsed = n.parse::<i64>();
                match parsed {
                    Ok(value) => {
                        self.index += 1;
                        Ok(value)
                    }
                    Err(_) => self.error("a whole number"),
                }
            }
            _ => self.error("a number"),
        }
    }

    fn at_end(&self) -> bool {
        self.index >= self.tokens.len()
    }

    fn expect_end(&self) -> Result<()> {
        if self.at_end() {
            Ok(())
        } else {
            self.error("end of statement")
        }
    }

    fn rest(&self) -> Vec<TokenWithSpan> {
        self.tokens[self.index..].to_vec()
    }

    fn statement(&mut self) -> Result<Statement> {
        let statement = match self.word() {
            Some("CREATE") => self.create()?,
            Some("INSERT") => self.insert()?,
            Some("SELECT") => Statement::Select(select(self.rest())?),
            Some("DROP") => self.drop()?,
            Some("SHOW") | Some("LIST") => self.show()?,
            Some("DESCRIBE") => self.describe()?,
            Some("TERMINATE") => {
                self.index += 1;
                let query_id = if self.eat("ALL") {
                    None
                } else {
                    Some(self.identifier()?)
                };
                Statement::Terminate { query_id }
            }
            Some("SET") => {
                self.index += 1;
                let name = self.string()?;
                self.expect_token(&Token::Eq)?;
                Statement::Set {
                    name,
                    value: self.string()?,
                }
            }
            Some("UNSET") => {
                self.index += 1;
                Statement::Unset {
                    name: self.string()?,
                }
            }
            Some("DEFINE") => {
                self.index += 1;
                let name = self.identifier()?;
                self.expect_token(&Token::Eq)?;
                Statement::Define {
                    name,
                    value: self.string()?,
                }
            }
            Some("UNDEFINE") => {
                self.index += 1;
                Statement::Undefine {
                    name: self.identifier()?,
                }
            }
            Some("EXPLAIN") => {
                self.index += 1;
                let inner = Cursor::new(self.rest()).statement()?;
                self.index = self.tokens.len();
                Statement::Explain(Box::new(inner))
            }
            Some("PRINT") => self.print()?,
            _ => {
                return self
                    .error("a statement (CREATE, INSERT, SELECT, DROP, SHOW, DESCRIBE, ...)")
            }
        };
        if !matches!(statement, Statement::Select(_) | Statement::Explain(_)) {
            self.expect_end()?;
        }
        Ok(statement)
    }

    fn source_kind(&mut self) -> Result<SourceKind> {
        if self.eat("STREAM") {
            Ok(SourceKind::Stream)
        } else if self.eat("TABLE") {
            Ok(SourceKind::Table)
        } else {
            self.error("STREAM or TABLE")
        }
    }

    fn create(&mut self) -> Result<Statement> {
        self.expect("CREATE")?;
        let or_replace = self.eat("OR");
        if or_replace {
            self.expect("REPLACE")?;
        }
        let source = self.eat("SOURCE");
        let kind = self.source_kind()?;
        let if_not_exists = self.eat("IF");
        if if_not_exists {
            self.expect("NOT")?;
            self.expect("EXISTS")?;
        }
        let name = self.identifier()?;
        let columns = if self.peek() == Some(&Token::LParen) {
            self.columns(kind)?
        } else {
            Vec::new()
        };
        let properties = if self.eat("WITH") {
            self.properties()?
        } else {
            Properties::new()
        };
        if self.eat("AS") {
            if !columns.is_empty() {
                return Err(EngineError::sql(
                    "a CREATE ... AS SELECT takes its columns from the query: remove the column list",
                    self.position(),
                ));
            }
            let query = select(self.rest())?;
            self.index = self.tokens.len();
            return Ok(Statement::CreateAsSelect {
                kind,
                name,
                or_replace,
                if_not_exists,
                properties,
                query,
            });
        }
        Ok(Statement::CreateSource {
            kind,
            name,
            or_replace,
            if_not_exists,
            source,
            columns,
            properties,
        })
    }

    fn columns(&mut self, kind: SourceKind) -> Result<Vec<ColumnDef>> {
        self.expect_token(&Token::LParen)?;
        let mut columns = Vec::new();
        loop {
            let name = self.identifier()?;
            let data_type = self.data_type()?;
            let key = if self.eat("PRIMARY") {
                self.expect("KEY")?;
                if kind == SourceKind::Stream {
                    return Err(EngineError::sql(
                        format!("column '{name}' is a PRIMARY KEY, but streams have KEY columns: use KEY"),
                        self.position(),
                    ));
                }
                true
            } else if self.is("KEY") {
                if kind == SourceKind::Table {
                    return Err(EngineError::sql(
                        format!("column '{name}' is a KEY, but tables have PRIMARY KEY columns"),
                        self.position(),
                    ));
                }
                self.index += 1;
                true
            } else {
                false
            };
            let header = self.header_source(&data_type)?;
            columns.push(ColumnDef {
                name,
                data_type,
                key,
                header,
            });
            if !self.eat_token(&Token::Comma) {
                break;
            }
        }
        self.expect_token(&Token::RParen)?;
        Ok(columns)
    }

    /// `HEADERS` or `HEADER('key')` after a column's type, which must fit it.
    fn header_source(&mut self, data_type: &SqlType) -> Result<Option<Header>> {
        let position = self.position();
        let (header, expected) = if self.eat("HEADERS") {
            (Header::All, Header::all_type())
        } else if self.is("HEADER")
            && matches!(self.tokens.get(self.index + 1), Some(t) if t.token == Token::LParen)
        {
            self.index += 2;
            let key = self.string()?;
            self.expect_token(&Token::RParen)?;
            (Header::Key(key), SqlType::Bytes)
        } else {
            return Ok(None);
        };
        if *data_type != expected {
            let what = match &header {
                Header::All => "HEADERS".to_string(),
                Header::Key(key) => format!("HEADER('{key}')"),
            };
            return Err(EngineError::sql(
                format!("Invalid type for {what} column: expected {expected}, got {data_type}"),
                position,
            ));
        }
        Ok(Some(header))
    }

    fn data_type(&mut self) -> Result<SqlType> {
        let position = self.position();
        let Some(word) = self.word().map(str::to_string) else {
            return self.error("a type");
        };
        self.index += 1;
        Ok(match word.as_str() {
            "BOOLEAN" => SqlType::Boolean,
            "INT" | "INTEGER" => SqlType::Int,
            "BIGINT" => SqlType::Bigint,
            "DOUBLE" => SqlType::Double,
            "STRING" | "VARCHAR" => SqlType::String,
            "BYTES" => SqlType::Bytes,
            "TIMESTAMP" => SqlType::Timestamp,
            "DATE" => SqlType::Date,
            "TIME" => SqlType::Time,
            "DECIMAL" => {
                self.expect_token(&Token::LParen)?;
                let precision = self.number()?;
                self.expect_token(&Token::Comma)?;
                let scale = self.number()?;
                self.expect_token(&Token::RParen)?;
                if !(1..=38).contains(&precision) || scale < 0 || scale > precision {
                    return Err(EngineError::sql(
                        format!("DECIMAL({precision}, {scale}) is invalid: precision 1 to 38, scale 0 to precision"),
                        position,
                    ));
                }
                SqlType::Decimal {
                    precision: precision as u8,
                    scale: scale as i8,
                }
            }
            "ARRAY" => {
                self.expect_token(&Token::Lt)?;
                let item = self.data_type()?;
                self.close_angle()?;
                SqlType::Array(Box::new(item))
            }
            "MAP" => {
                self.expect_token(&Token::Lt)?;
                let key = self.data_type()?;
                self.expect_token(&Token::Comma)?;
                let value = self.data_type()?;
                self.close_angle()?;
                SqlType::Map(Box::new(key), Box::new(value))
            }
            "STRUCT" => {
                self.expect_token(&Token::Lt)?;
                let mut fields = Vec::new();
                if !self.close_angle_if_next() {
                    loop {
                        let name = self.identifier()?;
                        fields.push((name, self.data_type()?));
                        if !self.eat_token(&Token::Comma) {
                            break;
                        }
                    }
                    self.close_angle()?;
                }
                SqlType::Struct(fields)
            }
            "NULL" => {
                return Err(EngineError::sql(
                    "Syntax Error: NULL is a value, not a type (use a type such as STRING; any \
                     column can hold NULL)",
                    position,
                ));
            }
            other => {
                return Err(EngineError::sql(
                    format!("unknown type '{other}'"),
                    position,
                ));
            }
        })
    }

    /// Consumes one `>`, splitting a `>>` token the tokenizer made of two closing brackets.
    fn close_angle(&mut self) -> Result<()> {
        if self.close_angle_if_next() {
            Ok(())
        } else {
            self.error("'>'")
        }
    }

    fn close_angle_if_next(&mut self) -> bool {
        match self.peek() {
            Some(Token::Gt) => {
                self.index += 1;
                true
            }
            Some(Token::ShiftRight) => {
                self.tokens[self.index].token = Token::Gt;
                true
            }
            _ => false,
        }
    }

    fn properties(&mut self) -> Result<Properties> {
        self.expect_token(&Token::LParen)?;
        let mut properties = Properties::new();
        loop {
            let name = self.identifier()?.to_uppercase();
            self.expect_token(&Token::Eq)?;
            let value = match self.peek().cloned() {
                Some(Token::SingleQuotedString(s)) => s,
                Some(Token::Number(n, _)) => n,
                Some(Token::Word(w)) => w.value,
                _ => return self.error("a property value"),
            };
            self.index += 1;
            properties.insert(name, value);
            if !self.eat_token(&Token::Comma) {
                break;
            }
        }
        self.expect_token(&Token::RParen)?;
        Ok(properties)
    }

    fn insert(&mut self) -> Result<Statement> {
        self.expect("INSERT")?;
        self.expect("INTO")?;
        let target = self.identifier()?;
        let mut columns = Vec::new();
        if self.eat_token(&Token::LParen) {
            loop {
                columns.push(self.identifier()?);
                if !self.eat_token(&Token::Comma) {
                    break;
                }
            }
            self.expect_token(&Token::RParen)?;
        }
        if self.eat("VALUES") {
            let mut parser = sql_parser(self.rest());
            parser
                .expect_token(&Token::LParen)
                .map_err(|e| sql_error(e, &self.tokens))?;
            let values = parser
                .parse_comma_separated(Parser::parse_expr)
                .map_err(|e| sql_error(e, &self.tokens))?;
            parser
                .expect_token(&Token::RParen)
                .map_err(|e| sql_error(e, &self.tokens))?;
            self.index += parser.index();
            return Ok(Statement::InsertValues {
                target,
                columns,
                values,
            });
        }
        if !columns.is_empty() {
            return self.error("VALUES after a column list");
        }
        if !self.is("SELECT") {
            return self.error("SELECT or VALUES");
        }
        let query = select(self.rest())?;
        self.index = self.tokens.len();
        Ok(Statement::InsertInto { target, query })
    }

    fn drop(&mut self) -> Result<Statement> {
        self.expect("DROP")?;
        let kind = self.source_kind()?;
        let if_exists = self.eat("IF");
        if if_exists {
            self.expect("EXISTS")?;
        }
        let name = self.identifier()?;
        let delete_topic = self.eat("DELETE");
        if delete_topic {
            self.expect("TOPIC")?;
        }
        Ok(Statement::Drop {
            kind,
            name,
            if_exists,
            delete_topic,
        })
    }

    fn show(&mut self) -> Result<Statement> {
        self.index += 1;
        if self.eat("ALL") {
            self.expect("TOPICS")?;
            let extended = self.eat("EXTENDED");
            return Ok(Statement::Show {
                kind: ShowKind::AllTopics,
                extended,
            });
        }
        let kind = match self.word() {
            Some("STREAMS") => ShowKind::Streams,
            Some("TABLES") => ShowKind::Tables,
            Some("TOPICS") => ShowKind::Topics,
            Some("QUERIES") => ShowKind::Queries,
            Some("PROPERTIES") => ShowKind::Properties,
            Some("FUNCTIONS") => ShowKind::Functions,
            _ => {
                return self
                    .error("STREAMS, TABLES, [ALL] TOPICS, QUERIES, PROPERTIES or FUNCTIONS")
            }
        };
        self.index += 1;
        let extended = self.eat("EXTENDED");
        Ok(Statement::Show { kind, extended })
    }

    fn describe(&mut self) -> Result<Statement> {
        self.expect("DESCRIBE")?;
        if self.eat("FUNCTION") {
            return Ok(Statement::DescribeFunction {
                name: self.identifier()?,
            });
        }
        let listing = if self.eat("STREAMS") {
            Some(ShowKind::Streams)
        } else if self.eat("TABLES") {
            Some(ShowKind::Tables)
        } else {
            None
        };
        if let Some(kind) = listing {
            return Ok(Statement::Show {
                kind,
                extended: self.eat("EXTENDED"),
            });
        }
        // ksqlDB's grammar puts EXTENDED after the name; its docs before: take both.
        let before = self.eat("EXTENDED");
        let name = self.identifier()?;
        let extended = self.eat("EXTENDED") || before;
        Ok(Statement::Describe { name, extended })
    }

    fn print(&mut self) -> Result<Statement> {
        self.expect("PRINT")?;
        let topic = match self.peek().cloned() {
            Some(Token::SingleQuotedString(s)) => {
                self.index += 1;
                s
            }
            _ => self.identifier()?,
        };
        let mut from_beginning = false;
        let mut interval = 1;
        let mut limit = None;
        loop {
            if self.eat("FROM") {
                self.expect("BEGINNING")?;
                from_beginning = true;
            } else if self.eat("LIMIT") {
                limit = Some(self.number()?.max(0) as u64);
            } else if self.eat("INTERVAL") || self.eat("SAMPLE") {
                interval = self.number()?.max(1) as u64;
            } else {
                break;
            }
        }
        Ok(Statement::Print {
            topic,
            from_beginning,
            interval,
            limit,
        })
    }
}

fn sql_parser(tokens: Vec<TokenWithSpan>) -> Parser<'static> {
    static DIALECT: GenericDialect = GenericDialect {};
    Parser::new(&DIALECT).with_tokens_with_locations(tokens)
}

/// sqlparser's errors carry "at Line: L, Column: C" in the text; lift it into a position.
fn sql_error(error: ParserError, tokens: &[TokenWithSpan]) -> EngineError {
    let text = match &error {
        ParserError::ParserError(s) | ParserError::TokenizerError(s) => s.clone(),
        other => other.to_string(),
    };
    let position = text
        .rsplit_once(" at Line: ")
        .and_then(|(_, at)| {
            let (line, column) = at.split_once(", Column: ")?;
            Some(Position {
                line: line.trim().parse().ok()?,
                column: column.trim().parse().ok()?,
            })
        })
        // sqlparser gives no position at the end of input: point just after the last token.
        .unwrap_or_else(|| {
            tokens
                .last()
                .map(|t| Position {
                    line: t.span.end.line,
                    column: t.span.end.column,
                })
                .unwrap_or_default()
        });
    let message = text.split(" at Line: ").next().unwrap_or(&text).to_string();
    EngineError::sql(message.replace("Expected: ", "expected "), position)
}

/// Parses a SELECT with ksqlDB's clauses: WINDOW, PARTITION BY, EMIT and a join's WITHIN are
/// cut from the token stream first, then sqlparser parses the rest.
fn select(tokens: Vec<TokenWithSpan>) -> Result<SelectQuery> {
    let mut lambdas = Vec::new();
    let tokens = cut_lambdas(tokens, &mut lambdas, 0)?;
    let mut kept = Vec::with_capacity(tokens.len());
    let mut window = None;
    let mut emit = None;
    let mut partition_by = Vec::new();
    let mut within = Vec::new();
    let mut depth = 0i32;
    let mut i = 0;
    let word_at = |i: usize| match tokens.get(i).map(|t| &t.token) {
        Some(Token::Word(w)) if w.quote_style.is_none() => Some(w.value.as_str()),
        _ => None,
    };
    while i < tokens.len() {
        match &tokens[i].token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            _ => {}
        }
        if depth == 0 {
            if word_at(i) == Some("WINDOW")
                && matches!(word_at(i + 1), Some("TUMBLING" | "HOPPING" | "SESSION"))
            {
                let end = matching_paren(&tokens, i + 2)?;
                let mut cursor = Cursor::new(tokens[i + 1..=end].to_vec());
                window = Some(cursor.window()?);
                i = end + 1;
                continue;
            }
            if word_at(i) == Some("JOIN") {
                within.push(None);
            }
            if word_at(i) == Some("WITHIN") {
                let mut cursor = Cursor {
                    tokens: tokens.clone(),
                    index: i + 1,
                };
                let clause = cursor.within()?;
                if let Some(last) = within.last_mut() {
                    *last = Some(clause);
                }
                i = cursor.index;
                continue;
            }
            if word_at(i) == Some("EMIT") {
                emit = Some(match word_at(i + 1) {
                    Some("CHANGES") => Emit::Changes,
                    Some("FINAL") => Emit::Final,
                    _ => {
                        return Cursor {
                            tokens: tokens.clone(),
                            index: i + 1,
                        }
                        .error("CHANGES or FINAL")
                    }
                });
                i += 2;
                continue;
            }
            if word_at(i) == Some("PARTITION") && word_at(i + 1) == Some("BY") {
                let stop = (i + 2..tokens.len())
                    .find(|&j| matches!(word_at(j), Some("EMIT" | "LIMIT" | "WINDOW")))
                    .unwrap_or(tokens.len());
                let mut parser = sql_parser(tokens[i + 2..stop].to_vec());
                partition_by = parser
                    .parse_comma_separated(Parser::parse_expr)
                    .map_err(|e| sql_error(e, &tokens))?;
                i = stop;
                continue;
            }
        }
        kept.push(tokens[i].clone());
        i += 1;
    }
    let mut parser = sql_parser(kept.clone());
    let mut query = parser.parse_query().map_err(|e| sql_error(e, &kept))?;
    let next = parser.peek_token();
    if next.token != Token::EOF {
        return Err(EngineError::sql(
            format!("unexpected '{}'", next.token),
            position_of(&next),
        ));
    }
    put_back_lambdas(&mut query, &lambdas);
    put_back_lambdas(&mut partition_by, &lambdas);
    Ok(SelectQuery {
        query,
        window,
        emit,
        partition_by,
        within,
    })
}

fn matching_paren(tokens: &[TokenWithSpan], open: usize) -> Result<usize> {
    if tokens.get(open).map(|t| &t.token) != Some(&Token::LParen) {
        return Cursor {
            tokens: tokens.to_vec(),
            index: open,
        }
        .error("'(' after the window type");
    }
    let mut depth = 0;
    for (j, token) in tokens.iter().enumerate().skip(open) {
        match token.token {
            Token::LParen => depth += 1,
            Token::RParen => {
                depth -= 1;
                if depth == 0 {
                    return Ok(j);
                }
            }
            _ => {}
        }
    }
    Cursor {
        tokens: tokens.to_vec(),
        index: tokens.len(),
    }
    .error("')' closing the window")
}

impl Cursor {
    /// TUMBLING (SIZE n unit, ...) | HOPPING (SIZE n unit, ADVANCE BY n unit, ...) | SESSION (n unit, ...)
    fn window(&mut self) -> Result<WindowSpec> {
        let kind = self.identifier()?;
        self.expect_token(&Token::LParen)?;
        let mut size = None;
        let mut advance = None;
        let mut gap = None;
        let mut grace = None;
        let mut retention = None;
        loop {
            if self.eat("SIZE") {
                size = Some(self.duration()?);
            } else if self.eat("ADVANCE") {
                self.expect("BY")?;
                advance = Some(self.duration()?);
            } else if self.eat("GRACE") {
                self.expect("PERIOD")?;
                grace = Some(self.duration()?);
            } else if self.eat("RETENTION") {
                retention = Some(self.duration()?);
            } else if kind == "SESSION" && gap.is_none() {
                gap = Some(self.duration()?);
            } else {
                return self.error("SIZE, ADVANCE BY, RETENTION or GRACE PERIOD");
            }
            if !self.eat_token(&Token::Comma) {
                break;
            }
        }
        self.expect_token(&Token::RParen)?;
        let missing =
            |what: &str| EngineError::sql(format!("{kind} window needs {what}"), self.position());
        let spec = match kind.as_str() {
            "TUMBLING" => WindowSpec::Tumbling {
                size_ms: size.ok_or_else(|| missing("SIZE"))?,
                grace_ms: grace,
                retention_ms: retention,
            },
            "HOPPING" => WindowSpec::Hopping {
                size_ms: size.ok_or_else(|| missing("SIZE"))?,
                advance_ms: advance.ok_or_else(|| missing("ADVANCE BY"))?,
                grace_ms: grace,
                retention_ms: retention,
            },
            _ => WindowSpec::Session {
                gap_ms: gap.ok_or_else(|| missing("a gap"))?,
                grace_ms: grace,
                retention_ms: retention,
            },
        };
        validate_window(&spec).map_err(|message| EngineError::sql(message, self.position()))?;
        Ok(spec)
    }

    /// After WITHIN: `n unit` or `(n unit, n unit)`, then `GRACE PERIOD n unit` or nothing.
    fn within(&mut self) -> Result<JoinWithin> {
        let (before_ms, after_ms) = if self.eat_token(&Token::LParen) {
            let before = self.duration()?;
            self.expect_token(&Token::Comma)?;
            let after = self.duration()?;
            self.expect_token(&Token::RParen)?;
            (before, after)
        } else {
            let both = self.duration()?;
            (both, both)
        };
        let grace_ms = if self.eat("GRACE") {
            self.expect("PERIOD")?;
            Some(self.duration()?)
        } else {
            None
        };
        Ok(JoinWithin {
            before_ms,
            after_ms,
            grace_ms,
        })
    }

    /// `n unit`, in milliseconds.
    fn duration(&mut self) -> Result<i64> {
        let n = self.number()?;
        let Some(unit_ms) = self.word().and_then(time_unit_ms) else {
            return self.error("a time unit (MILLISECONDS, SECONDS, MINUTES, HOURS, DAYS)");
        };
        let position = self.position();
        self.index += 1;
        n.checked_mul(unit_ms)
            .filter(|ms| *ms <= limits::DURATION_MS_MAX)
            .ok_or_else(|| {
                EngineError::sql(
                    format!(
                        "duration of {n} x {unit_ms} ms is longer than the limit of {} ms \
                         (100 years)",
                        limits::DURATION_MS_MAX
                    ),
                    position,
                )
            })
    }
}

/// Refuses windows Kafka Streams refuses (with its words), and hopping windows that would put
/// one row in more than [`limits::WINDOWS_PER_ROW_MAX`] windows.
fn validate_window(spec: &WindowSpec) -> std::result::Result<(), String> {
    match *spec {
        WindowSpec::Tumbling { size_ms, .. } if size_ms <= 0 => {
            Err("Window size (sizeMs) must be larger than zero.".into())
        }
        WindowSpec::Hopping { size_ms, .. } if size_ms <= 0 => {
            Err("Window size (sizeMs) must be larger than zero.".into())
        }
        WindowSpec::Hopping {
            size_ms,
            advance_ms,
            ..
        } if advance_ms <= 0 || advance_ms > size_ms => Err(format!(
            "Window advancement interval should be more than zero and less than window \
             duration which is {size_ms} ms, but given advancement interval is: {advance_ms} ms"
        )),
        WindowSpec::Hopping {
            size_ms,
            advance_ms,
            ..
        } if size_ms / advance_ms > limits::WINDOWS_PER_ROW_MAX => Err(format!(
            "a HOPPING window of SIZE {size_ms} ms and ADVANCE BY {advance_ms} ms puts each \
             row in {} windows; the limit is {} (sql.window.windows.per.row.max): advance by \
             at least {} ms",
            size_ms / advance_ms,
            limits::WINDOWS_PER_ROW_MAX,
            (size_ms + limits::WINDOWS_PER_ROW_MAX - 1) / limits::WINDOWS_PER_ROW_MAX
        )),
        WindowSpec::Session { gap_ms, .. } if gap_ms <= 0 => {
            Err("Gap time cannot be zero or negative.".into())
        }
        _ => Ok(()),
    }
}

/// Milliseconds in one time unit (upper case, singular or plural).
fn time_unit_ms(unit: &str) -> Option<i64> {
    Some(match unit {
        "MILLISECOND" | "MILLISECONDS" => 1,
        "SECOND" | "SECONDS" => 1_000,
        "MINUTE" | "MINUTES" => 60_000,
        "HOUR" | "HOURS" => 3_600_000,
        "DAY" | "DAYS" => 86_400_000,
        _ => return None,
    })
}

/// A duration written as text, like WINDOW_SIZE's `'30 SECONDS'`, in milliseconds.
pub fn duration_text_ms(text: &str) -> Result<i64> {
    let mut parts = text.split_whitespace();
    let parsed = match (parts.next(), parts.next(), parts.next()) {
        (Some(n), Some(unit), None) => n
            .parse::<i64>()
            .ok()
            .zip(time_unit_ms(&unit.to_uppercase()))
            .and_then(|(n, unit)| n.checked_mul(unit))
            .filter(|ms| (0..=limits::DURATION_MS_MAX).contains(ms)),
        _ => None,
    };
    parsed.ok_or_else(|| {
        let unit = text
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_uppercase();
        let reason = if time_unit_ms(&unit).is_none() && !unit.is_empty() {
            format!("Unknown time unit: '{unit}'")
        } else {
            "use a number and a unit, like '30 SECONDS'".to_string()
        };
        EngineError::Plan(format!("Invalid duration: '{text}'. {reason}"))
    })
}

/// Cuts every lambda written as a function argument (`f(a, x => ..)`, `f((s, x) => ..)`) out
/// of `tokens`, parsing each on its own into `lambdas` (nested ones first), and leaves a
/// placeholder name in its place for sqlparser; [`put_back_lambdas`] swaps them back in after.
/// A body runs to the comma or bracket that ends its argument.
fn cut_lambdas(
    tokens: Vec<TokenWithSpan>,
    lambdas: &mut Vec<Expr>,
    depth: usize,
) -> Result<Vec<TokenWithSpan>> {
    let mut out: Vec<TokenWithSpan> = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        let argument = matches!(
            out.last().map(|t| &t.token),
            Some(Token::LParen | Token::Comma)
        );
        let Some((params, arrow)) = argument.then(|| lambda_head(&tokens, i)).flatten() else {
            out.push(tokens[i].clone());
            i += 1;
            continue;
        };
        if depth >= limits::LAMBDA_DEPTH_MAX {
            return Err(EngineError::sql(
                format!(
                    "lambdas are nested more than {} deep (limit \
                     sql.expression.lambda.depth.max)",
                    limits::LAMBDA_DEPTH_MAX
                ),
                position_of(&tokens[i]),
            ));
        }
        let end = argument_end(&tokens, arrow + 1);
        if end == arrow + 1 {
            return Cursor {
                tokens,
                index: arrow + 1,
            }
            .error("the lambda's body after '=>'");
        }
        let body_tokens = cut_lambdas(tokens[arrow + 1..end].to_vec(), lambdas, depth + 1)?;
        let mut parser = sql_parser(body_tokens.clone());
        let mut body = parser
            .parse_expr()
            .map_err(|e| sql_error(e, &body_tokens))?;
        let next = parser.peek_token();
        if next.token != Token::EOF {
            return Err(EngineError::sql(
                format!("unexpected '{}' in the lambda's body", next.token),
                position_of(&next),
            ));
        }
        put_back_lambdas(&mut body, lambdas);
        out.push(TokenWithSpan {
            token: Token::Word(Word {
                value: format!("{LAMBDA_PLACEHOLDER}{}", lambdas.len()),
                quote_style: Some('"'),
                keyword: Keyword::NoKeyword,
            }),
            span: Span::new(tokens[i].span.start, tokens[end - 1].span.end),
        });
        lambdas.push(Expr::Lambda(LambdaFunction {
            params,
            body: Box::new(body),
            syntax: LambdaSyntax::Arrow,
        }));
        i = end;
    }
    Ok(out)
}

/// The name that stands in for a cut lambda while sqlparser parses the rest: no statement
/// can spell it (a quoted name holding a NUL character).
const LAMBDA_PLACEHOLDER: &str = "\u{0}lambda ";

/// The parameters of a lambda starting at `start` (`x =>` or `(x, y) =>`), and where its
/// `=>` is.
fn lambda_head(
    tokens: &[TokenWithSpan],
    start: usize,
) -> Option<(OneOrManyWithParens<LambdaFunctionParameter>, usize)> {
    let token = |i: usize| tokens.get(i).map(|t| &t.token);
    let param = |i: usize| match token(i) {
        Some(Token::Word(word)) => Some(LambdaFunctionParameter {
            // Quoted, as DataFusion lower-cases an unquoted parameter but not the body's
            // (already upper-cased) names.
            name: Ident::with_quote('"', word.value.clone()),
            data_type: None,
        }),
        _ => None,
    };
    if let (Some(param), Some(Token::RArrow)) = (param(start), token(start + 1)) {
        return Some((OneOrManyWithParens::One(param), start + 1));
    }
    if token(start) != Some(&Token::LParen) {
        return None;
    }
    let mut params = vec![param(start + 1)?];
    let mut i = start + 2;
    while token(i) == Some(&Token::Comma) {
        params.push(param(i + 1)?);
        i += 2;
    }
    match (token(i), token(i + 1)) {
        (Some(Token::RParen), Some(Token::RArrow)) => {
            Some((OneOrManyWithParens::Many(params), i + 1))
        }
        _ => None,
    }
}

/// Where the function argument starting at `start` ends: the first comma or closing bracket
/// outside brackets opened in it (or the end of the tokens).
fn argument_end(tokens: &[TokenWithSpan], start: usize) -> usize {
    let mut depth = 0usize;
    for (i, token) in tokens.iter().enumerate().skip(start) {
        match token.token {
            Token::LParen | Token::LBracket | Token::LBrace => depth += 1,
            Token::RParen | Token::RBracket | Token::RBrace if depth == 0 => return i,
            Token::RParen | Token::RBracket | Token::RBrace => depth -= 1,
            Token::Comma if depth == 0 => return i,
            _ => {}
        }
    }
    tokens.len()
}

/// Swaps each placeholder [`cut_lambdas`] left for the lambda it stands for.
fn put_back_lambdas<V: VisitMut>(node: &mut V, lambdas: &[Expr]) {
    if lambdas.is_empty() {
        return;
    }
    let _ = visit_expressions_mut(node, |expr| {
        let index = match expr {
            Expr::Identifier(ident) => ident
                .value
                .strip_prefix(LAMBDA_PLACEHOLDER)
                .and_then(|n| n.parse::<usize>().ok()),
            _ => None,
        };
        if let Some(lambda) = index.and_then(|i| lambdas.get(i)) {
            *expr = lambda.clone();
        }
        ControlFlow::<()>::Continue(())
    });
}

/// A bare expression (for INSERT VALUES and tests).
pub fn parse_expression(sql: &str) -> Result<Expr> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| {
            EngineError::sql(
                e.message,
                Position {
                    line: e.location.line,
                    column: e.location.column,
                },
            )
        })?;
    let tokens: Vec<TokenWithSpan> = tokens
        .into_iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .map(normalize)
        .collect();
    let mut lambdas = Vec::new();
    let tokens = cut_lambdas(tokens, &mut lambdas, 0)?;
    let mut expr = sql_parser(tokens.clone())
        .parse_expr()
        .map_err(|e| sql_error(e, &tokens))?;
    put_back_lambdas(&mut expr, &lambdas);
    limits::check_expressions(&expr, Position { line: 1, column: 1 })?;
    Ok(expr)
}

#[cfg(test)]
mod tests;
