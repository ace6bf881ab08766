//! Joins of more than two sources, run as a chain of two-source joins (ksqlDB's left-deep join
//! tree: each JOIN joins the result of the joins before it to one more source).
//!
//! `FROM A JOIN B ON .. JOIN C ON ..` becomes a stage joining A and B, which writes every column
//! of both, named `<ALIAS>_<COLUMN>` and keyed by their join key, to an internal topic
//! (`_eddy_<query id>_S1_output`), and the query itself, which joins that stage's rows (under
//! the alias [`STAGE_ALIAS`]) to C, its column references rewritten to the stage's columns.
//! Each stage is planned as any two-source join is (so its errors are the same), and runs with
//! its own placement and repartition topics; all of a query's stages commit in its consumer
//! group and end with it.
//!
//! ksqlDB's naming and key rules hold over all the sources: the result is keyed by the last
//! join's key, and any column the join conditions make equal to it (its join equivalence set:
//! `A.ID`, `B.ID` and `C.ID` in `A JOIN B ON A.ID = B.ID JOIN C ON A.ID = C.ID`) may name the
//! key in the projection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use datafusion::sql::sqlparser::ast::{
    visit_expressions_mut, BinaryOperator, Expr as SqlExpr, GroupByExpr, Ident, JoinConstraint,
    JoinOperator, ObjectName, ObjectNamePart, Query, Select, SelectItem, SetExpr, TableAlias,
    TableFactor,
};

use super::join::{self, JoinKind, ROWKEY};
use super::PersistentPlan;
use crate::catalog::{Catalog, Source};
use crate::error::{EngineError, Result};
use crate::parser::{JoinWithin, Properties, SelectQuery, SourceKind};

/// The alias of the previous stage's rows in the join that reads them.
pub const STAGE_ALIAS: &str = "__J";

/// Stands for the query id in a stage's topic until the query starts ([`bind`]).
const QUERY_ID: &str = "{query}";

/// The topic stage `stage` of query `query_id` writes its rows to.
pub fn stage_topic(query_id: &str, stage: usize) -> String {
    format!("_eddy_{query_id}_S{stage}_output")
}

/// What a stage's tasks name their internal topics after (`<query id>_S<n>`), from its plan.
pub fn stage_tasks_name(stage: &PersistentPlan) -> String {
    let topic = &stage.sink.topic;
    topic
        .strip_prefix("_eddy_")
        .and_then(|t| t.strip_suffix("_output"))
        .unwrap_or(topic)
        .to_string()
}

/// The next stage's name, and the properties of its sink: an internal topic of JSON values.
/// Stages are numbered in the order planning meets them, so a statement's stages are named
/// the same each time it is planned.
fn stage_sink(numbers: &AtomicUsize) -> Result<(String, Properties)> {
    let number = numbers.fetch_add(1, Ordering::Relaxed) + 1;
    if number > crate::limits::STAGES_PER_QUERY_MAX {
        return Err(too_many_stages());
    }
    let properties = Properties::from([
        ("KAFKA_TOPIC".to_string(), stage_topic(QUERY_ID, number)),
        ("VALUE_FORMAT".to_string(), "JSON".to_string()),
    ]);
    Ok((format!("__EDDY_STAGE_{number}"), properties))
}

fn too_many_stages() -> EngineError {
    let max = crate::limits::STAGES_PER_QUERY_MAX;
    EngineError::Plan(format!(
        "the query needs more than {max} stages (each join of more than two sources but the \
         last, and each subquery in FROM, is one; limit sql.query.stages.max): split it into \
         several queries"
    ))
}

/// Whether a query reads a subquery in FROM (a derived table).
pub fn has_derived(query: &Query) -> bool {
    match query.body.as_ref() {
        SetExpr::Select(select) => select.from.iter().any(|from| {
            std::iter::once(&from.relation)
                .chain(from.joins.iter().map(|j| &j.relation))
                .any(|r| matches!(r, TableFactor::Derived { .. }))
        }),
        _ => false,
    }
}

/// A query whose derived tables are stages: each subquery in FROM is planned as a query of its
/// own writing to an internal topic, and read as a source under the subquery's alias.
pub struct Derived {
    pub query: SelectQuery,
    pub catalog: Catalog,
    pub upstream: Vec<PersistentPlan>,
}

/// Plans each derived table of `original` as a stage.
pub async fn derive(
    catalog: &Catalog,
    original: &SelectQuery,
    statement: &str,
    numbers: &AtomicUsize,
) -> Result<Derived> {
    let mut query = original.clone();
    let mut catalog = catalog.clone();
    let mut upstream = Vec::new();
    let SetExpr::Select(select) = query.query.body.as_mut() else {
        return Err(EngineError::Unsupported(
            "set operations (UNION, ...)".into(),
        ));
    };
    // Each FROM item: (which FROM, which JOIN of it or none).
    let positions: Vec<(usize, Option<usize>)> = select
        .from
        .iter()
        .enumerate()
        .flat_map(|(f, from)| {
            std::iter::once((f, None)).chain((0..from.joins.len()).map(move |j| (f, Some(j))))
        })
        .collect();
    for (f, j) in positions {
        let factor = match j {
            None => &mut select.from[f].relation,
            Some(j) => &mut select.from[f].joins[j].relation,
        };
        let TableFactor::Derived {
            lateral,
            subquery,
            alias,
            ..
        } = factor
        else {
            continue;
        };
        if *lateral {
            return Err(EngineError::Unsupported("LATERAL subqueries".into()));
        }
        if subquery.order_by.is_some() || subquery.limit_clause.is_some() {
            return Err(EngineError::Plan(
                "A subquery in FROM cannot have ORDER BY or LIMIT: a continuous query's rows \
                 have no end to order or count them by."
                    .into(),
            ));
        }
        let inner = SelectQuery {
            query: subquery.clone(),
            window: None,
            emit: None,
            partition_by: Vec::new(),
            within: Vec::new(),
        };
        let (kind, grouped) = result_kind(&inner.query, &catalog)?;
        let (name, properties) = stage_sink(numbers)?;
        // A stream's rows need no key (a later GROUP BY or join keys them again); a table's
        // rows are keyed by its primary key or its GROUP BY.
        let keyless = kind == SourceKind::Stream && !grouped;
        let mut plan = super::plan_select(
            &catalog,
            kind,
            &name,
            &properties,
            &inner,
            statement,
            keyless,
            numbers,
        )
        .await?;
        upstream.append(&mut plan.upstream);
        catalog.insert(plan.sink.clone());
        upstream.push(plan);
        let alias = alias.take().unwrap_or_else(|| TableAlias {
            explicit: true,
            name: Ident::with_quote('"', name.clone()),
            columns: vec![],
            at: None,
        });
        *factor = TableFactor::Table {
            name: ObjectName(vec![ObjectNamePart::Identifier(Ident::with_quote(
                '"', name,
            ))]),
            alias: Some(alias),
            args: None,
            with_hints: vec![],
            version: None,
            with_ordinality: false,
            partitions: vec![],
            json_path: None,
            sample: None,
            index_hints: vec![],
        };
    }
    Ok(Derived {
        query,
        catalog,
        upstream,
    })
}

/// Whether a SELECT's rows are a stream or a table, and whether it groups: a GROUP BY makes a
/// table; otherwise a single source's kind, or a join's (a table when all its sources are).
fn result_kind(query: &Query, catalog: &Catalog) -> Result<(SourceKind, bool)> {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Err(EngineError::Unsupported(
            "set operations (UNION, ...)".into(),
        ));
    };
    if matches!(&select.group_by, GroupByExpr::Expressions(e, _) if !e.is_empty()) {
        return Ok((SourceKind::Table, true));
    }
    let mut all_tables = true;
    for from in &select.from {
        for factor in std::iter::once(&from.relation).chain(from.joins.iter().map(|j| &j.relation))
        {
            let kind = match factor {
                TableFactor::Table { name, .. } => match name.0.last() {
                    Some(ObjectNamePart::Identifier(ident)) => catalog.get(&ident.value)?.kind,
                    _ => return Err(EngineError::Plan(format!("bad source name {name}"))),
                },
                TableFactor::Derived { subquery, .. } => result_kind(subquery, catalog)?.0,
                _ => return Err(EngineError::Unsupported("this kind of FROM item".into())),
            };
            all_tables &= kind == SourceKind::Table;
        }
    }
    Ok((
        match all_tables {
            true => SourceKind::Table,
            false => SourceKind::Stream,
        },
        false,
    ))
}

/// What the last join of a chain needs to follow ksqlDB's rules over all of its sources.
pub struct Chain {
    /// The columns equal to the join key (ksqlDB's viable key columns), as `(alias, column)`
    /// of the rewritten query.
    pub key_columns: Vec<(String, String)>,
    /// Each of them as the statement names it (`A.ID`), for errors.
    pub key_names: Vec<String>,
    /// Projection items named after a qualified column: their index and `<ALIAS>_<COLUMN>`.
    pub qualified: Vec<(usize, String)>,
    /// The last join's condition as written, its columns qualified, for errors.
    pub condition: String,
}

/// A query with more than one JOIN, split: the stages before its last join, and what planning
/// its last join needs.
pub struct Staged {
    /// The stages, first join first; the last one's rows are the left side of the query.
    pub upstream: Vec<PersistentPlan>,
    /// The catalog with the last stage as a source.
    pub catalog: Catalog,
    pub chain: Chain,
    /// The last join's WITHIN.
    pub within: Vec<Option<JoinWithin>>,
}

/// The number of JOINs in a query's FROM.
pub fn join_count(query: &Query) -> usize {
    match query.body.as_ref() {
        SetExpr::Select(select) if select.from.len() == 1 => select.from[0].joins.len(),
        _ => 0,
    }
}

/// Splits `ast` (already rewritten into DataFusion's spelling; `original` is the query as
/// parsed) into the stages before its last join, and rewrites `ast` into a join of the last
/// stage's rows to the last source.
pub async fn split(
    catalog: &Catalog,
    ast: &mut Query,
    original: &SelectQuery,
    statement: &str,
    numbers: &AtomicUsize,
) -> Result<Staged> {
    let SetExpr::Select(select) = ast.body.as_mut() else {
        return Err(EngineError::Internal("a join without a SELECT".into()));
    };
    let joins = select.from[0].joins.len();
    if joins - 1 > crate::limits::STAGES_PER_QUERY_MAX {
        return Err(too_many_stages());
    }
    let mut sources = vec![join::relation(&mut select.from[0].relation, catalog)?];
    for join in &mut select.from[0].joins {
        sources.push(join::relation(&mut join.relation, catalog)?);
    }
    for (i, (source, _)) in sources.iter().enumerate() {
        if let Some((other, _)) = sources[..i].iter().find(|(s, _)| s.name == source.name) {
            return Err(EngineError::Plan(format!(
                "Can not join '{}' to '{}': self joins are not yet supported.",
                other.name, source.name
            )));
        }
    }
    let names = Names { sources: &sources };
    let last = joins;
    let conditions: Vec<(JoinKind, Option<(SqlExpr, SqlExpr)>)> = select.from[0]
        .joins
        .iter()
        .enumerate()
        .map(|(j, join)| names.condition(join, j + 1))
        .collect();

    // The stage: the joins before the last, every column of their sources.
    let stage = joins - 1; // the joins the stage runs
    let mut stage_query = original.query.as_ref().clone();
    let mut stage_select = match stage_query.body.as_ref() {
        SetExpr::Select(select) => select.as_ref().clone(),
        _ => return Err(EngineError::Internal("a join without a SELECT".into())),
    };
    stage_select.from[0].joins.truncate(stage);
    stage_select.selection = None;
    stage_select.having = None;
    stage_select.distinct = None;
    stage_select.group_by = GroupByExpr::Expressions(vec![], vec![]);
    let mut items = Vec::new();
    if matches!(&conditions[stage - 1], (kind, operands) if is_synthetic(*kind, operands.as_ref()))
    {
        items.push(SelectItem::ExprWithAlias {
            expr: SqlExpr::Identifier(Ident::new(ROWKEY)),
            alias: Ident::with_quote('"', format!("{ROWKEY}_S{stage}")),
        });
    }
    for (source, alias) in &sources[..last] {
        for column in &source.columns {
            items.push(SelectItem::ExprWithAlias {
                expr: SqlExpr::CompoundIdentifier(vec![
                    Ident::with_quote('"', alias.clone()),
                    Ident::with_quote('"', column.name.clone()),
                ]),
                alias: Ident::with_quote('"', format!("{alias}_{}", column.name)),
            });
        }
    }
    stage_select.projection = items;
    stage_query.body = Box::new(SetExpr::Select(Box::new(stage_select)));
    stage_query.order_by = None;
    stage_query.limit_clause = None;
    let stage_select_query = SelectQuery {
        query: Box::new(stage_query),
        window: None,
        emit: None,
        partition_by: Vec::new(),
        within: original.within.iter().take(stage).cloned().collect(),
    };
    let kind = match sources[..last]
        .iter()
        .all(|(s, _)| s.kind == SourceKind::Table)
    {
        true => SourceKind::Table,
        false => SourceKind::Stream,
    };
    let (stage_name, properties) = stage_sink(numbers)?;
    let mut stage_plan = super::plan_select(
        catalog,
        kind,
        &stage_name,
        &properties,
        &stage_select_query,
        statement,
        false,
        numbers,
    )
    .await?;
    let mut upstream = std::mem::take(&mut stage_plan.upstream);
    let stage_source = stage_plan.sink.clone();
    let stage_key = stage_source.key_columns().next().map(|c| c.name.clone());
    upstream.push(stage_plan);
    let mut staged_catalog = catalog.clone();
    staged_catalog.insert(stage_source);

    let (viable, before_last) = viable_keys(&names, &conditions);
    let (last_kind, last_operands) = &conditions[last - 1];
    let condition = match last_operands {
        Some((left, right)) => format!("{} = {}", names.canonical(left), names.canonical(right)),
        None => String::new(),
    };
    let chain = Chain {
        key_columns: viable
            .iter()
            .map(|(source, column)| names.rewritten(*source, column, last))
            .collect(),
        key_names: viable
            .iter()
            .map(|(source, column)| format!("{}.{column}", sources[*source].1))
            .collect(),
        qualified: name_items(select, &names, last, *last_kind, last_operands.as_ref()),
        condition,
    };

    // The query: the stage's rows joined to the last source.
    if let TableFactor::Table { name, alias, .. } = &mut select.from[0].relation {
        *name = ObjectName(vec![ObjectNamePart::Identifier(Ident::with_quote(
            '"', stage_name,
        ))]);
        *alias = Some(TableAlias {
            explicit: true,
            name: Ident::with_quote('"', STAGE_ALIAS),
            columns: vec![],
            at: None,
        });
    }
    select.from[0].joins.drain(..last - 1);
    // A column of the join condition equal to the stage's key is its key column, so that a
    // table's rows are joined by their primary key.
    if let (Some(key), Some(operator)) = (&stage_key, select.from[0].joins.first_mut()) {
        if let Some(condition) = super::join::constraint_mut(&mut operator.join_operator) {
            let mut operands = Vec::new();
            equality_operands(condition, &mut operands);
            for operand in operands {
                if names
                    .column(operand)
                    .is_some_and(|(source, _)| source < last)
                    && before_last.contains(&names.canonical(operand))
                {
                    *operand = SqlExpr::CompoundIdentifier(vec![
                        Ident::with_quote('"', STAGE_ALIAS),
                        Ident::with_quote('"', key.clone()),
                    ]);
                }
            }
        }
    }
    let mut failure = None;
    let _ = visit_expressions_mut(select.as_mut(), |expr| {
        if let Err(e) = names.rewrite(expr, last) {
            failure.get_or_insert(e);
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(Staged {
        upstream,
        catalog: staged_catalog,
        chain,
        within: vec![original.within.get(last - 1).copied().flatten()],
    })
}

/// ksqlDB's viable key columns of a chain of joins (JoinTree.java): the columns the join
/// conditions make equal to the result's key, as (source, column); and the equivalence set of
/// the joins before the last (the expressions equal to the last stage's key).
fn viable_keys(
    names: &Names,
    conditions: &[(JoinKind, Option<(SqlExpr, SqlExpr)>)],
) -> (Vec<(usize, String)>, Vec<String>) {
    let sources = names.sources;
    let mut equivalent: Vec<String> = Vec::new();
    let mut viable: Vec<(usize, String)> = Vec::new();
    let mut before_last = Vec::new();
    for (j, (kind, operands)) in conditions.iter().enumerate() {
        if j + 1 == conditions.len() {
            before_last = equivalent.clone();
        }
        // A FULL OUTER join's key equals neither side (either may be null).
        let Some((left, right)) = operands.as_ref().filter(|_| *kind != JoinKind::Full) else {
            equivalent.clear();
            viable.clear();
            continue;
        };
        if j == 0 {
            // A foreign-key join (of two tables, not on the left table's primary key) is keyed
            // by the left table's primary key: that is what equals its key.
            let (first, alias) = &sources[0];
            let tables = sources[..2]
                .iter()
                .all(|(s, _)| s.kind == SourceKind::Table);
            let left_key: Vec<&str> = first.key_columns().map(|c| c.name.as_str()).collect();
            let on_left_key = matches!((names.column(left), left_key.as_slice()),
                (Some((0, column)), [key]) if column == *key);
            if tables && !on_left_key {
                equivalent = left_key.iter().map(|k| format!("{alias}.{k}")).collect();
                viable = left_key.iter().map(|k| (0, k.to_string())).collect();
                continue;
            }
        }
        let keys = [names.canonical(left), names.canonical(right)];
        let mut next: Vec<String> = keys.to_vec();
        if equivalent.iter().any(|e| keys.contains(e)) {
            next.extend(equivalent.iter().cloned());
        }
        let mut candidates = std::mem::take(&mut viable);
        candidates.extend(names.column(left));
        candidates.extend(names.column(right));
        for candidate in candidates {
            let (source, column) = &candidate;
            let text = format!("{}.{column}", sources[*source].1);
            if next.contains(&text) && !viable.contains(&candidate) {
                viable.push(candidate);
            }
        }
        equivalent = next;
    }
    (viable, before_last)
}

/// A query's sources and aliases, in FROM order, and how its column references resolve.
struct Names<'a> {
    sources: &'a [(Arc<Source>, String)],
}

impl Names<'_> {
    /// The source `qualifier` names (by alias or by name).
    fn named(&self, qualifier: &str) -> Option<usize> {
        self.sources
            .iter()
            .position(|(_, alias)| alias == qualifier)
            .or_else(|| self.sources.iter().position(|(s, _)| s.name == qualifier))
    }

    /// The sources that have a column of that name.
    fn owners(&self, column: &str) -> Vec<usize> {
        (0..self.sources.len())
            .filter(|i| self.sources[*i].0.columns.iter().any(|c| c.name == column))
            .collect()
    }

    /// The source and column a plain column reference reads.
    fn column(&self, expr: &SqlExpr) -> Option<(usize, String)> {
        match expr {
            SqlExpr::Identifier(ident) => match self.owners(&ident.value).as_slice() {
                [source] => Some((*source, ident.value.clone())),
                _ => None,
            },
            SqlExpr::CompoundIdentifier(parts) if parts.len() == 2 => {
                let source = self.named(&parts[0].value)?;
                Some((source, parts[1].value.clone()))
            }
            SqlExpr::Nested(inner) => self.column(inner),
            _ => None,
        }
    }

    /// An expression with its columns qualified by their source's alias, unquoted: the same
    /// text for the same value, whichever way the statement spells it.
    fn canonical(&self, expr: &SqlExpr) -> String {
        let mut expr = expr.clone();
        let _ = visit_expressions_mut(&mut expr, |e| {
            if let Some((source, column)) = self.column(e) {
                *e = SqlExpr::CompoundIdentifier(vec![
                    Ident::new(self.sources[source].1.clone()),
                    Ident::new(column),
                ]);
            }
            std::ops::ControlFlow::<()>::Continue(())
        });
        expr.to_string()
    }

    /// A join's kind and its condition's operands, the previous sources' first and source
    /// `right`'s second (`None` when the condition is not one equality of the two).
    fn condition(
        &self,
        join: &datafusion::sql::sqlparser::ast::Join,
        right: usize,
    ) -> (JoinKind, Option<(SqlExpr, SqlExpr)>) {
        let (kind, constraint) = match &join.join_operator {
            JoinOperator::Left(c) | JoinOperator::LeftOuter(c) => (JoinKind::Left, c),
            JoinOperator::Right(c) | JoinOperator::RightOuter(c) => (JoinKind::Right, c),
            JoinOperator::FullOuter(c) => (JoinKind::Full, c),
            JoinOperator::Join(c) | JoinOperator::Inner(c) => (JoinKind::Inner, c),
            _ => return (JoinKind::Inner, None),
        };
        let JoinConstraint::On(condition) = constraint else {
            return (kind, None);
        };
        let reads_right = |e: &SqlExpr| {
            let mut found = false;
            let mut e = e.clone();
            let _ = visit_expressions_mut(&mut e, |e| {
                if self.column(e).is_some_and(|(s, _)| s == right) {
                    found = true;
                }
                std::ops::ControlFlow::<()>::Continue(())
            });
            found
        };
        // Each equality's operands, the earlier sources' first.
        let mut compared = Vec::new();
        for conjunct in super::join::conjuncts(condition) {
            let SqlExpr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right: other,
            } = conjunct
            else {
                return (kind, None);
            };
            let (left, other) = (*left, *other);
            compared.push(match (reads_right(&left), reads_right(&other)) {
                (false, true) => (left, other),
                (true, false) => (other, left),
                _ => return (kind, None),
            });
        }
        // Of several, a table's primary key comparison keys the join, as in `join::expand`.
        let table = &self.sources[right].0;
        let primary = |e: &SqlExpr| {
            table.kind == crate::parser::SourceKind::Table
                && self.column(e).is_some_and(|(s, column)| {
                    s == right && table.key_columns().any(|k| k.name == column)
                })
        };
        let key = compared.iter().position(|(_, r)| primary(r)).unwrap_or(0);
        (kind, compared.into_iter().nth(key))
    }

    /// Column `column` of source `source` in the query joining the stage to source `last`.
    fn rewritten(&self, source: usize, column: &str, last: usize) -> (String, String) {
        match source < last {
            true => (
                STAGE_ALIAS.to_string(),
                format!("{}_{column}", self.sources[source].1),
            ),
            false => (self.sources[source].1.clone(), column.to_string()),
        }
    }

    /// Rewrites a reference to a column of an earlier source into one to the stage's column.
    fn rewrite(&self, expr: &mut SqlExpr, last: usize) -> Result<()> {
        let stage_column = |column: String| {
            SqlExpr::CompoundIdentifier(vec![
                Ident::with_quote('"', STAGE_ALIAS),
                Ident::with_quote('"', column),
            ])
        };
        match expr {
            SqlExpr::Identifier(ident) if !is_pseudo_column(&ident.value) => {
                match self.owners(&ident.value).as_slice() {
                    [] => {}
                    [source] if *source == last => {}
                    [source] => {
                        let (_, column) = self.rewritten(*source, &ident.value, last);
                        *expr = stage_column(column);
                    }
                    several => {
                        let candidates: Vec<String> = several
                            .iter()
                            .map(|s| format!("{}.{}", self.sources[*s].1, ident.value))
                            .collect();
                        return Err(EngineError::Plan(format!(
                            "Column '{}' is ambiguous. Could be {}.",
                            ident.value,
                            candidates.join(" or ")
                        )));
                    }
                }
            }
            SqlExpr::CompoundIdentifier(parts) if parts.len() == 2 => {
                let Some(source) = self.named(&parts[0].value).filter(|s| *s < last) else {
                    return Ok(());
                };
                let column = parts[1].value.clone();
                if is_pseudo_column(&column) {
                    *expr = stage_column(column);
                } else if self.sources[source]
                    .0
                    .columns
                    .iter()
                    .any(|c| c.name == column)
                {
                    *expr = stage_column(self.rewritten(source, &column, last).1);
                } else {
                    return Err(EngineError::Plan(format!(
                        "Column '{}.{column}' cannot be resolved.",
                        parts[0].value
                    )));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Names the projection's items as ksqlDB does over all the sources (before their references
/// are rewritten): `*` and `A.*` expand to `<ALIAS>_<COLUMN>` items, a column keeps its name,
/// and a qualified column is named after it unless several sources have one of that name.
/// Returns the items named after a qualified column, with their qualified name.
fn name_items(
    select: &mut Select,
    names: &Names,
    last: usize,
    kind: JoinKind,
    operands: Option<&(SqlExpr, SqlExpr)>,
) -> Vec<(usize, String)> {
    let column_item = |source: usize, column: &str| {
        let alias = &names.sources[source].1;
        SelectItem::ExprWithAlias {
            expr: SqlExpr::CompoundIdentifier(vec![
                Ident::with_quote('"', alias.clone()),
                Ident::with_quote('"', column.to_string()),
            ]),
            alias: Ident::with_quote('"', format!("{alias}_{column}")),
        }
    };
    let mut projection = Vec::with_capacity(select.projection.len());
    let mut qualified = Vec::new();
    for item in std::mem::take(&mut select.projection) {
        match item {
            SelectItem::Wildcard(_) => {
                if is_synthetic(kind, operands) {
                    projection.push(SelectItem::UnnamedExpr(SqlExpr::Identifier(Ident::new(
                        ROWKEY,
                    ))));
                }
                for (source, (s, _)) in names.sources.iter().enumerate().take(last + 1) {
                    for column in &s.columns {
                        projection.push(column_item(source, &column.name));
                    }
                }
            }
            SelectItem::QualifiedWildcard(qualifier, options) => {
                let text = qualifier.to_string();
                let text = text.trim_end_matches(".*").trim_matches('"');
                match names.named(text) {
                    Some(source) => {
                        for column in &names.sources[source].0.columns {
                            projection.push(column_item(source, &column.name));
                        }
                    }
                    None => projection.push(SelectItem::QualifiedWildcard(qualifier, options)),
                }
            }
            SelectItem::UnnamedExpr(SqlExpr::Identifier(ident))
                if !names.owners(&ident.value).is_empty() =>
            {
                projection.push(SelectItem::ExprWithAlias {
                    alias: Ident::with_quote('"', ident.value.clone()),
                    expr: SqlExpr::Identifier(ident),
                });
            }
            SelectItem::UnnamedExpr(SqlExpr::CompoundIdentifier(parts))
                if parts.len() == 2 && names.named(&parts[0].value).is_some() =>
            {
                let column = parts[1].value.clone();
                let full = format!("{}_{column}", parts[0].value);
                qualified.push((projection.len(), full.clone()));
                let alias = match names.owners(&column).len() > 1 || is_pseudo_column(&column) {
                    true => full,
                    false => column,
                };
                projection.push(SelectItem::ExprWithAlias {
                    expr: SqlExpr::CompoundIdentifier(parts),
                    alias: Ident::with_quote('"', alias),
                });
            }
            other => projection.push(other),
        }
    }
    select.projection = projection;
    qualified
}

/// Whether a join's key is the synthetic ROWKEY: a FULL OUTER join, or a condition whose
/// operands are both expressions other than a column.
fn is_synthetic(kind: JoinKind, operands: Option<&(SqlExpr, SqlExpr)>) -> bool {
    let is_column = |e: &SqlExpr| {
        matches!(e, SqlExpr::Identifier(_))
            || matches!(e, SqlExpr::CompoundIdentifier(parts) if parts.len() == 2)
    };
    kind == JoinKind::Full || operands.is_some_and(|(l, r)| !is_column(l) && !is_column(r))
}

fn is_pseudo_column(column: &str) -> bool {
    crate::catalog::is_pseudo_column(column) || column == ROWKEY
}

/// The operands of the equalities a condition joins with AND.
fn equality_operands<'a>(condition: &'a mut SqlExpr, operands: &mut Vec<&'a mut SqlExpr>) {
    match condition {
        SqlExpr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } => operands.extend([left.as_mut(), right.as_mut()]),
        SqlExpr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            equality_operands(left, operands);
            equality_operands(right, operands);
        }
        SqlExpr::Nested(inner) => equality_operands(inner, operands),
        _ => {}
    }
}

/// `plan` with its stages' topics named after query `query_id`.
pub fn bind(plan: &PersistentPlan, query_id: &str) -> PersistentPlan {
    let source = |s: &Arc<Source>| -> Arc<Source> {
        match s.topic.contains(QUERY_ID) {
            true => Arc::new(Source {
                topic: s.topic.replace(QUERY_ID, query_id),
                ..(**s).clone()
            }),
            false => Arc::clone(s),
        }
    };
    let mut bound = plan.clone();
    bound.source = source(&plan.source);
    bound.sink.topic = plan.sink.topic.replace(QUERY_ID, query_id);
    let join = match &mut bound.operator {
        super::Operator::Join(join) => Some(join),
        super::Operator::Aggregate(aggregate) => aggregate.join.as_mut(),
        _ => None,
    };
    if let Some(join) = join {
        for side in &mut join.sides {
            side.source = source(&side.source);
        }
    }
    bound.upstream = plan.upstream.iter().map(|s| bind(s, query_id)).collect();
    bound
}

/// A stage's topic as EXPLAIN shows it before the query has an id.
pub fn display_topic(topic: &str) -> String {
    topic.replace(QUERY_ID, "<query id>")
}

/// Whether `topic` is the output of one of a query's stages (its id not yet bound).
pub fn is_unbound(topic: &str) -> bool {
    topic.contains(QUERY_ID)
}
