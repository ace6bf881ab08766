//! How results look on the screen, as the ksql CLI draws them: listings (SHOW, DESCRIBE,
//! statuses) as dash-ruled tables, query rows in `|`-bordered tables that grow row by row, or
//! everything as JSON with `OUTPUT FORMAT JSON`.

use serde_json::Value;

/// `OUTPUT FORMAT TABULAR | JSON`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OutputFormat {
    Tabular,
    Json,
}

impl OutputFormat {
    pub(crate) fn parse(text: &str) -> Option<OutputFormat> {
        match text.to_ascii_uppercase().as_str() {
            "TABULAR" => Some(OutputFormat::Tabular),
            "JSON" => Some(OutputFormat::Json),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            OutputFormat::Tabular => "TABULAR",
            OutputFormat::Json => "JSON",
        }
    }
}

/// One `/ksql` entity as text.
pub(crate) fn entity(entity: &Value, format: OutputFormat) -> String {
    if format == OutputFormat::Json {
        return pretty(entity);
    }
    let rows = |field: &str| entity[field].as_array().cloned().unwrap_or_default();
    match entity["@type"].as_str().unwrap_or_default() {
        "currentStatus" => listing(
            &["Message"],
            &[vec![text(&entity["commandStatus"]["message"])]],
        ),
        kind @ ("streams" | "tables") => {
            let title = if kind == "streams" {
                "Stream Name"
            } else {
                "Table Name"
            };
            let rows: Vec<Vec<String>> = rows(kind)
                .iter()
                .map(|s| {
                    vec![
                        text(&s["name"]),
                        text(&s["topic"]),
                        text(&s["keyFormat"]),
                        text(&s["valueFormat"]),
                        text(&s["isWindowed"]),
                    ]
                })
                .collect();
            listing(
                &[
                    title,
                    "Kafka Topic",
                    "Key Format",
                    "Value Format",
                    "Windowed",
                ],
                &rows,
            )
        }
        "kafka_topics" => {
            let rows: Vec<Vec<String>> = rows("topics")
                .iter()
                .map(|t| {
                    let replicas = t["replicaInfo"].as_array().cloned().unwrap_or_default();
                    let replicas: Vec<String> = replicas.iter().map(text).collect();
                    vec![
                        text(&t["name"]),
                        replicas.len().to_string(),
                        replicas.join(" "),
                    ]
                })
                .collect();
            listing(&["Kafka Topic", "Partitions", "Partition Replicas"], &rows)
        }
        "queries" => {
            let rows: Vec<Vec<String>> = rows("queries")
                .iter()
                .map(|q| {
                    vec![
                        text(&q["id"]),
                        text(&q["queryType"]),
                        text(&q["state"]),
                        list(&q["sinks"]),
                        list(&q["sinkKafkaTopics"]),
                        text(&q["queryString"]),
                    ]
                })
                .collect();
            listing(
                &[
                    "Query ID",
                    "Query Type",
                    "Status",
                    "Sink Name",
                    "Sink Kafka Topic",
                    "Query String",
                ],
                &rows,
            )
        }
        "properties" => {
            let rows: Vec<Vec<String>> = rows("properties")
                .iter()
                .map(|p| vec![text(&p["name"]), text(&p["scope"]), text(&p["value"])])
                .collect();
            listing(&["Property", "Scope", "Value"], &rows)
        }
        "function_names" => {
            let rows: Vec<Vec<String>> = rows("functions")
                .iter()
                .map(|f| vec![text(&f["name"]), text(&f["category"])])
                .collect();
            listing(&["Function Name", "Category"], &rows)
        }
        "describe_function" => function_description(entity),
        "sourceDescription" => description(&entity["sourceDescription"]),
        "queryDescription" => format!(
            "{}\n",
            text(&entity["queryDescription"]["executionPlan"]).trim_end()
        ),
        _ => pretty(entity),
    }
}

/// DESCRIBE FUNCTION as the ksql CLI prints it: the overview, then one block per variation.
fn function_description(function: &Value) -> String {
    let mut out = String::from("\n");
    for (label, field) in [
        ("Name", "name"),
        ("Author", "author"),
        ("Version", "version"),
        ("Overview", "description"),
        ("Type", "type"),
        ("Jar", "path"),
    ] {
        out.push_str(&format!("{label:<12}: {}\n", text(&function[field])));
    }
    out.push_str("Variations  : \n");
    let name = text(&function["name"]);
    for variation in function["functions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let arguments: Vec<String> = variation["argumentTypes"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(text)
            .collect();
        out.push_str(&format!(
            "\n\tVariation   : {name}({})\n",
            arguments.join(", ")
        ));
        let returns = text(&variation["returnType"]);
        if !returns.is_empty() {
            out.push_str(&format!("\tReturns     : {returns}\n"));
        }
    }
    out
}

fn description(source: &Value) -> String {
    let fields: Vec<Vec<String>> = source["fields"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|f| {
            let mut data_type = text(&f["schema"]["type"]);
            if f["type"] == "KEY" {
                let key = if source["type"] == "TABLE" {
                    "(primary key)"
                } else {
                    "(key)"
                };
                data_type = format!("{data_type} {key}");
            }
            vec![text(&f["name"]), data_type]
        })
        .collect();
    let mut out = format!(
        "\n{:<21}: {}\n{:<21}: {}\n{:<21}: {}\n{:<21}: {}\n{:<21}: {}\n",
        "Name",
        text(&source["name"]),
        "Type",
        text(&source["type"]),
        "Kafka topic",
        text(&source["topic"]),
        "Key format",
        text(&source["keyFormat"]),
        "Value format",
        text(&source["valueFormat"]),
    );
    if let Some(window) = source["windowType"].as_str() {
        out.push_str(&format!("{:<21}: {window}\n", "Window type"));
    }
    out.push('\n');
    out.push_str(&listing(&["Field", "Type"], &fields));
    if source["extended"] != true {
        out.push_str(
            "For runtime statistics and query details run: DESCRIBE <Stream,Table> EXTENDED;\n",
        );
        return out;
    }
    for (title, field) in [
        ("Queries that read from this", "readQueries"),
        ("Queries that write from this", "writeQueries"),
    ] {
        let heading = format!("{title} {}:", text(&source["type"]));
        out.push_str(&format!("\n{heading}\n{}\n", "-".repeat(heading.len())));
        for query in source[field].as_array().cloned().unwrap_or_default() {
            out.push_str(&format!(
                "{} ({})\n",
                text(&query["id"]),
                text(&query["state"])
            ));
        }
    }
    out.push_str(&format!(
        "\nLocal runtime statistics\n------------------------\n{}\n{}\n",
        text(&source["statistics"]),
        text(&source["errorStats"]),
    ));
    out.push_str(&format!(
        "(Statistics of the local Eddy server interaction with the Kafka topic {})\n",
        text(&source["topic"])
    ));
    out
}

/// A listing as the ksql CLI draws it:
/// ```text
///  Stream Name | Kafka Topic
/// ---------------------------
///  PAGEVIEWS   | pageviews
/// ---------------------------
/// ```
pub(crate) fn listing(headers: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, header)| {
            rows.iter()
                .filter_map(|row| row.get(i))
                .map(|cell| width_of(cell))
                .chain([header.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &mut dyn Iterator<Item = &str>| -> String {
        let cells: Vec<String> = cells
            .zip(&widths)
            .map(|(cell, width)| format!(" {} ", pad(cell, *width)))
            .collect();
        format!("{}\n", cells.join("|").trim_end())
    };
    let total = widths
        .iter()
        .map(|w| w + 3)
        .sum::<usize>()
        .saturating_sub(1);
    let rule = format!("{}\n", "-".repeat(total));
    let mut out = line(&mut headers.iter().copied());
    out.push_str(&rule);
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out.push_str(&rule);
    out
}

/// A query's rows in a `|`-bordered table. Push queries draw the header before any row is
/// known, so column widths come from the names and types; a wider value widens its cell.
pub(crate) struct RowTable {
    widths: Vec<usize>,
}

impl RowTable {
    /// Widths for rows not seen yet.
    pub(crate) fn for_columns(columns: &[(String, String)]) -> RowTable {
        let widths = columns
            .iter()
            .map(|(name, data_type)| name.len().max(type_width(data_type)))
            .collect();
        RowTable { widths }
    }

    /// Widths that fit every one of `rows`.
    pub(crate) fn fitting(columns: &[(String, String)], rows: &[Vec<Value>]) -> RowTable {
        let widths = columns
            .iter()
            .enumerate()
            .map(|(i, (name, _))| {
                rows.iter()
                    .filter_map(|row| row.get(i))
                    .map(|v| width_of(&text(v)))
                    .chain([name.len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        RowTable { widths }
    }

    pub(crate) fn rule(&self) -> String {
        let cells: Vec<String> = self.widths.iter().map(|w| "-".repeat(w + 2)).collect();
        format!("+{}+\n", cells.join("+"))
    }

    pub(crate) fn header(&self, columns: &[(String, String)]) -> String {
        let names: Vec<String> = columns.iter().map(|(name, _)| name.clone()).collect();
        format!("{}{}{}", self.rule(), self.line(&names), self.rule())
    }

    pub(crate) fn row(&self, values: &[Value]) -> String {
        let cells: Vec<String> = values.iter().map(text).collect();
        self.line(&cells)
    }

    fn line(&self, cells: &[String]) -> String {
        let cells: Vec<String> = cells
            .iter()
            .zip(&self.widths)
            .map(|(cell, width)| format!(" {} ", pad(cell, *width)))
            .collect();
        format!("|{}|\n", cells.join("|"))
    }
}

/// A row as JSON for `OUTPUT FORMAT JSON`: an object of column name to value, in column
/// order.
pub(crate) fn json_row(columns: &[(String, String)], values: &[Value]) -> String {
    let fields: Vec<String> = columns
        .iter()
        .zip(values)
        .map(|((name, _), value)| format!("{}:{value}", Value::from(name.as_str())))
        .collect();
    format!("{{{}}}\n", fields.join(","))
}

/// An error as the shell shows it. A server error that names a position in its statement
/// (`line 2:8: ...`) shows the statement with a caret under that position.
pub(crate) fn error(message: &str, statement: Option<&str>) -> String {
    let mut out = format!("{message}\n");
    let Some(statement) = statement.filter(|s| !s.is_empty()) else {
        return out;
    };
    let position = message
        .strip_prefix("line ")
        .and_then(|rest| rest.split_once(':'))
        .and_then(|(line, rest)| {
            let column = rest.split(':').next()?;
            Some((line.parse::<usize>().ok()?, column.parse::<usize>().ok()?))
        });
    let Some((line, column)) = position else {
        return out;
    };
    for (number, text) in statement.lines().enumerate() {
        out.push_str(text);
        out.push('\n');
        if number + 1 == line {
            out.push_str(&format!("{}^\n", " ".repeat(column.saturating_sub(1))));
        }
    }
    out
}

/// A value as a cell shows it: strings without quotes, everything else as JSON.
pub(crate) fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "null".to_string(),
        other => other.to_string(),
    }
}

fn list(value: &Value) -> String {
    value
        .as_array()
        .map(|items| items.iter().map(text).collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

fn pretty(value: &Value) -> String {
    format!(
        "{}\n",
        serde_json::to_string_pretty(value).unwrap_or_default()
    )
}

/// The room a push query's column gets before its values are known.
fn type_width(data_type: &str) -> usize {
    match data_type.split(['(', '<']).next().unwrap_or_default() {
        "BOOLEAN" => 7,
        "INTEGER" | "INT" | "DATE" | "TIME" => 11,
        "BIGINT" | "DOUBLE" | "DECIMAL" => 16,
        "TIMESTAMP" => 23,
        _ => 20,
    }
}

fn width_of(text: &str) -> usize {
    text.chars().count()
}

fn pad(text: &str, width: usize) -> String {
    let fill = width.saturating_sub(width_of(text));
    format!("{text}{}", " ".repeat(fill))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn listings_align_under_their_headers() {
        let out = listing(
            &["Stream Name", "Kafka Topic"],
            &[vec!["PAGEVIEWS".into(), "pageviews_topic".into()]],
        );
        assert_eq!(
            out,
            [
                " Stream Name | Kafka Topic",
                &"-".repeat(31),
                " PAGEVIEWS   | pageviews_topic",
                &"-".repeat(31),
                "",
            ]
            .join("\n")
        );
    }

    #[test]
    fn rows_fit_their_widest_value() {
        let columns = vec![("NAME".to_string(), "STRING".to_string())];
        let rows = vec![vec![json!("alice")], vec![json!(null)]];
        let table = RowTable::fitting(&columns, &rows);
        assert_eq!(table.header(&columns), "+-------+\n| NAME  |\n+-------+\n");
        assert_eq!(table.row(&rows[0]), "| alice |\n");
        assert_eq!(table.row(&rows[1]), "| null  |\n");
    }

    #[test]
    fn errors_point_at_their_position() {
        assert_eq!(
            error(
                "line 2:6: unknown type 'INTT'",
                Some("CREATE STREAM s\n  (a INTT)")
            ),
            "line 2:6: unknown type 'INTT'\nCREATE STREAM s\n  (a INTT)\n     ^\n"
        );
        assert_eq!(error("boom", Some("SELECT 1")), "boom\n");
    }

    #[test]
    fn statuses_show_their_message() {
        let status =
            json!({"@type": "currentStatus", "commandStatus": {"message": "Stream created"}});
        assert!(entity(&status, OutputFormat::Tabular).contains(" Stream created"));
        assert!(entity(&status, OutputFormat::Json).contains("\"@type\": \"currentStatus\""));
    }
}
