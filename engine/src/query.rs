//! Persistent queries: planning a CREATE ... AS SELECT with DataFusion and running it.
//!
//! Planning: the SELECT (ksqlDB clauses already cut out by the parser) becomes a DataFusion
//! `LogicalPlan` over schema-only tables, one per catalog source. Its shape is then lowered to
//! one of Eddy's operators ([`Operator`]: filter and projection, aggregation, join (planned
//! in [`join`]), or aggregates OVER windows (planned in `over`)), with WHERE, the
//! projection, GROUP BY keys, join keys and window partitions as
//! DataFusion physical expressions evaluated on Arrow batches. A SELECT that one operator
//! cannot run (a subquery in FROM, a join of more than two sources) is split into stages
//! first ([`stages`]): each is planned as a SELECT of its own whose rows go to an internal
//! topic, and the query reads the last one as a source ([`PersistentPlan::upstream`]).
//!
//! Running ([`crate::runtime`]): one task per partition read (of both sources, for a join)
//! reads from the query's committed offsets (consumer group = query id, earliest when none),
//! decodes records into a batch, applies the operator, encodes and produces the rows with
//! their key and timestamp, then commits. A stateful operator runs once per partition number,
//! owning its keys' state, after a repartition topic when its key is not the sources' key
//! (`runtime/exchange.rs`). At-least-once.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::DFSchema;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, Ident, ObjectNamePart, SelectItem, SetExpr, TableFactor,
};
use eddy_broker::LogClient;
use tokio::sync::watch;

use crate::catalog::{is_pseudo_column, Catalog, KeyWindow, Source, WINDOWEND, WINDOWSTART};
use crate::error::{EngineError, Result};
use crate::formats::Format;
use crate::functions;
use crate::parser::{ColumnDef, Emit, Properties, SelectQuery, SourceKind, WindowSpec};
use crate::runtime::{Output, ProcessingLog, QueryActivity, QueryFailure, Writers};
use crate::types::SqlType;

mod grouping;
pub(crate) use grouping::ksql_text;
pub mod join;
mod over;
mod partition;
mod predicates;
use partition::Partitioning;
mod rewrite;
pub mod stages;
mod struct_star;
mod unresolved;
pub(crate) use unresolved::column_error as unresolved_column;

pub use join::{JoinKind, JoinSpec};
pub use over::{Frame, OverFunction, OverPlan};
pub(crate) use predicates::check_comparisons;
pub(crate) use rewrite::{field_access_name, rewrite, rewrite_query, ItemNames};

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
    /// The sink columns that were `EXPLODE(array)`: their expression gives the array, and each
    /// input row becomes one output row per element.
    pub explode: Vec<usize>,
    /// What runs between decoding (with WHERE) and the projection.
    pub operator: Operator,
    /// DataFusion's logical plan, for EXPLAIN.
    pub logical_plan: String,
    pub sink_partitions: Option<i32>,
    /// The stages this query reads ([`stages`]: subqueries in FROM, the joins of a chain but
    /// the last), in the order they must start: each writes its rows to an internal topic a
    /// later one reads. Flattened: a stage here has no upstream of its own.
    pub upstream: Vec<PersistentPlan>,
}

impl PersistentPlan {
    /// Eddy's operators for this query, sink first, as EXPLAIN prints them, then how its
    /// tasks run.
    pub fn explain_physical(&self) -> String {
        let mut text = self.explain_operators();
        text.push_str(&crate::runtime::describe_tasks(self));
        text.push('\n');
        // A stage's rows come before the query's: listed after it, last stage first.
        for stage in self.upstream.iter().rev() {
            text.push_str(&format!(
                "StageExec: {} topic={}\n",
                stage.sink.name,
                stages::display_topic(&stage.sink.topic)
            ));
            for line in stage.explain_physical().lines() {
                text.push_str(&format!("  {line}\n"));
            }
        }
        text
    }

    fn explain_operators(&self) -> String {
        let mut lines = vec![format!(
            "SinkExec: topic={} key_format={} value_format={} columns=[{}]",
            stages::display_topic(&self.sink.topic),
            self.sink.key_format.name(),
            self.sink.value_format.name(),
            self.sink
                .columns
                .iter()
                .map(|c| format!("{}{}", c.name, if c.key { " KEY" } else { "" }))
                .collect::<Vec<_>>()
                .join(", ")
        )];
        lines.push(format!("ProjectExec: [{}]", expr_list(&self.projection)));
        if let Operator::Aggregate(aggregate) = &self.operator {
            if let Some(having) = &aggregate.having {
                lines.push(format!("HavingExec: {having}"));
            }
            let window = match &aggregate.window {
                Some(window) => format!(" window={window:?}"),
                None => String::new(),
            };
            lines.push(format!(
                "AggregateExec: group_by=[{}] aggregates=[{}]{window} emit={}{}",
                expr_list(&aggregate.group_by),
                aggregate
                    .aggregates
                    .iter()
                    .map(|a| a.name().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                if aggregate.emit_final {
                    "FINAL"
                } else {
                    "CHANGES"
                },
                if aggregate.retracting {
                    " retracting"
                } else {
                    ""
                },
            ));
        }
        if let Operator::Over(over) = &self.operator {
            let list =
                |exprs: &mut dyn Iterator<Item = String>| exprs.collect::<Vec<_>>().join(", ");
            lines.push(format!(
                "OverExec: partition_by=[{}] order_by=[{}] functions=[{}]",
                list(&mut over.partition_by.iter().map(|e| e.to_string())),
                list(
                    &mut over
                        .order_by
                        .iter()
                        .map(|(e, desc)| { format!("{e}{}", if *desc { " DESC" } else { "" }) })
                ),
                list(&mut over.functions.iter().map(|f| format!(
                    "{} {}",
                    f.aggregate.name(),
                    f.frame
                ))),
            ));
        }
        if let Some(filter) = &self.filter {
            lines.push(format!("FilterExec: {filter}"));
        }
        let source_line = |source: &Source| {
            format!(
                "SourceExec: {} topic={} key_format={} value_format={}",
                source.name,
                stages::display_topic(&source.topic),
                source.key_format.name(),
                source.value_format.name()
            )
        };
        if let Operator::Join(join) = &self.operator {
            if let Some(filter) = &join.filter {
                lines.push(format!("FilterExec: {filter}"));
            }
            let within = match &join.within {
                Some(w) => format!(
                    " within=({} ms before, {} ms after) grace={}",
                    w.before_ms,
                    w.after_ms,
                    w.grace_ms
                        .map(|g| format!("{g} ms"))
                        .unwrap_or_else(|| "none".into())
                ),
                None => String::new(),
            };
            let residual: String = join.sides[0]
                .residual
                .iter()
                .zip(&join.sides[1].residual)
                .map(|(left, right)| format!(" and {left} = {right}"))
                .collect();
            lines.push(format!(
                "JoinExec: {:?} {} on {} = {}{residual}{within}",
                join.kind,
                join.describe(),
                join.sides[0].key,
                join.sides[1].key
            ));
            let depth = lines.len();
            let mut text: String = lines
                .iter()
                .enumerate()
                .map(|(depth, line)| format!("{}{line}\n", "  ".repeat(depth)))
                .collect();
            for side in &join.sides {
                text.push_str(&format!(
                    "{}{}\n",
                    "  ".repeat(depth),
                    source_line(&side.source)
                ));
            }
            return text;
        }
        lines.push(source_line(&self.source));
        lines
            .iter()
            .enumerate()
            .map(|(depth, line)| format!("{}{line}\n", "  ".repeat(depth)))
            .collect()
    }

    /// The topics the query reads (its stages' included, their own topics not).
    pub fn source_topics(&self) -> Vec<String> {
        let own = match &self.operator {
            Operator::Join(join)
            | Operator::Aggregate(AggregatePlan {
                join: Some(join), ..
            }) => join.sides.iter().map(|s| s.source.topic.clone()).collect(),
            _ => vec![self.source.topic.clone()],
        };
        self.upstream
            .iter()
            .flat_map(|stage| stage.source_topics())
            .chain(own)
            .filter(|topic| !stages::is_unbound(topic))
            .collect()
    }

    /// Properties for creating the sink topic: PARTITIONS from the WITH clause, else the
    /// source topics' (the most of them), as ksqlDB does.
    pub fn sink_topic_properties(&self, source_partitions: i32) -> Properties {
        let mut properties = Properties::new();
        properties.insert(
            "PARTITIONS".into(),
            self.sink_partitions
                .unwrap_or(source_partitions.max(1))
                .to_string(),
        );
        properties
    }
}

/// Expressions as EXPLAIN lists them: `a@0, b@1`.
pub(crate) fn expr_list(exprs: &[Arc<dyn PhysicalExpr>]) -> String {
    exprs
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The operator of a query.
#[derive(Clone)]
pub enum Operator {
    /// WHERE and SELECT only.
    FilterProject,
    /// GROUP BY with aggregates (and HAVING); the projection reads the aggregate's output.
    Aggregate(AggregatePlan),
    /// A join of two sources; WHERE and the projection read its joined rows.
    Join(JoinPlan),
    /// Aggregates OVER windows of a stream's rows; the projection reads the rows with one
    /// column per function after theirs.
    Over(OverPlan),
}

/// A join: each side's source and key, the kind of join, and WHERE over the joined rows.
#[derive(Clone)]
pub struct JoinPlan {
    pub kind: JoinKind,
    /// Left and right.
    pub sides: [JoinSide; 2],
    /// A stream-stream join's window.
    pub within: Option<crate::parser::JoinWithin>,
    /// The joined rows the projection and WHERE read: the left side's columns (and
    /// pseudo-columns), the right side's, then the join key (ROWKEY).
    pub joined_schema: SchemaRef,
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// A table-table join on the right table's primary key by an expression of the left
    /// row's that is not its primary key: the result is keyed by the left primary key.
    pub foreign_key: bool,
    /// How many key columns the left source has (its rows' first columns).
    pub left_key_columns: usize,
    /// A windowed left table's WINDOWSTART and WINDOWEND columns: part of a foreign-key
    /// join's left primary key, and the window of its result.
    pub left_window: Option<[usize; 2]>,
    /// A stream joined WITHIN an interval to a windowed table's rows
    /// ([`join::windowed_table_rows`]): run as a stream-stream join.
    pub table_as_rows: bool,
    /// The type each residual equality compares in (both sides' operands are cast to it).
    pub residual_types: Vec<datafusion::arrow::datatypes::DataType>,
}

/// One side of a join.
#[derive(Clone)]
pub struct JoinSide {
    pub source: Arc<Source>,
    /// The rows decoded from the source: its columns and pseudo-columns.
    pub schema: SchemaRef,
    /// The side's part of the ON condition: the join key of each of its rows.
    pub key: Arc<dyn PhysicalExpr>,
    /// The side's operands of the ON condition's other equalities (`L.B = R.B` of `ON L.A =
    /// R.A AND L.B = R.B`): a pair of rows the key matches joins only if these are equal
    /// too, and none is null.
    pub residual: Vec<Arc<dyn PhysicalExpr>>,
}

impl JoinPlan {
    /// stream-stream, stream-table or table-table.
    pub fn describe(&self) -> String {
        let kinds: Vec<&str> = self
            .sides
            .iter()
            .map(|s| match s.source.kind {
                SourceKind::Stream => "stream",
                SourceKind::Table => "table",
            })
            .collect();
        kinds.join("-")
    }
}

/// A GROUP BY: how to key each row, what to accumulate, and the HAVING filter.
#[derive(Clone)]
pub struct AggregatePlan {
    /// The GROUP BY expressions (a windowed aggregation's WINDOWSTART and WINDOWEND group
    /// columns come from the window instead and are not listed).
    pub group_by: Vec<Arc<dyn PhysicalExpr>>,
    pub window: Option<WindowSpec>,
    /// EMIT FINAL: one row per window once it closes, instead of every update.
    pub emit_final: bool,
    /// The source is a table: a row replacing or deleting an earlier one with its key
    /// retracts the earlier row from its group.
    pub retracting: bool,
    pub aggregates: Vec<Arc<AggregateFunctionExpr>>,
    /// The aggregate's output rows: group columns, then one column per aggregate.
    pub output_schema: SchemaRef,
    pub having: Option<Arc<dyn PhysicalExpr>>,
    /// An aggregation over a join: the join whose rows it aggregates.
    pub join: Option<JoinPlan>,
}

/// Refuses aggregate functions whose state ksqlDB keeps as a STRUCT or ARRAY (AVG's sum and
/// count, TOPK's list...) with a value format that cannot hold one, as ksqlDB does: its state
/// stores take the query's value format.
fn check_intermediate_types(operator: &Operator, value_format: Format) -> Result<()> {
    const STRUCTURED_STATE: &[&str] = &[
        "avg",
        "corr",
        "stddev",
        "stddev_samp",
        "topk",
        "topkdistinct",
        "collect_list",
        "collect_set",
        "histogram",
    ];
    let Operator::Aggregate(aggregate) = operator else {
        return Ok(());
    };
    let flat = matches!(value_format, Format::Delimited(_) | Format::Kafka);
    let structured = aggregate
        .aggregates
        .iter()
        .any(|a| STRUCTURED_STATE.contains(&a.fun().name().to_lowercase().as_str()));
    match flat && structured {
        true => Err(EngineError::Plan(
            "One of the functions used in the statement has an intermediate type that the \
             value format can not handle. Please remove the function or change the format."
                .into(),
        )),
        false => Ok(()),
    }
}

/// Which GROUP BY column projection column `index` is, when it is one taken as is (it then
/// becomes a key column).
fn group_key_index(projection: &[Expr], group_columns: &[String], index: usize) -> Option<usize> {
    let mut expr = &projection[index];
    while let Expr::Alias(alias) = expr {
        expr = alias.expr.as_ref();
    }
    let Expr::Column(c) = expr else {
        return None;
    };
    group_columns
        .iter()
        .position(|g| g == &c.flat_name() || g == &c.name)
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
    let numbers = std::sync::atomic::AtomicUsize::new(0);
    plan_select(
        catalog, kind, name, properties, query, statement, false, &numbers,
    )
    .await
}

/// Plans a push query (`SELECT ... EMIT CHANGES [LIMIT n]`): the same operators as a
/// persistent query, whose rows go to the caller. Returns the plan and the LIMIT.
pub async fn plan_push(
    catalog: &Catalog,
    query: &SelectQuery,
    statement: &str,
) -> Result<(PersistentPlan, Option<usize>)> {
    use datafusion::sql::sqlparser::ast::{GroupByExpr, LimitClause};
    let mut query = query.clone();
    let limit = match query.query.limit_clause.take() {
        None => None,
        Some(LimitClause::LimitOffset {
            limit: Some(limit),
            offset: None,
            ..
        }) => Some(
            limit
                .to_string()
                .parse::<usize>()
                .map_err(|_| EngineError::Plan(format!("LIMIT must be a number, not {limit}")))?,
        ),
        Some(other) => {
            return Err(EngineError::Plan(format!(
                "push queries take LIMIT n only, not {other}"
            )))
        }
    };
    let grouped = match query.query.body.as_ref() {
        SetExpr::Select(select) => {
            matches!(&select.group_by, GroupByExpr::Expressions(e, _) if !e.is_empty())
        }
        _ => false,
    };
    let kind = if grouped {
        SourceKind::Table
    } else {
        SourceKind::Stream
    };
    let numbers = std::sync::atomic::AtomicUsize::new(0);
    let plan = plan_select(
        catalog,
        kind,
        "PUSH_QUERY",
        &Properties::new(),
        &query,
        statement,
        true,
        &numbers,
    )
    .await?;
    Ok((plan, limit))
}

/// Plans a SELECT for a persistent query, or for a push query (`push`: no sink checks).
/// `numbers` numbers the stages planning meets ([`stages`], which plans a stage's SELECT with
/// this function again: the future is boxed).
#[allow(clippy::too_many_arguments)]
fn plan_select<'a>(
    catalog: &'a Catalog,
    kind: SourceKind,
    name: &'a str,
    properties: &'a Properties,
    query: &'a SelectQuery,
    statement: &'a str,
    push: bool,
    numbers: &'a std::sync::atomic::AtomicUsize,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<PersistentPlan>> + Send + 'a>> {
    Box::pin(plan_select_unboxed(
        catalog, kind, name, properties, query, statement, push, numbers,
    ))
}

#[allow(clippy::too_many_arguments)]
async fn plan_select_unboxed(
    catalog: &Catalog,
    kind: SourceKind,
    name: &str,
    properties: &Properties,
    query: &SelectQuery,
    statement: &str,
    push: bool,
    numbers: &std::sync::atomic::AtomicUsize,
) -> Result<PersistentPlan> {
    refuse_expression_subqueries(&query.query)?;
    // Subqueries in FROM run as stages, read as sources.
    let derived = match stages::has_derived(&query.query) {
        true => Some(stages::derive(catalog, query, statement, numbers).await?),
        false => None,
    };
    let (catalog, query) = match &derived {
        Some(derived) => (&derived.catalog, &derived.query),
        None => (catalog, query),
    };
    let windowed = query.window.is_some();
    let emit_final = query.emit == Some(Emit::Final);
    let mut ast = query.query.clone();
    rewrite_query(&mut ast);
    if let SetExpr::Select(select) = ast.body.as_mut() {
        struct_star::expand(select, catalog)?;
    }
    // A join of more than two sources: the joins before the last run as stages of their own.
    let staged = match stages::join_count(&ast) {
        0..=1 => None,
        _ => Some(stages::split(catalog, &mut ast, query, statement, numbers).await?),
    };
    let (catalog, within) = match &staged {
        Some(staged) => (&staged.catalog, staged.within.as_slice()),
        None => (catalog, query.within.as_slice()),
    };
    let chain = staged.as_ref().map(|s| &s.chain);
    let star = matches!(ast.body.as_ref(), SetExpr::Select(select)
    if select.projection.iter().any(|item| {
        matches!(item, SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..))
    }));
    let join_spec = match ast.body.as_mut() {
        SetExpr::Select(select) if select.from.len() == 1 && !select.from[0].joins.is_empty() => {
            let spec = join::expand(select, catalog, within, chain)?;
            join::validate(&spec)?;
            Some(spec)
        }
        _ => None,
    };
    let source = match &join_spec {
        Some(spec) => Arc::clone(&spec.sources[0]),
        None => expand_and_find_source(
            &mut ast,
            catalog,
            Star {
                window: push,
                keys_last: !query.partition_by.is_empty(),
            },
        )?,
    };
    if join_spec.is_some() && !query.partition_by.is_empty() {
        return Err(EngineError::Unsupported("PARTITION BY over a join".into()));
    }
    let partitioning = match ast.body.as_mut() {
        SetExpr::Select(select) => {
            partition::resolve(select, &query.partition_by, &source, star, name)?
        }
        _ => Partitioning::Source,
    };
    let sources = match &join_spec {
        Some(spec) => spec.sources.to_vec(),
        None => vec![Arc::clone(&source)],
    };
    let ungrouped_window = windowed && group_by_window(&mut ast);

    let context = functions::session();
    for s in catalog.sources() {
        let schema = if s.name == source.name {
            s.schema_with_window(windowed || s.window.is_some())
        } else {
            s.schema()
        };
        let table = datafusion::catalog::empty::EmptyTable::new(schema);
        context.register_table(quoted(&s.name), Arc::new(table))?;
    }
    let statement_ast = datafusion::sql::sqlparser::ast::Statement::Query(ast.clone());
    let state = context.state();
    let plan = state
        .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
            statement_ast,
        )))
        .await
        .map_err(|e| planning_error(e, &ast, &sources))?;
    if join_spec.is_some() {
        join::check_condition_types(&plan)?;
    }
    predicates::check_comparisons(&plan)?;
    let plan = predicates::coerce_in_lists(plan)?;
    // The analyzer resolves types (SUM of INT widens to BIGINT, ...); the optimizer is not run,
    // so the plan keeps the shape the operators are read from.
    let plan = state
        .analyzer()
        .execute_and_check(plan, state.config_options(), |_, _| {})?;
    let logical_plan = plan.display_indent().to_string();
    let shape = plan_shape(&plan)?;
    let physical = |e: Expr, schema: &DFSchema| physical_expr(&context, e, schema);
    let filter = shape
        .where_filter
        .map(|e| physical(e, &shape.scan_schema))
        .transpose()?;
    let output_schema = plan.schema().clone();
    let mut projection = shape
        .projection
        .iter()
        .map(|e| physical(e.clone(), &shape.projection_input))
        .collect::<datafusion::error::Result<Vec<_>>>()?;
    let explode = take_out_explode(&mut projection);
    let mut group_columns: Vec<String> = Vec::new();
    if shape.windows.is_some() && (shape.aggregate.is_some() || shape.join.is_some()) {
        return Err(EngineError::Unsupported(
            "OVER windows over an aggregation or a join".into(),
        ));
    }
    let (filter, operator) = match (shape.aggregate, shape.join) {
        (None, None) => match &shape.windows {
            Some(windows) => (
                filter,
                Operator::Over(over::plan(windows, &shape.scan_schema, &source, &context)?),
            ),
            None => (filter, Operator::FilterProject),
        },
        (None, Some(join_shape)) => {
            let spec = join_spec
                .as_ref()
                .ok_or_else(|| EngineError::Internal("a join plan without a join".into()))?;
            let join = join_plan(spec, join_shape, filter, &context)?;
            (None, Operator::Join(join))
        }
        (Some((group_expr, aggr_expr, having, aggregate_schema)), join_shape) => {
            // An aggregation over a join aggregates the joined rows (WHERE is the join's).
            let (filter, join) = match (join_shape, &join_spec) {
                (Some(join_shape), Some(spec)) => {
                    if join::result_kind(spec) == SourceKind::Table {
                        return Err(EngineError::Unsupported(
                            "aggregations over a table-table join".into(),
                        ));
                    }
                    (None, Some(join_plan(spec, join_shape, filter, &context)?))
                }
                _ => (filter, None),
            };
            if group_expr.is_empty() {
                return Err(EngineError::Plan(
                    "aggregations need a GROUP BY clause".into(),
                ));
            }
            let window_columns = if windowed { 2 } else { 0 };
            let keyed = group_expr.len() - window_columns;
            if aggr_expr.is_empty() && ungrouped_window {
                return Err(window_needs_group_by());
            }
            if aggr_expr.is_empty() {
                return Err(EngineError::Plan(
                    "GROUP BY requires aggregate functions in either the SELECT or HAVING clause."
                        .into(),
                ));
            }
            if source.value_format == crate::formats::Format::Kafka {
                return Err(EngineError::Plan(format!(
                    "Source(s) {} are using the 'KAFKA' value format. This format does not yet \
                     support GROUP BY.",
                    source.name
                )));
            }
            group_columns = aggregate_schema
                .fields()
                .iter()
                .take(keyed)
                .map(|f| f.name().clone())
                .collect();
            let scan_arrow = shape.scan_schema.as_arrow().clone();
            let props = datafusion::execution::context::ExecutionProps::new();
            #[allow(deprecated)]
            let aggregates = aggr_expr
                .iter()
                .map(|e| {
                    datafusion::physical_planner::create_aggregate_expr_and_maybe_filter(
                        e,
                        &shape.scan_schema,
                        &scan_arrow,
                        &props,
                    )
                    .map(|(expr, _, _)| expr)
                })
                .collect::<datafusion::error::Result<Vec<_>>>()?;
            let aggregate = Operator::Aggregate(AggregatePlan {
                window: query.window.clone(),
                emit_final,
                retracting: source.kind == SourceKind::Table && join.is_none(),
                group_by: group_expr
                    .into_iter()
                    .take(keyed)
                    .map(|e| physical(e, &shape.scan_schema))
                    .collect::<datafusion::error::Result<Vec<_>>>()?,
                aggregates,
                having: having.map(|e| physical(e, &aggregate_schema)).transpose()?,
                output_schema: Arc::new(aggregate_schema.as_arrow().clone()),
                join,
            });
            (filter, aggregate)
        }
    };
    let mut columns = Vec::new();
    // Where each key column goes among the keys: GROUP BY and PARTITION BY order.
    let mut key_rank = Vec::new();
    for (i, field) in output_schema.fields().iter().enumerate() {
        // The source column a projection item reads, when it is one (`ID`, or `ID AS K`): an
        // aliased key column stays the key, under its new name.
        let read_column = match shape.projection.get(i).map(|e| e.clone().unalias()) {
            Some(Expr::Column(column)) => Some(column.name),
            _ => None,
        };
        let data_type = SqlType::from_arrow(field.data_type()).ok_or_else(|| {
            EngineError::Unsupported(format!(
                "column {} of type {}",
                field.name(),
                field.data_type()
            ))
        })?;
        let rank = match &operator {
            Operator::FilterProject | Operator::Over(_) if !partitioning.is_source() => {
                partitioning.rank(i, read_column.as_ref())
            }
            Operator::FilterProject | Operator::Over(_) => source
                .key_columns()
                .position(|k| Some(&k.name) == read_column.as_ref()),
            Operator::Aggregate(_) => {
                group_key_index(&shape.projection, &group_columns, columns.len())
            }
            Operator::Join(_) => match &join_spec {
                Some(spec) if spec.foreign_key => spec.foreign_key_rank(i),
                Some(spec) => spec
                    .key_item()
                    .and_then(|(first, _)| (first == i).then_some(0)),
                None => None,
            },
        };
        let key = rank.is_some();
        key_rank.push(rank);
        columns.push(ColumnDef {
            name: field.name().clone(),
            data_type,
            key,
            header: None,
        });
    }
    for (i, rank) in key_rank.iter().enumerate() {
        let Some(rank) = rank.filter(|_| !push) else {
            continue;
        };
        if let Some(j) = (i + 1..key_rank.len()).find(|j| key_rank[*j] == Some(rank)) {
            let (first, second) = (&columns[i].name, &columns[j].name);
            return Err(EngineError::Plan(match operator {
                Operator::Aggregate(_) => format!(
                    "The projection contains a key column more than once: `{first}` and `{second}`."
                ),
                Operator::FilterProject | Operator::Join(_) | Operator::Over(_) => format!(
                    "The projection contains a key column (`{first}`) more than once, aliased as: {first} and {second}."
                ),
            }));
        }
    }
    if let (Some(spec), Operator::Join(_), false) = (&join_spec, &operator, push) {
        if spec.foreign_key {
            let names: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
            spec.check_foreign_key_projection(&names)?;
        }
        let Some((_, read)) = spec.key_item() else {
            return Err(join::missing_key(spec, name));
        };
        let mut names: Vec<&str> = spec
            .key_items
            .iter()
            .filter(|(_, r)| *r == read)
            .map(|(i, _)| columns[*i].name.as_str())
            .collect();
        if names.len() > 1 && !spec.foreign_key {
            let first = read.replace('.', "_");
            names.sort();
            return Err(EngineError::Plan(format!(
                "The projection contains a key column (`{first}`) more than once, aliased as: {}.",
                names.join(" and ")
            )));
        }
        if join::result_kind(spec) != kind {
            let wanted = join::result_kind(spec).name();
            return Err(EngineError::Plan(format!(
                "Invalid result type. Your SELECT query produces a {wanted}. Please use CREATE {wanted} AS SELECT statement instead."
            )));
        }
    }
    // A sink's key columns come first, in GROUP BY (or PARTITION BY, or source key) order; a
    // push query's columns keep the SELECT's order, as ksqlDB's do. The projection follows
    // the columns.
    let first = |i: &usize| key_rank[*i].is_some() && !push;
    let mut order: Vec<usize> = (0..columns.len()).filter(first).collect();
    order.sort_by_key(|i| key_rank[*i]);
    order.extend((0..columns.len()).filter(|i| !first(i)));
    // A sink's value column may not take a pseudo-column's name (a key may: PARTITION BY
    // ROWTIME keys the rows by it).
    let reserved = (0..columns.len())
        .find(|i| !push && !columns[*i].key && is_pseudo_column(&columns[*i].name));
    if let Some(i) = reserved {
        let name = &columns[i].name;
        let read = projection[i].downcast_ref::<datafusion::physical_expr::expressions::Column>();
        let message = if read.is_some_and(|c| c.name() == name) {
            format!("Reserved column name in select: `{name}`. Please remove or alias the column.")
        } else {
            format!(
                "`{name}` is a reserved column name. You cannot use it as an alias for a column."
            )
        };
        return Err(EngineError::Plan(message));
    }
    let columns: Vec<ColumnDef> = order.iter().map(|i| columns[*i].clone()).collect();
    let mut projection: Vec<Arc<dyn PhysicalExpr>> =
        order.iter().map(|i| Arc::clone(&projection[*i])).collect();
    // A join's key column is the join key, whichever side the row has.
    let rowkey_column = match &operator {
        Operator::Join(join) if !join.foreign_key => columns.iter().position(|c| c.key),
        _ => None,
    };
    if let (Operator::Join(join), Some(key)) = (&operator, rowkey_column) {
        let rowkey = join.joined_schema.fields().len() - 1;
        projection[key] = Arc::new(datafusion::physical_expr::expressions::Column::new(
            join::ROWKEY,
            rowkey,
        ));
    }
    if let Some(column) = properties.get("TIMESTAMP").map(|c| c.to_uppercase()) {
        if !push && !columns.iter().any(|c| c.name == column) {
            return Err(EngineError::Plan(format!(
                "The TIMESTAMP column set in the WITH clause does not exist in the schema: '{column}'"
            )));
        }
    }
    if matches!(operator, Operator::Aggregate(_)) && kind == SourceKind::Stream {
        return Err(EngineError::Plan(
            "Invalid result type. Your SELECT query produces a TABLE. Please use CREATE TABLE AS SELECT statement instead.".into(),
        ));
    }
    if matches!(operator, Operator::Aggregate(_)) && !push {
        let missing: Vec<String> = group_columns
            .iter()
            .enumerate()
            .filter(|(g, _)| !key_rank.iter().any(|r| *r == Some(*g)))
            .map(|(_, name)| name.clone())
            .collect();
        must_include(name, "grouping expression", &missing)?;
    }
    if !partitioning.is_source() && matches!(operator, Operator::Aggregate(_)) {
        return Err(EngineError::Unsupported(
            "PARTITION BY with GROUP BY".into(),
        ));
    }
    if matches!(operator, Operator::FilterProject | Operator::Over(_))
        && join_spec.is_none()
        && !push
        && partitioning.is_source()
        && !columns.iter().any(|c| c.key)
    {
        let keys: Vec<String> = source.key_columns().map(|k| k.name.clone()).collect();
        must_include(name, "key column", &keys)?;
    }
    if windowed && !matches!(operator, Operator::Aggregate(_)) {
        return Err(window_needs_group_by());
    }
    if emit_final && !windowed {
        return Err(EngineError::Plan(
            "EMIT FINAL is only supported for windowed aggregations.".into(),
        ));
    }
    let window = match &query.window {
        Some(
            spec @ (WindowSpec::Tumbling { size_ms, .. } | WindowSpec::Hopping { size_ms, .. }),
        ) => Some(KeyWindow::Time {
            size_ms: *size_ms,
            retention_ms: spec.retention_ms(emit_final),
        }),
        Some(WindowSpec::Session { .. }) => Some(KeyWindow::Session),
        None if matches!(operator, Operator::FilterProject | Operator::Over(_)) => source.window,
        // A foreign-key join is keyed (and so windowed) as its left table is.
        None if matches!(&operator, Operator::Join(join) if join.foreign_key) => source.window,
        None => None,
    };
    let format = |name: &str| properties.get(name).map(|v| Format::parse(v)).transpose();
    let both = format("FORMAT")?;
    let key_format = format("KEY_FORMAT")?;
    if partitioning == Partitioning::Null && key_format.is_some() {
        return Err(EngineError::Plan(
            "Key format specified for stream without key columns.".into(),
        ));
    }
    let sink = Source {
        name: name.to_string(),
        kind,
        columns,
        topic: properties
            .get("KAFKA_TOPIC")
            .cloned()
            .unwrap_or_else(|| name.to_string()),
        key_format: key_format
            .or(both)
            .unwrap_or(match (&join_spec, &partitioning) {
                (Some(spec), _) => join::key_format(spec),
                (None, Partitioning::Null) => Format::None,
                (None, _) => source.key_format,
            }),
        value_format: format("VALUE_FORMAT")?
            .or(both)
            .unwrap_or(source.value_format),
        wrap_single_value: properties
            .get("WRAP_SINGLE_VALUE")
            .is_none_or(|v| !v.eq_ignore_ascii_case("false")),
        read_only: false,
        window,
        timestamp_column: properties.get("TIMESTAMP").map(|c| c.to_uppercase()),
        timestamp_format: properties.get("TIMESTAMP_FORMAT").cloned(),
        statement: statement.to_string(),
    };
    if !push {
        check_intermediate_types(&operator, sink.value_format)?;
        sink.check_formats()?;
        sink.check_timestamp_column()?;
        if !sink.columns.iter().any(|c| !c.key) {
            return Err(EngineError::Plan(
                "The projection contains no value columns.".into(),
            ));
        }
    }
    if !explode.is_empty() && !matches!(operator, Operator::FilterProject) {
        return Err(EngineError::Plan(
            "Table functions (EXPLODE) cannot be used with aggregations.".into(),
        ));
    }
    let sink_partitions = properties.get("PARTITIONS").and_then(|p| p.parse().ok());
    Ok(PersistentPlan {
        input_schema: source.schema_with_window(windowed || source.window.is_some()),
        source,
        sink,
        filter,
        projection,
        explode,
        operator,
        logical_plan,
        sink_partitions,
        upstream: derived
            .map(|d| d.upstream)
            .unwrap_or_default()
            .into_iter()
            .chain(staged.map(|s| s.upstream).unwrap_or_default())
            .collect(),
    })
}

/// Subqueries inside expressions (`x IN (SELECT ..)`, `EXISTS (SELECT ..)`, `(SELECT ..)`) are
/// refused with what to write instead: over streams their answer would change with every row
/// of the subquery's source, and Eddy has no operator for that yet. Subqueries in FROM are
/// stages ([`stages::derive`]).
fn refuse_expression_subqueries(query: &datafusion::sql::sqlparser::ast::Query) -> Result<()> {
    use datafusion::sql::sqlparser::ast::{visit_expressions, Expr as SqlExpr};
    let mut found = None;
    let _ = visit_expressions(query, |expr| {
        let what = match expr {
            SqlExpr::InSubquery { .. } => "IN (SELECT ...)",
            SqlExpr::Exists { .. } => "EXISTS (SELECT ...)",
            SqlExpr::Subquery(_) => "a scalar subquery (SELECT ...)",
            _ => return std::ops::ControlFlow::Continue(()),
        };
        found = Some((what, expr.to_string()));
        std::ops::ControlFlow::Break(())
    });
    match found {
        None => Ok(()),
        Some((what, expr)) => Err(EngineError::Unsupported(format!(
            "{what} in a streaming query (in `{expr}`): join the subquery's source instead \
             (`FROM s JOIN t ON s.x = t.id`), or select from the subquery in FROM"
        ))),
    }
}

/// Lowers a planned join: each side's key expression from the ON condition, and the joined
/// rows' schema (both sides' columns, then ROWKEY).
fn join_plan(
    spec: &JoinSpec,
    shape: JoinShape,
    filter: Option<Arc<dyn PhysicalExpr>>,
    context: &SessionContext,
) -> Result<JoinPlan> {
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::logical_expr::{BinaryExpr, ExprSchemable, Operator as BinaryOp};
    // The key's equality comes first (see `join::expand`); the others are checked on each
    // pair of rows the key matches.
    let condition = shape.condition.as_ref().ok_or_else(not_equalities)?;
    let mut compared = Vec::new();
    for conjunct in datafusion::logical_expr::utils::split_conjunction(condition) {
        let Expr::BinaryExpr(BinaryExpr {
            left,
            op: BinaryOp::Eq,
            right,
        }) = conjunct
        else {
            return Err(not_equalities());
        };
        let reads_left = |e: &Expr| e.column_refs().iter().all(|c| shape.left.has_column(c));
        compared.push(if reads_left(left) {
            (left.as_ref().clone(), right.as_ref().clone())
        } else {
            (right.as_ref().clone(), left.as_ref().clone())
        });
    }
    let mut compared = compared.into_iter();
    let (left, right) = compared.next().ok_or_else(not_equalities)?;
    let key_type = left.get_type(&shape.left)?;
    let left_key = physical_expr(context, left, &shape.left)?;
    let right_key = physical_expr(context, right, &shape.right)?;
    let mut residual: [Vec<Arc<dyn PhysicalExpr>>; 2] = [Vec::new(), Vec::new()];
    let mut residual_types = Vec::new();
    for (left, right) in compared {
        residual_types.push(left.get_type(&shape.left)?);
        residual[0].push(physical_expr(context, left, &shape.left)?);
        residual[1].push(physical_expr(context, right, &shape.right)?);
    }
    let [left_residual, right_residual] = residual;
    let mut fields: Vec<Field> = shape
        .left
        .fields()
        .iter()
        .chain(shape.right.fields().iter())
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    fields.push(Field::new(join::ROWKEY, key_type, true));
    let side = |source: &Arc<Source>, schema: &DFSchema, key, residual| JoinSide {
        source: Arc::clone(source),
        schema: Arc::new(schema.as_arrow().clone()),
        key,
        residual,
    };
    Ok(JoinPlan {
        kind: spec.kind,
        sides: [
            side(&spec.sources[0], &shape.left, left_key, left_residual),
            side(&spec.sources[1], &shape.right, right_key, right_residual),
        ],
        within: spec.within,
        joined_schema: Arc::new(Schema::new(fields)),
        filter,
        foreign_key: spec.foreign_key,
        left_key_columns: spec.sources[0].key_columns().count(),
        left_window: match spec.sources[0].window {
            Some(_) => {
                let left = shape.left.as_arrow();
                Some([left.index_of(WINDOWSTART)?, left.index_of(WINDOWEND)?])
            }
            None => None,
        },
        table_as_rows: join::windowed_table_rows(spec),
        residual_types,
    })
}

fn not_equalities() -> EngineError {
    EngineError::Plan(
        "a join's ON condition must compare one column or expression of each side with = \
         (several such comparisons may be joined with AND)"
            .into(),
    )
}

/// Replaces each projection item that is `EXPLODE(array)` by the array; returns their indices.
fn take_out_explode(projection: &mut [Arc<dyn PhysicalExpr>]) -> Vec<usize> {
    use datafusion::physical_expr::ScalarFunctionExpr;
    let mut exploded = Vec::new();
    for (index, expr) in projection.iter_mut().enumerate() {
        let argument = expr
            .downcast_ref::<ScalarFunctionExpr>()
            .filter(|f| f.name() == crate::functions::explode::NAME)
            .and_then(|f| f.args().first().cloned());
        if let Some(argument) = argument {
            *expr = argument;
            exploded.push(index);
        }
    }
    exploded
}

/// ksqlDB's error for a projection missing what becomes the key: "The query used to build
/// `OUTPUT` must include the key columns A and B in its projection (eg, SELECT A, B...)."
pub(super) fn must_include(sink: &str, what: &str, missing: &[String]) -> Result<()> {
    let (last, rest) = match missing.split_last() {
        None => return Ok(()),
        Some(split) => split,
    };
    let listed = if rest.is_empty() {
        format!("{what} {last}")
    } else {
        format!("{what}s {} and {last}", rest.join(", "))
    };
    Err(EngineError::Plan(format!(
        "The query used to build `{sink}` must include the {listed} in its projection (eg, SELECT {}...).",
        missing.join(", ")
    )))
}

/// Adds WINDOWSTART and WINDOWEND to a windowed aggregation's GROUP BY: each row is grouped
/// by its key and its window, and the projection may select the window's bounds. Without a
/// GROUP BY the rows are grouped by their window alone (Eddy's extension: ksqlDB requires
/// GROUP BY); the plan must then still aggregate. True when there was no GROUP BY.
fn group_by_window(query: &mut datafusion::sql::sqlparser::ast::Query) -> bool {
    use datafusion::sql::sqlparser::ast::GroupByExpr;
    let SetExpr::Select(select) = query.body.as_mut() else {
        return false;
    };
    match &mut select.group_by {
        GroupByExpr::Expressions(exprs, _) => {
            let ungrouped = exprs.is_empty();
            for name in [WINDOWSTART, WINDOWEND] {
                exprs.push(SqlExpr::Identifier(Ident::with_quote('"', name)));
            }
            ungrouped
        }
        GroupByExpr::All(_) => false,
    }
}

/// DataFusion's refusal of `query` over `sources` in ksqlDB's words where ksqlDB has its own:
/// the SELECT items an aggregation cannot compute, a column no source has.
fn planning_error(
    error: datafusion::error::DataFusionError,
    query: &datafusion::sql::sqlparser::ast::Query,
    sources: &[Arc<Source>],
) -> EngineError {
    let ungrouped = error
        .to_string()
        .contains("Column in SELECT must be in GROUP BY or an aggregate function");
    if let (true, SetExpr::Select(select)) = (ungrouped, query.body.as_ref()) {
        let columns = sources
            .iter()
            .flat_map(|s| s.columns.iter().map(|c| c.name.clone()))
            .collect();
        if let Err(listed) = grouping::check_select(select, &columns) {
            return listed;
        }
    }
    unresolved::column_error(error, query)
}

/// A windowed query that neither groups nor aggregates.
fn window_needs_group_by() -> EngineError {
    EngineError::Plan("WINDOW clause requires a GROUP BY clause with aggregate functions".into())
}

pub(crate) fn quoted(name: &str) -> String {
    format!("\"{name}\"")
}

/// Replaces `*` with the source's columns (ksqlDB's `*` excludes pseudo-columns) and returns the
/// source the query reads.
/// How `*` expands over a single source.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Star {
    /// A pull or push query's `*` over a windowed table shows the window after the key (a
    /// persistent query's does not: its sink's key holds it).
    pub window: bool,
    /// The key columns after the value columns, as ksqlDB orders them under PARTITION BY
    /// (the old key becomes a value column at the end).
    pub keys_last: bool,
}

pub(crate) fn expand_and_find_source(
    query: &mut datafusion::sql::sqlparser::ast::Query,
    catalog: &Catalog,
    star: Star,
) -> Result<Arc<Source>> {
    let SetExpr::Select(select) = query.body.as_mut() else {
        return Err(EngineError::Unsupported(
            "set operations (UNION, ...)".into(),
        ));
    };
    if select.from.len() != 1 || !select.from[0].joins.is_empty() {
        return Err(EngineError::Unsupported("joins".into()));
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
    let mut names = ItemNames::new(source.columns.iter().map(|c| c.name.as_str()));
    for item in std::mem::take(&mut select.projection) {
        match item {
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(_, _) => {
                let window = [WINDOWSTART, WINDOWEND]
                    .into_iter()
                    .filter(|_| star.window && source.window.is_some())
                    .map(str::to_string);
                let keys = source.key_columns().map(|c| c.name.clone());
                // Value and header columns, as declared.
                let values = source
                    .columns
                    .iter()
                    .filter(|c| !c.key)
                    .map(|c| c.name.clone());
                let names: Vec<String> = match star.keys_last {
                    true => values.chain(keys).collect(),
                    false => keys.chain(window).chain(values).collect(),
                };
                projection.extend(names.into_iter().map(|name| {
                    SelectItem::UnnamedExpr(SqlExpr::Identifier(Ident::with_quote('"', name)))
                }));
            }
            // ksqlDB names a column after its field, or KSQL_COL_<n> for other expressions.
            SelectItem::UnnamedExpr(expr) => {
                let alias = match &expr {
                    SqlExpr::Identifier(ident) => ident.value.clone(),
                    SqlExpr::CompoundIdentifier(parts) => {
                        parts.last().map(|p| p.value.clone()).unwrap_or_default()
                    }
                    _ => names.name(&expr),
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

/// An expression ready to evaluate over batches of `schema`. Functions that DataFusion only
/// runs once rewritten (COALESCE becomes a CASE) are rewritten first; nothing else is
/// simplified, so a failing constant still fails per row, as ksqlDB's do. Calls are guarded
/// ([`crate::functions::guard`]): one failing on a row is null there.
fn physical_expr(
    context: &SessionContext,
    expr: Expr,
    schema: &DFSchema,
) -> datafusion::error::Result<Arc<dyn PhysicalExpr>> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
    let simplify = SimplifyContext::builder()
        .with_schema(Arc::new(schema.clone()))
        .build();
    let expr = expr
        .transform_up(|e| match e {
            Expr::ScalarFunction(call) => {
                let function = Arc::clone(&call.func);
                Ok(match function.simplify(call.args, &simplify)? {
                    ExprSimplifyResult::Simplified(rewritten) => Transformed::yes(rewritten),
                    ExprSimplifyResult::Original(args) => Transformed::no(Expr::ScalarFunction(
                        datafusion::logical_expr::expr::ScalarFunction::new_udf(function, args),
                    )),
                })
            }
            other => Ok(Transformed::no(other)),
        })?
        .data;
    crate::functions::guard::guard(context.create_physical_expr(expr, schema)?)
}

/// The parts of a planned SELECT that Eddy's operators run.
struct Shape {
    projection: Vec<Expr>,
    /// The schema the projection (and HAVING) read: the scan's, or the aggregate's output.
    projection_input: DFSchema,
    where_filter: Option<Expr>,
    scan_schema: DFSchema,
    /// GROUP BY expressions, aggregate expressions, HAVING, and the aggregate's output schema.
    aggregate: Option<(Vec<Expr>, Vec<Expr>, Option<Expr>, DFSchema)>,
    /// A join's inputs and condition (`scan_schema` is then the joined rows' schema).
    join: Option<JoinShape>,
    /// Functions OVER windows, innermost Window node's first (the projection reads the
    /// scan's columns, then theirs in this order).
    windows: Option<Vec<Expr>>,
}

struct JoinShape {
    left: DFSchema,
    right: DFSchema,
    condition: Option<Expr>,
}

/// Reads Projection(Filter(HAVING)?(Aggregate?(Filter(WHERE)?(TableScan)))) from the plan.
fn plan_shape(plan: &LogicalPlan) -> Result<Shape> {
    let mut node = plan;
    let mut projection = None;
    let mut pending_filter = None;
    let mut aggregate = None;
    let mut windows: Option<Vec<Expr>> = None;
    // A source read under an alias: its columns are qualified by the alias.
    let mut aliased: Option<DFSchema> = None;
    loop {
        match node {
            LogicalPlan::Window(w) if aggregate.is_none() && pending_filter.is_none() => {
                let mut inner = w.window_expr.clone();
                inner.extend(windows.take().unwrap_or_default());
                windows = Some(inner);
                node = w.input.as_ref();
            }
            LogicalPlan::Projection(p) if projection.is_none() => {
                projection = Some((p.expr.clone(), p.input.schema().as_ref().clone()));
                node = p.input.as_ref();
            }
            LogicalPlan::Filter(f) if pending_filter.is_none() => {
                pending_filter = Some(f.predicate.clone());
                node = f.input.as_ref();
            }
            LogicalPlan::Aggregate(a) if aggregate.is_none() => {
                let having = pending_filter.take();
                aggregate = Some((
                    a.group_expr.clone(),
                    a.aggr_expr.clone(),
                    having,
                    a.schema.as_ref().clone(),
                ));
                node = a.input.as_ref();
            }
            LogicalPlan::SubqueryAlias(a) => {
                aliased = Some(a.schema.as_ref().clone());
                node = a.input.as_ref();
            }
            // The rows the query reads: a source's, or a join's.
            LogicalPlan::Join(_) | LogicalPlan::TableScan(_) => {
                let (scan_schema, join) = match node {
                    LogicalPlan::Join(join) => (
                        join.schema.as_ref().clone(),
                        Some(JoinShape {
                            left: join.left.schema().as_ref().clone(),
                            right: join.right.schema().as_ref().clone(),
                            condition: join.filter.clone(),
                        }),
                    ),
                    _ => (
                        aliased.unwrap_or_else(|| node.schema().as_ref().clone()),
                        None,
                    ),
                };
                let (projection, projection_input) = projection.ok_or_else(|| {
                    EngineError::Internal("a SELECT plans to a projection".into())
                })?;
                return Ok(Shape {
                    projection,
                    projection_input,
                    where_filter: pending_filter,
                    scan_schema,
                    aggregate,
                    join,
                    windows,
                });
            }
            LogicalPlan::Limit(_) => {
                return Err(EngineError::Plan(
                    "LIMIT is not allowed in persistent queries".into(),
                ))
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
    /// The topics the query reads (two for a join).
    pub source_topics: Vec<String>,
    stop: watch::Sender<bool>,
    finished: Arc<std::sync::atomic::AtomicBool>,
    /// Rows the query has read but holds back (OVER windows' rows waiting for the watermark).
    held: Arc<std::sync::atomic::AtomicUsize>,
    /// Why the query stopped on its own, if it did.
    pub failure: QueryFailure,
    /// Whether it filters and projects only (no state): such queries may be replaced.
    pub stateless: bool,
    /// What goes through each of its operators.
    pub metrics: Arc<crate::runtime::QueryMetrics>,
}

impl RunningQuery {
    /// Stops the query's tasks (they finish their current batch).
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Whether the query has read rows it has not yet emitted or dropped: it is not caught up
    /// with its input, although it has committed it.
    pub fn holds_rows(&self) -> bool {
        self.held.load(std::sync::atomic::Ordering::Acquire) > 0
    }

    /// ksqlDB's query state: ERROR once the query failed, RUNNING otherwise.
    pub fn state(&self) -> &'static str {
        match self.failure.get() {
            Some(_) => "ERROR",
            None => "RUNNING",
        }
    }

    /// Waits until the query's tasks have ended, at most `timeout`.
    pub async fn wait_finished(&self, timeout: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.finished() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Whether the query's tasks have ended (stopped, or a push query's caller went away).
    pub fn finished(&self) -> bool {
        self.finished.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// Starts the tasks of a planned query.
pub fn start(
    client: Arc<dyn LogClient>,
    log: Arc<ProcessingLog>,
    writers: &Arc<Writers>,
    query_id: String,
    plan: PersistentPlan,
    output: Output,
) -> RunningQuery {
    let (stop, stopped) = watch::channel(false);
    // Registered now, so that a query started after this one waits for what it writes.
    let writes = matches!(output, Output::Topic).then_some(plan.sink.topic.as_str());
    let activity = Arc::new(QueryActivity::new(writers, writes));
    let writers = Arc::clone(writers);
    let running = RunningQuery {
        statement: plan.sink.statement.clone(),
        sink: plan.sink.name.clone(),
        source_topics: plan.source_topics(),
        stop,
        finished: Default::default(),
        held: Default::default(),
        failure: QueryFailure::default(),
        stateless: matches!(plan.operator, Operator::FilterProject),
        metrics: Default::default(),
    };
    let plan = Arc::new(plan);
    let finished = Arc::clone(&running.finished);
    let held = Arc::clone(&running.held);
    let failure = running.failure.clone();
    let metrics = Arc::clone(&running.metrics);
    tokio::spawn(async move {
        crate::runtime::run_query(
            client,
            log,
            (writers, activity),
            query_id,
            plan,
            output,
            held,
            metrics,
            failure,
            stopped,
        )
        .await;
        finished.store(true, std::sync::atomic::Ordering::Release);
    });
    running
}
