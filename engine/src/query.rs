//! Persistent queries: planning a CREATE ... AS SELECT with DataFusion and running it.
//!
//! Planning: the SELECT (ksqlDB clauses already cut out by the parser) becomes a DataFusion
//! `LogicalPlan` over schema-only tables, one per catalog source. Its shape is then lowered to
//! Eddy's operators, today `FilterProjectExec` (`runtime.rs`): the WHERE predicate and the
//! projection as DataFusion physical expressions, evaluated on Arrow batches. Aggregations,
//! windows and joins are refused as not supported yet.
//!
//! Running: one task per source partition reads from the query's committed offsets (consumer
//! group = query id, earliest when none), decodes records into a batch, applies the operator,
//! encodes and produces the rows with their key and timestamp, then commits. At-least-once.

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::sqlparser::ast::{
    visit_expressions_mut, Expr as SqlExpr, Ident, ObjectNamePart, SelectItem, SetExpr, TableFactor,
};
use eddy_broker::LogClient;
use tokio::sync::watch;

use crate::catalog::{Catalog, Source};
use crate::error::{EngineError, Result};
use crate::formats::Format;
use crate::parser::{ColumnDef, Properties, SelectQuery, SourceKind};
use crate::types::SqlType;

/// A planned persistent query.
#[derive(Clone)]
pub struct PersistentPlan {
    pub source: Arc<Source>,
    pub sink: Source,
    /// The source schema the expressions read (columns and pseudo-columns).
    pub input_schema: SchemaRef,
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// One expression per sink column, in sink column order.
    pub projection: Vec<Arc<dyn PhysicalExpr>>,
    /// DataFusion's logical plan, for EXPLAIN.
    pub logical_plan: String,
    pub sink_partitions: Option<i32>,
}

impl PersistentPlan {
    /// Properties for creating the sink topic.
    pub fn sink_topic_properties(&self) -> Properties {
        let mut properties = Properties::new();
        properties.insert(
            "PARTITIONS".into(),
            self.sink_partitions.unwrap_or(1).to_string(),
        );
        properties
    }
}

/// Plans `CREATE STREAM|TABLE name AS SELECT ...`.
pub async fn plan_persistent(
    catalog: &Catalog,
    kind: SourceKind,
    name: &str,
    properties: &Properties,
    query: &SelectQuery,
    statement: &str,
) -> Result<PersistentPlan> {
    if query.window.is_some() {
        return Err(EngineError::Unsupported("windowed aggregations".into()));
    }
    if !query.partition_by.is_empty() {
        return Err(EngineError::Unsupported("PARTITION BY".into()));
    }
    let mut ast = query.query.clone();
    let source = expand_and_find_source(&mut ast, catalog)?;
    lower_function_names(&mut ast);

    let config =
        SessionConfig::new().set_bool("datafusion.sql_parser.enable_ident_normalization", false);
    let context = SessionContext::new_with_config(config);
    for s in catalog.sources() {
        let table = datafusion::catalog::empty::EmptyTable::new(s.schema());
        context.register_table(quoted(&s.name), Arc::new(table))?;
    }
    let statement_ast = datafusion::sql::sqlparser::ast::Statement::Query(ast);
    let plan = context
        .state()
        .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
            statement_ast,
        )))
        .await?;
    let logical_plan = plan.display_indent().to_string();
    let (projection_exprs, filter_expr, scan_schema) = stateless_shape(&plan)?;
    let filter = filter_expr
        .map(|e| context.create_physical_expr(e, &scan_schema))
        .transpose()?;
    let output_schema = plan.schema().clone();
    let projection = projection_exprs
        .into_iter()
        .map(|e| context.create_physical_expr(e, &scan_schema))
        .collect::<datafusion::error::Result<Vec<_>>>()?;

    let mut columns = Vec::new();
    for field in output_schema.fields() {
        let data_type = SqlType::from_arrow(field.data_type()).ok_or_else(|| {
            EngineError::Unsupported(format!(
                "column {} of type {}",
                field.name(),
                field.data_type()
            ))
        })?;
        let key = source.key_columns().any(|k| &k.name == field.name());
        columns.push(ColumnDef {
            name: field.name().clone(),
            data_type,
            key,
        });
    }
    if source.key_columns().count() > 0 && !columns.iter().any(|c| c.key) {
        return Err(EngineError::Plan(format!(
            "the projection must include the key column{} of {}: {}",
            if source.key_columns().count() > 1 {
                "s"
            } else {
                ""
            },
            source.name,
            source
                .key_columns()
                .map(|k| k.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let format = |name: &str| properties.get(name).map(|v| Format::parse(v)).transpose();
    let both = format("FORMAT")?;
    let sink = Source {
        name: name.to_string(),
        kind,
        columns,
        topic: properties
            .get("KAFKA_TOPIC")
            .cloned()
            .unwrap_or_else(|| name.to_string()),
        key_format: format("KEY_FORMAT")?.or(both).unwrap_or(source.key_format),
        value_format: format("VALUE_FORMAT")?
            .or(both)
            .unwrap_or(source.value_format),
        wrap_single_value: true,
        read_only: false,
        statement: statement.to_string(),
    };
    let sink_partitions = properties.get("PARTITIONS").and_then(|p| p.parse().ok());
    Ok(PersistentPlan {
        input_schema: source.schema(),
        source,
        sink,
        filter,
        projection,
        logical_plan,
        sink_partitions,
    })
}

fn quoted(name: &str) -> String {
    format!("\"{name}\"")
}

/// Replaces `*` with the source's columns (ksqlDB's `*` excludes pseudo-columns) and returns the
/// source the query reads.
fn expand_and_find_source(
    query: &mut datafusion::sql::sqlparser::ast::Query,
    catalog: &Catalog,
) -> Result<Arc<Source>> {
    let SetExpr::Select(select) = query.body.as_mut() else {
        return Err(EngineError::Unsupported(
            "set operations (UNION, ...)".into(),
        ));
    };
    if select.from.len() != 1 || !select.from[0].joins.is_empty() {
        return Err(EngineError::Unsupported("joins".into()));
    }
    if !matches!(select.group_by, datafusion::sql::sqlparser::ast::GroupByExpr::Expressions(ref e, _) if e.is_empty())
    {
        return Err(EngineError::Unsupported("GROUP BY".into()));
    }
    let TableFactor::Table { name, .. } = &select.from[0].relation else {
        return Err(EngineError::Unsupported("subqueries in FROM".into()));
    };
    let source_name = match name.0.last() {
        Some(ObjectNamePart::Identifier(ident)) => ident.value.clone(),
        _ => return Err(EngineError::Plan(format!("bad source name {name}"))),
    };
    let source = catalog.get(&source_name)?;
    if let TableFactor::Table { name, .. } = &mut select.from[0].relation {
        for part in name.0.iter_mut() {
            let ObjectNamePart::Identifier(ident) = part else {
                continue;
            };
            ident.quote_style = Some('"');
        }
    }
    let mut projection = Vec::with_capacity(select.projection.len());
    for (index, item) in std::mem::take(&mut select.projection)
        .into_iter()
        .enumerate()
    {
        match item {
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(_, _) => {
                projection.extend(source.columns.iter().map(|c| {
                    SelectItem::UnnamedExpr(SqlExpr::Identifier(Ident::with_quote(
                        '"',
                        c.name.clone(),
                    )))
                }));
            }
            // ksqlDB names a column after its field, or KSQL_COL_<n> for other expressions.
            SelectItem::UnnamedExpr(expr) => {
                let alias = match &expr {
                    SqlExpr::Identifier(ident) => ident.value.clone(),
                    SqlExpr::CompoundIdentifier(parts) => {
                        parts.last().map(|p| p.value.clone()).unwrap_or_default()
                    }
                    _ => format!("KSQL_COL_{index}"),
                };
                projection.push(SelectItem::ExprWithAlias {
                    expr,
                    alias: Ident::with_quote('"', alias),
                });
            }
            other => projection.push(other),
        }
    }
    select.projection = projection;
    Ok(source)
}

/// DataFusion's functions are registered in lower case; ksqlDB's names are upper case.
fn lower_function_names(query: &mut datafusion::sql::sqlparser::ast::Query) {
    let _ = visit_expressions_mut(query, |expr| {
        if let SqlExpr::Function(function) = expr {
            for part in function.name.0.iter_mut() {
                if let ObjectNamePart::Identifier(ident) = part {
                    if ident.quote_style.is_none() {
                        let lower = ident.value.to_lowercase();
                        ident.value = ksql_function_alias(&lower).unwrap_or(&lower).to_string();
                    }
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
}

/// ksqlDB function names whose DataFusion function has another name and the same meaning.
fn ksql_function_alias(name: &str) -> Option<&'static str> {
    Some(match name {
        "ucase" => "upper",
        "lcase" => "lower",
        "len" => "character_length",
        "ifnull" => "coalesce",
        "instr" => "strpos",
        _ => return None,
    })
}

/// Projection(Filter?(TableScan)): the projection, the predicate and the scan's schema.
fn stateless_shape(
    plan: &LogicalPlan,
) -> Result<(
    Vec<datafusion::logical_expr::Expr>,
    Option<datafusion::logical_expr::Expr>,
    datafusion::common::DFSchema,
)> {
    let mut node = plan;
    let mut projection = None;
    let mut filter = None;
    loop {
        match node {
            LogicalPlan::Projection(p) if projection.is_none() => {
                projection = Some(p.expr.clone());
                node = p.input.as_ref();
            }
            LogicalPlan::Filter(f) if filter.is_none() => {
                filter = Some(f.predicate.clone());
                node = f.input.as_ref();
            }
            LogicalPlan::SubqueryAlias(a) => node = a.input.as_ref(),
            LogicalPlan::TableScan(scan) => {
                let projection = projection.ok_or_else(|| {
                    EngineError::Internal("a SELECT plans to a projection".into())
                })?;
                return Ok((projection, filter, scan.projected_schema.as_ref().clone()));
            }
            LogicalPlan::Limit(_) => {
                return Err(EngineError::Plan(
                    "LIMIT is not allowed in persistent queries".into(),
                ))
            }
            LogicalPlan::Aggregate(_) => {
                return Err(EngineError::Unsupported("aggregations".into()))
            }
            other => {
                return Err(EngineError::Unsupported(format!(
                    "{} in persistent queries",
                    other.display()
                )))
            }
        }
    }
}

/// A persistent query that is running.
pub struct RunningQuery {
    pub statement: String,
    pub sink: String,
    pub source_topic: String,
    stop: watch::Sender<bool>,
}

impl RunningQuery {
    /// Stops the query's tasks (they finish their current batch).
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
}

/// Starts the tasks of a planned query.
pub fn start(client: Arc<dyn LogClient>, query_id: String, plan: PersistentPlan) -> RunningQuery {
    let (stop, stopped) = watch::channel(false);
    let running = RunningQuery {
        statement: plan.sink.statement.clone(),
        sink: plan.sink.name.clone(),
        source_topic: plan.source.topic.clone(),
        stop,
    };
    let plan = Arc::new(plan);
    tokio::spawn(crate::runtime::run_query(client, query_id, plan, stopped));
    running
}
