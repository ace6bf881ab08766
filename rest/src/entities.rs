//! The engine's statement results as ksqlDB's `/ksql` entities.

use eddy_engine::catalog::Source;
use eddy_engine::parser::{ColumnDef, ShowKind, SourceKind};
use eddy_engine::types::SqlType;
use eddy_engine::{QuerySummary, StatementResult};
use serde_json::{json, Value};

/// One statement's entity, if ksqlDB answers it with one (INSERT ... VALUES has none).
/// `sequence` numbers commands as ksqlDB's command topic does.
pub(crate) fn entity(text: &str, result: &StatementResult, sequence: u64) -> Option<Value> {
    let entity = match result {
        StatementResult::Inserted => return None,
        StatementResult::Status { message, query_id } => json!({
            "@type": "currentStatus",
            "statementText": text,
            "commandId": format!("stream/{sequence}/create"),
            "commandStatus": {
                "status": "SUCCESS",
                "message": message,
                "queryId": query_id,
            },
            "commandSequenceNumber": sequence,
            "warnings": [],
        }),
        StatementResult::Sources { kind, sources } => {
            let (type_name, field) = match kind {
                ShowKind::Tables => ("tables", "tables"),
                _ => ("streams", "streams"),
            };
            let listed: Vec<Value> = sources.iter().map(|s| source_summary(s)).collect();
            json!({
                "@type": type_name,
                "statementText": text,
                field: listed,
                "warnings": [],
            })
        }
        StatementResult::Topics(topics) => json!({
            "@type": "kafka_topics",
            "statementText": text,
            "topics": topics.iter().map(|(name, partitions)| json!({
                "name": name,
                "replicaInfo": vec![1; (*partitions).max(0) as usize],
            })).collect::<Vec<_>>(),
            "warnings": [],
        }),
        StatementResult::Queries(queries) => json!({
            "@type": "queries",
            "statementText": text,
            "queries": queries.iter().map(|query| {
                let sinks: Vec<&String> =
                    std::iter::once(&query.sink).filter(|s| !s.is_empty()).collect();
                json!({
                    "queryString": query.statement,
                    "sinks": sinks,
                    "sinkKafkaTopics": sinks,
                    "id": query.id,
                    "statusCount": {query.state: 1},
                    "queryType": if sinks.is_empty() { "PUSH" } else { "PERSISTENT" },
                    "state": query.state,
                    "errorMessage": query.error,
                })
            }).collect::<Vec<_>>(),
            "warnings": [],
        }),
        StatementResult::Properties(properties) => json!({
            "@type": "properties",
            "statementText": text,
            "properties": properties.iter().map(|p| json!({
                "name": p.name,
                "scope": p.scope,
                "level": if p.overridden { "SESSION" } else { "SERVER" },
                "editable": true,
                "value": p.value,
            })).collect::<Vec<_>>(),
            "overwrittenProperties": properties.iter()
                .filter(|p| p.overridden).map(|p| &p.name).collect::<Vec<_>>(),
            "defaultProperties": properties.iter()
                .filter(|p| !p.overridden).map(|p| &p.name).collect::<Vec<_>>(),
            "warnings": [],
        }),
        StatementResult::Explain { logical, physical } => json!({
            "@type": "queryDescription",
            "statementText": text,
            "queryDescription": {
                "id": "",
                "statementText": text,
                "windowType": null,
                "fields": [],
                "sources": [],
                "sinks": [],
                "topology": physical,
                "executionPlan": format!("Logical plan:\n{logical}\n\nPhysical plan:\n{physical}"),
                "overriddenProperties": {},
                "ksqlHostQueryStatus": {},
                "queryType": "PERSISTENT",
                "state": "",
            },
            "warnings": [],
        }),
        StatementResult::Functions(functions) => json!({
            "@type": "function_names",
            "statementText": text,
            "functions": functions.iter().map(|f| json!({
                "name": f.name,
                "type": f.kind.name(),
                "category": f.category,
            })).collect::<Vec<_>>(),
            "warnings": [],
        }),
        StatementResult::FunctionDescription(described) => json!({
            "@type": "describe_function",
            "statementText": text,
            "name": described.info.name,
            "description": described.info.description,
            "author": "Eddy",
            "version": env!("CARGO_PKG_VERSION"),
            "path": "internal",
            "type": described.info.kind.name(),
            "functions": described.variations.iter().map(|(arguments, returns)| json!({
                "arguments": arguments.iter().enumerate().map(|(i, t)| json!({
                    "name": format!("arg{}", i + 1),
                    "type": t,
                    "description": "",
                    "isVariadic": false,
                })).collect::<Vec<_>>(),
                "argumentTypes": arguments,
                "returnType": returns,
                "description": described.info.description,
            })).collect::<Vec<_>>(),
            "warnings": [],
        }),
        StatementResult::Description { source, statistics } => json!({
            "@type": "sourceDescription",
            "statementText": text,
            "sourceDescription": {
                "name": source.name,
                "windowType": source.window.map(|w| w.type_name()),
                "readQueries": query_ids(statistics.as_ref().map(|s| &s.read_queries)),
                "writeQueries": query_ids(statistics.as_ref().map(|s| &s.write_queries)),
                "fields": source.columns.iter().map(field).collect::<Vec<_>>(),
                "type": kind_name(source.kind),
                "timestamp": source.timestamp_column.clone().unwrap_or_default(),
                "statistics": statistics.as_ref().map_or(String::new(), statistics_text),
                "errorStats": statistics.as_ref().map_or(String::new(), |s| {
                    format!("failed-messages: {:>9}", s.failed_messages)
                }),
                "extended": statistics.is_some(),
                "keyFormat": source.key_format.name(),
                "valueFormat": source.value_format.name(),
                "topic": source.topic,
                "partitions": statistics.as_ref().map_or(0, |s| s.partitions),
                "replication": 1,
                "statement": source.statement,
                "sourceConstraints": [],
            },
            "warnings": [],
        }),
    };
    Some(entity)
}

/// DESCRIBE EXTENDED's figures: the topic's records, then each writing query's operators.
fn statistics_text(statistics: &eddy_engine::SourceStatistics) -> String {
    let mut text = format!("total-messages: {:>10}", statistics.total_messages);
    for (query, operators) in &statistics.operators {
        for operator in operators {
            text.push_str(&format!(
                "\n{query} {}: records-in: {} records-out: {}",
                operator.operator, operator.records_in, operator.records_out
            ));
            if let Some(size) = operator.state_size {
                text.push_str(&format!(" state-size: {size}"));
            }
        }
    }
    text
}

/// DESCRIBE EXTENDED's read and write queries: `{"id": ..., "state": ...}` each.
fn query_ids(queries: Option<&Vec<QuerySummary>>) -> Vec<Value> {
    queries
        .into_iter()
        .flatten()
        .map(|query| {
            json!({
                "id": query.id,
                "state": query.state,
                "queryType": "PERSISTENT",
                "errorMessage": query.error,
            })
        })
        .collect()
}

fn kind_name(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::Stream => "STREAM",
        SourceKind::Table => "TABLE",
    }
}

fn source_summary(source: &Source) -> Value {
    json!({
        "type": kind_name(source.kind),
        "name": source.name,
        "topic": source.topic,
        "keyFormat": source.key_format.name(),
        "valueFormat": source.value_format.name(),
        "isWindowed": source.window.is_some(),
    })
}

fn field(column: &ColumnDef) -> Value {
    let mut value = json!({
        "name": column.name,
        "schema": schema(&column.data_type),
    });
    if column.key {
        value["type"] = json!("KEY");
    }
    value
}

/// ksqlDB's description of a type: its base name, struct fields, element type.
fn schema(data_type: &SqlType) -> Value {
    let base = match data_type {
        SqlType::Decimal { .. } => "DECIMAL".to_string(),
        SqlType::Array(_) => "ARRAY".to_string(),
        SqlType::Map(..) => "MAP".to_string(),
        SqlType::Struct(_) => "STRUCT".to_string(),
        other => other.to_string(),
    };
    let fields = match data_type {
        SqlType::Struct(fields) => json!(fields
            .iter()
            .map(|(name, t)| json!({"name": name, "schema": schema(t)}))
            .collect::<Vec<_>>()),
        _ => Value::Null,
    };
    let member = match data_type {
        SqlType::Array(item) => schema(item),
        SqlType::Map(_, value) => schema(value),
        _ => Value::Null,
    };
    json!({"type": base, "fields": fields, "memberSchema": member})
}

/// A result schema as ksqlDB writes it in a query header: "`A` STRING, `B` BIGINT".
pub(crate) fn schema_text(columns: &[(String, String)]) -> String {
    columns
        .iter()
        .map(|(name, data_type)| format!("`{name}` {data_type}"))
        .collect::<Vec<_>>()
        .join(", ")
}
