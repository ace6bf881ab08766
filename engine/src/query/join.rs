//! Planning a join of two sources: which sources and aliases, what kind of join, what the
//! ON condition joins on, what the projection's columns are called and which one is the key.
//!
//! ksqlDB's rules, which this follows:
//! - the result is keyed by the join key. A projection item that reads a column the ON
//!   condition compares (either side's, `L.A` or `R.A`) names the key; when neither side of the
//!   condition is a plain column, or for a FULL OUTER join, the key is the synthetic `ROWKEY`
//!   (`COALESCE` of both sides' key for FULL OUTER), which the projection must select;
//! - `*` expands to every column of both sides named `<ALIAS>_<COLUMN>` (and ROWKEY first for a
//!   synthetic key), `A.*` to one side's; `A.COLUMN` is named `COLUMN`, or `A_COLUMN` when both
//!   sides have such a column.

use std::sync::Arc;

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr as SqlExpr, Ident, JoinConstraint, JoinOperator, ObjectNamePart, Select,
    SelectItem, TableFactor,
};

use crate::catalog::{is_pseudo_column, Catalog, Source};
use crate::error::{EngineError, Result};
use crate::parser::{JoinWithin, SourceKind};
use crate::query::stages::Chain;
use crate::query::ItemNames;

/// ROWKEY: the synthetic key column of a join whose key is not a source column.
pub const ROWKEY: &str = "ROWKEY";

/// INNER, LEFT, RIGHT or FULL OUTER.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    Inner,
    Left,
    Right,
    Full,
}

impl JoinKind {
    /// Whether rows of `side` (0 left, 1 right) appear in the result without a match.
    pub fn keeps_unmatched(self, side: usize) -> bool {
        matches!(
            (self, side),
            (JoinKind::Left, 0) | (JoinKind::Right, 1) | (JoinKind::Full, _)
        )
    }
}

/// What planning learned about a join from the SQL.
pub struct JoinSpec {
    /// Left and right sources.
    pub sources: [Arc<Source>; 2],
    pub aliases: [String; 2],
    pub kind: JoinKind,
    pub within: Option<JoinWithin>,
    /// Whether the key is the synthetic ROWKEY.
    pub synthetic_key: bool,
    /// A foreign-key table-table join: keyed by the left table's primary key columns.
    pub foreign_key: bool,
    /// The columns the ON condition compares that may name the key, as `(alias, column)`.
    pub key_columns: Vec<(String, String)>,
    /// The key columns as the statement names them (`ALIAS.COLUMN`), for errors.
    pub key_names: Vec<String>,
    /// The projection items (after expansion) that name the key, in order, with what they
    /// read (`ALIAS.COLUMN`, or ROWKEY).
    pub key_items: Vec<(usize, String)>,
    /// Whether the ON condition compares more than the key: its other equalities are checked
    /// on each pair of rows the key matches (the key's comparison comes first in the SQL).
    pub residual: bool,
}

/// Reads the join in `select`'s FROM, expands `*`, names the projection's items and replaces
/// ROWKEY by the join key's expression.
///
/// The last join of a chain of joins ([`super::stages`]) reads the previous stage's rows on its
/// left; `chain` then says which columns may name the key, and how the statement named them.
pub fn expand(
    select: &mut Select,
    catalog: &Catalog,
    within: &[Option<JoinWithin>],
    chain: Option<&Chain>,
) -> Result<JoinSpec> {
    if select.from.len() != 1 || select.from[0].joins.len() != 1 {
        return Err(EngineError::Unsupported(
            "joins of more than two sources in one query (join the result of a join instead)"
                .into(),
        ));
    }
    let from = &mut select.from[0];
    let (left, left_alias) = relation(&mut from.relation, catalog)?;
    let join = &mut from.joins[0];
    let (right, right_alias) = relation(&mut join.relation, catalog)?;
    if left.name == right.name {
        return Err(EngineError::Plan(format!(
            "Can not join '{}' to '{}': self joins are not yet supported.",
            left.name, right.name
        )));
    }
    let (kind, constraint) = match &join.join_operator {
        JoinOperator::Join(c) | JoinOperator::Inner(c) => (JoinKind::Inner, c),
        JoinOperator::Left(c) | JoinOperator::LeftOuter(c) => (JoinKind::Left, c),
        JoinOperator::Right(c) | JoinOperator::RightOuter(c) => (JoinKind::Right, c),
        JoinOperator::FullOuter(c) => (JoinKind::Full, c),
        other => {
            return Err(EngineError::Unsupported(format!("{other:?} joins")));
        }
    };
    let JoinConstraint::On(condition) = constraint else {
        return Err(EngineError::Plan("a join needs an ON condition".into()));
    };
    let condition = &condition.clone();
    let sources = [left, right];
    let aliases = [left_alias, right_alias];
    // The condition: one equality, or several joined with AND, each comparing an expression
    // of one source with an expression of the other.
    let conjuncts = conjuncts(condition);
    if conjuncts.iter().any(|c| !is_equality(c)) {
        return Err(EngineError::Plan(format!(
            "Invalid join condition: a join's ON condition compares an expression of each \
             source with = (several such comparisons may be joined with AND; other conditions \
             belong in WHERE). Got {}.",
            parenthesized(condition)
        )));
    }
    // A qualifier that names neither side is the first thing to report.
    let mut unknown = None;
    let _ = datafusion::sql::sqlparser::ast::visit_expressions(condition, |e| {
        if let SqlExpr::CompoundIdentifier(parts) = e {
            if let Err(e) = side_named(&sources, &aliases, &parts[0].value) {
                unknown.get_or_insert(e);
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    if let Some(e) = unknown {
        return Err(e);
    }
    // Which side each operand reads.
    let side_of = |operand: &SqlExpr| -> Result<usize> {
        let mut sides = Vec::new();
        let mut failure = None;
        let operand = &field_access_qualified(operand);
        let _ = datafusion::sql::sqlparser::ast::visit_expressions(operand, |e| {
            let reference = match e {
                SqlExpr::Identifier(ident) => Some((None, ident.value.clone())),
                SqlExpr::CompoundIdentifier(parts) if parts.len() == 2 => {
                    Some((Some(parts[0].value.clone()), parts[1].value.clone()))
                }
                _ => None,
            };
            if let Some((qualifier, column)) = reference {
                match resolve(&sources, &aliases, qualifier.as_deref(), &column) {
                    Ok(side) => sides.push(side),
                    // An unknown qualifier is the error to report, before any other.
                    Err(e) if e.to_string().contains("not a valid") => failure = Some(e),
                    Err(e) => {
                        failure.get_or_insert(e);
                    }
                }
            }
            std::ops::ControlFlow::<()>::Continue(())
        });
        if let Some(e) = failure {
            return Err(e);
        }
        sides.dedup();
        match sides.as_slice() {
            [side] => Ok(*side),
            _ => Err(EngineError::Plan(format!(
                "Invalid comparison expression '{operand}' in join '({condition})'. Each side of the join comparision must contain references from exactly one source."
            ))),
        }
    };
    // Each comparison's operands, the left source's first.
    let mut compared: Vec<[SqlExpr; 2]> = Vec::with_capacity(conjuncts.len());
    for conjunct in &conjuncts {
        let SqlExpr::BinaryOp {
            left: a, right: b, ..
        } = conjunct
        else {
            continue;
        };
        let (side_a, side_b) = (side_of(a)?, side_of(b)?);
        if side_a == side_b {
            return Err(EngineError::Plan(format!(
                "Invalid comparison expression '{b}' in join '({condition})'. Each side of the join comparision must contain references from exactly one source."
            )));
        }
        compared.push(if side_a == 0 {
            [a.as_ref().clone(), b.as_ref().clone()]
        } else {
            [b.as_ref().clone(), a.as_ref().clone()]
        });
    }
    let column_of = |side: usize, operand: &SqlExpr| -> Option<(String, String)> {
        let name = match operand {
            SqlExpr::Identifier(ident) => ident.value.clone(),
            SqlExpr::CompoundIdentifier(parts) if parts.len() == 2 => parts[1].value.clone(),
            _ => return None,
        };
        Some((aliases[side].clone(), name))
    };
    // A table-table join whose left side is not the left table's primary key joins on a
    // foreign key: the right side must be the right table's primary key, and the result is
    // keyed by the left table's primary key.
    let is_primary_key_of = |side: usize, operand: &SqlExpr| {
        let keys: Vec<&str> = sources[side]
            .key_columns()
            .map(|c| c.name.as_str())
            .collect();
        matches!((keys.as_slice(), column_of(side, operand)),
            ([key], Some((_, column))) if *key == column)
    };
    // Of several comparisons, the one a table's state is keyed by is the join key: the one
    // comparing both tables' primary keys, else the right table's; else the first. The
    // others are checked on each pair of rows the key matches.
    let tables = sources.each_ref().map(|s| s.kind == SourceKind::Table);
    let key_comparison = match tables {
        [true, true] => compared
            .iter()
            .position(|c| is_primary_key_of(0, &c[0]) && is_primary_key_of(1, &c[1]))
            .or_else(|| compared.iter().position(|c| is_primary_key_of(1, &c[1]))),
        [false, true] => compared.iter().position(|c| is_primary_key_of(1, &c[1])),
        _ => None,
    }
    .unwrap_or(0);
    let residual = compared.len() > 1;
    if residual && kind == JoinKind::Full && tables == [true, true] {
        return Err(EngineError::Plan(format!(
            "Invalid join condition: FULL OUTER table-table joins on several conditions are not \
             supported (a key whose rows differ in the other conditions would have two result \
             rows). Got {}.",
            parenthesized(condition)
        )));
    }
    if residual {
        let mut reordered = conjuncts.clone();
        let key = reordered.remove(key_comparison);
        reordered.insert(0, key);
        let rebuilt = reordered
            .into_iter()
            .reduce(|a, b| SqlExpr::BinaryOp {
                left: Box::new(a),
                op: BinaryOperator::And,
                right: Box::new(b),
            })
            .unwrap_or_else(|| condition.clone());
        if let Some(on) = constraint_mut(&mut from.joins[0].join_operator) {
            *on = rebuilt;
        }
    }
    let operands = compared.swap_remove(key_comparison);
    let is_primary_key = |side: usize| is_primary_key_of(side, &operands[side]);
    let foreign_key = sources.iter().all(|s| s.kind == SourceKind::Table) && !is_primary_key(0);
    if let (true, Some(chain)) = (foreign_key, chain) {
        return Err(EngineError::Plan(format!(
            "Invalid join condition: foreign-key table-table joins are not supported as part of \
             n-way joins. Got {}.",
            chain.condition
        )));
    }
    if foreign_key {
        if matches!(kind, JoinKind::Right | JoinKind::Full) {
            let name = if kind == JoinKind::Right {
                "RIGHT"
            } else {
                "FULL"
            };
            return Err(EngineError::Plan(format!(
                "{name} OUTER JOIN on a foreign key is not supported"
            )));
        }
        if !is_primary_key(1) {
            let show = |o: &SqlExpr| qualify(o, &sources, &aliases).to_string().replace('"', "");
            return Err(EngineError::Plan(format!(
                "Invalid join condition: table-table joins require to join on the primary key of \
                 the right input table. Got {} = {}.",
                show(&operands[0]),
                show(&operands[1])
            )));
        }
    }
    let key_columns: Vec<(String, String)> = if foreign_key {
        sources[0]
            .key_columns()
            .map(|c| (aliases[0].clone(), c.name.clone()))
            .collect()
    } else if kind == JoinKind::Full {
        Vec::new()
    } else if let Some(chain) = chain {
        chain.key_columns.clone()
    } else {
        (0..2).filter_map(|s| column_of(s, &operands[s])).collect()
    };
    let key_names = match chain {
        Some(chain) if !foreign_key && kind != JoinKind::Full => chain.key_names.clone(),
        _ => key_columns
            .iter()
            .map(|(alias, column)| format!("{alias}.{column}"))
            .collect(),
    };
    let synthetic_key = key_columns.is_empty();
    // The join key as an expression: what ROWKEY stands for.
    let key_expr = match kind {
        JoinKind::Inner | JoinKind::Left => qualify(&operands[0], &sources, &aliases),
        JoinKind::Right => qualify(&operands[1], &sources, &aliases),
        JoinKind::Full => SqlExpr::Function(datafusion::sql::sqlparser::ast::Function {
            name: datafusion::sql::sqlparser::ast::ObjectName(vec![ObjectNamePart::Identifier(
                Ident::new("coalesce"),
            )]),
            uses_odbc_syntax: false,
            parameters: datafusion::sql::sqlparser::ast::FunctionArguments::None,
            args: datafusion::sql::sqlparser::ast::FunctionArguments::List(
                datafusion::sql::sqlparser::ast::FunctionArgumentList {
                    duplicate_treatment: None,
                    args: operands
                        .iter()
                        .map(|o| {
                            datafusion::sql::sqlparser::ast::FunctionArg::Unnamed(
                                datafusion::sql::sqlparser::ast::FunctionArgExpr::Expr(qualify(
                                    o, &sources, &aliases,
                                )),
                            )
                        })
                        .collect(),
                    clauses: vec![],
                },
            ),
            filter: None,
            null_treatment: None,
            over: None,
            within_group: vec![],
        }),
    };
    let is_rowkey = |e: &SqlExpr| {
        matches!(e, SqlExpr::Identifier(ident) if ident.value == ROWKEY
            && !sources.iter().any(|s| s.columns.iter().any(|c| c.name == ROWKEY)))
    };
    let named = |side: usize, column: &str| -> SelectItem {
        SelectItem::ExprWithAlias {
            expr: SqlExpr::CompoundIdentifier(vec![
                Ident::with_quote('"', aliases[side].clone()),
                Ident::with_quote('"', column.to_string()),
            ]),
            alias: Ident::with_quote('"', format!("{}_{column}", aliases[side])),
        }
    };
    // Whether a column reference is one of the key's columns.
    let reads_key = |expr: &SqlExpr| -> Option<String> {
        let reference = match expr {
            SqlExpr::CompoundIdentifier(parts) if parts.len() == 2 => {
                side_named(&sources, &aliases, &parts[0].value)
                    .ok()
                    .map(|side| (aliases[side].clone(), parts[1].value.clone()))
            }
            SqlExpr::Identifier(ident) => resolve(&sources, &aliases, None, &ident.value)
                .ok()
                .map(|side| (aliases[side].clone(), ident.value.clone())),
            _ => None,
        };
        reference
            .filter(|r| key_columns.contains(r))
            .map(|(alias, column)| format!("{alias}.{column}"))
    };
    let mut projection = Vec::with_capacity(select.projection.len());
    let mut key_items = Vec::new();
    // Items named after a qualified column (`T.ID`), with their qualified name `T_ID`.
    let mut qualified = chain.map(|c| c.qualified.clone()).unwrap_or_default();
    let columns = sources.iter().flat_map(|s| s.columns.iter());
    let mut names = ItemNames::new(columns.map(|c| c.name.as_str()));
    let push_side =
        |projection: &mut Vec<SelectItem>, key_items: &mut Vec<(usize, String)>, side: usize| {
            for column in &sources[side].columns {
                if key_columns.contains(&(aliases[side].clone(), column.name.clone())) {
                    key_items.push((
                        projection.len(),
                        format!("{}.{}", aliases[side], column.name),
                    ));
                }
                projection.push(named(side, &column.name));
            }
        };
    for item in std::mem::take(&mut select.projection) {
        match item {
            SelectItem::Wildcard(_) => {
                if synthetic_key {
                    key_items.push((projection.len(), ROWKEY.to_string()));
                    projection.push(SelectItem::ExprWithAlias {
                        expr: key_expr.clone(),
                        alias: Ident::with_quote('"', ROWKEY),
                    });
                }
                for side in 0..2 {
                    push_side(&mut projection, &mut key_items, side);
                }
            }
            SelectItem::QualifiedWildcard(kind, _) => {
                let qualifier = kind.to_string();
                let qualifier = qualifier.trim_end_matches(".*").trim_matches('"');
                let side = side_named(&sources, &aliases, qualifier)?;
                push_side(&mut projection, &mut key_items, side);
            }
            SelectItem::UnnamedExpr(expr) if is_rowkey(&expr) => {
                key_items.push((projection.len(), ROWKEY.to_string()));
                projection.push(SelectItem::ExprWithAlias {
                    expr: key_expr.clone(),
                    alias: Ident::with_quote('"', ROWKEY),
                });
            }
            SelectItem::ExprWithAlias { expr, alias } if is_rowkey(&expr) => {
                key_items.push((projection.len(), ROWKEY.to_string()));
                projection.push(SelectItem::ExprWithAlias {
                    expr: key_expr.clone(),
                    alias,
                });
            }
            SelectItem::ExprWithAlias { expr, alias } => {
                if let Some(read) = reads_key(&expr) {
                    key_items.push((projection.len(), read));
                }
                projection.push(SelectItem::ExprWithAlias { expr, alias });
            }
            SelectItem::UnnamedExpr(expr) => {
                if let Some(read) = reads_key(&expr) {
                    key_items.push((projection.len(), read));
                }
                let alias = match &expr {
                    SqlExpr::Identifier(ident) => ident.value.clone(),
                    SqlExpr::CompoundIdentifier(parts) if parts.len() == 2 => {
                        let column = &parts[1].value;
                        qualified.push((projection.len(), format!("{}_{column}", parts[0].value)));
                        let on_both = sources
                            .iter()
                            .all(|s| s.columns.iter().any(|c| &c.name == column));
                        if on_both || is_pseudo_column(column) {
                            format!("{}_{column}", parts[0].value)
                        } else {
                            column.clone()
                        }
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
    let spec = JoinSpec {
        sources,
        aliases,
        kind,
        within: within.first().copied().flatten(),
        synthetic_key,
        foreign_key,
        key_columns,
        key_names,
        key_items,
        residual,
    };
    // The key, when a qualified column, is always named with its qualifier (`L.L0` is L_L0).
    if let Some((index, _)) = spec.key_item().filter(|_| !foreign_key) {
        if let Some((_, name)) = qualified.iter().find(|(i, _)| *i == index) {
            if let SelectItem::ExprWithAlias { alias, .. } = &mut projection[index] {
                *alias = Ident::with_quote('"', name.clone());
            }
        }
    }
    select.projection = projection;
    Ok(spec)
}

impl JoinSpec {
    /// The projection item that is the key, and what it reads: the first reading the left
    /// side's key column, else the first reading the right side's.
    pub fn key_item(&self) -> Option<(usize, String)> {
        let prefix = format!("{}.", self.aliases[0]);
        self.key_items
            .iter()
            .find(|(_, read)| read.starts_with(&prefix))
            .or_else(|| self.key_items.first())
            .cloned()
    }
}

/// The result's key format: the left source's, unless it has no key (NONE).
pub fn key_format(spec: &JoinSpec) -> crate::formats::Format {
    use crate::formats::Format;
    spec.sources
        .iter()
        .map(|s| s.key_format)
        .find(|f| *f != Format::None)
        .unwrap_or(Format::Kafka)
}

impl JoinSpec {
    /// A foreign-key join's key: for projection item `index`, its position among the left
    /// table's key columns, if it is the first item reading that column.
    pub fn foreign_key_rank(&self, index: usize) -> Option<usize> {
        let (_, read) = self.key_items.iter().find(|(i, _)| *i == index)?;
        let first = self.key_items.iter().find(|(_, r)| r == read)?;
        if first.0 != index {
            return None;
        }
        self.key_columns
            .iter()
            .position(|(alias, column)| format!("{alias}.{column}") == *read)
    }

    /// ksqlDB's checks of a foreign-key join's projection: every left key column, once.
    pub fn check_foreign_key_projection(&self, names: &[String]) -> Result<()> {
        let mut missing = Vec::new();
        for (alias, column) in &self.key_columns {
            let read = format!("{alias}.{column}");
            let mut items: Vec<&str> = self
                .key_items
                .iter()
                .filter(|(_, r)| *r == read)
                .map(|(i, _)| names[*i].as_str())
                .collect();
            if items.is_empty() {
                missing.push(format!("`{column}`"));
            }
            if items.len() > 1 {
                items.sort();
                return Err(EngineError::Plan(format!(
                    "The projection contains a key column (`{alias}_{column}`) more than once, aliased as: {}.",
                    items.join(" and ")
                )));
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let (what, listed) = if missing.len() == 1 {
            ("column", format!("Missing column: {}", missing[0]))
        } else {
            (
                "columns",
                format!("Missing columns: {}", missing.join(", ")),
            )
        };
        Err(EngineError::Plan(format!(
            "Primary key {what} missing in projection. For foreign-key table-table joins, the \
             projection must include all primary key columns from the left input table (`{}`). \
             {listed}.",
            self.sources[0].name
        )))
    }
}

/// ksqlDB's error for a join whose projection lacks its key.
pub fn missing_key(spec: &JoinSpec, sink: &str) -> EngineError {
    if spec.synthetic_key {
        return EngineError::Plan(format!(
            "Key missing from projection (ie, SELECT). See https://cnfl.io/2LV7ouS.\n\
             The query used to build `{sink}` must include the join expression ROWKEY in its \
             projection (eg, SELECT ROWKEY...).\nROWKEY was added as a synthetic key column \
             because the join criteria did not match any source column. This expression must be \
             included in the projection and may be aliased."
        ));
    }
    let names = &spec.key_names;
    // "A", "A or B", "A, B or C", as ksqlDB lists them.
    let (what, listed) = match names.as_slice() {
        [one] => ("expression", one.clone()),
        [first @ .., last] => ("expressions", format!("{} or {last}", first.join(", "))),
        [] => ("expression", ROWKEY.to_string()),
    };
    EngineError::Plan(format!(
        "The query used to build `{sink}` must include the join {what} {listed} in its \
         projection (eg, SELECT {}...).",
        names[0]
    ))
}

/// The kind of the join's result: a table for table-table joins, else a stream.
pub fn result_kind(spec: &JoinSpec) -> SourceKind {
    if spec.sources.iter().all(|s| s.kind == SourceKind::Table) {
        SourceKind::Table
    } else {
        SourceKind::Stream
    }
}

/// The source a FROM item names, and its alias (the source's name when it has none). The
/// name is quoted so that DataFusion finds the registered table.
pub(super) fn relation(
    factor: &mut TableFactor,
    catalog: &Catalog,
) -> Result<(Arc<Source>, String)> {
    let TableFactor::Table { name, alias, .. } = factor else {
        return Err(EngineError::Unsupported("subqueries in FROM".into()));
    };
    let source_name = match name.0.last() {
        Some(ObjectNamePart::Identifier(ident)) => ident.value.clone(),
        _ => return Err(EngineError::Plan(format!("bad source name {name}"))),
    };
    let source = catalog.get(&source_name)?;
    for part in name.0.iter_mut() {
        if let ObjectNamePart::Identifier(ident) = part {
            ident.quote_style = Some('"');
        }
    }
    let alias_name = match alias {
        Some(alias) => {
            alias.name.quote_style = Some('"');
            alias.name.value.clone()
        }
        None => source_name,
    };
    Ok((source, alias_name))
}

/// The side whose alias is `qualifier`.
fn side_named(sources: &[Arc<Source>; 2], aliases: &[String; 2], qualifier: &str) -> Result<usize> {
    aliases
        .iter()
        .position(|a| a == qualifier)
        .or_else(|| sources.iter().position(|s| s.name == qualifier))
        .ok_or_else(|| {
            EngineError::Plan(format!(
                "Failed to prepare statement: '{qualifier}' is not a valid stream/table name or alias."
            ))
        })
}

/// The side a column reference in the ON condition reads.
fn resolve(
    sources: &[Arc<Source>; 2],
    aliases: &[String; 2],
    qualifier: Option<&str>,
    column: &str,
) -> Result<usize> {
    let has = |side: usize| {
        sources[side].columns.iter().any(|c| c.name == column) || is_pseudo_column(column)
    };
    match qualifier {
        Some(qualifier) => {
            let side = side_named(sources, aliases, qualifier)?;
            if has(side) {
                Ok(side)
            } else {
                Err(EngineError::Plan(format!(
                    "JOIN ON column '{qualifier}.{column}' cannot be resolved."
                )))
            }
        }
        None => match (has(0), has(1)) {
            (true, false) => Ok(0),
            (false, true) => Ok(1),
            (true, true) => Err(EngineError::Plan(format!(
                "Column '{column}' is ambiguous. Could be {}.{column} or {}.{column}.",
                aliases[0], aliases[1]
            ))),
            (false, false) => Err(EngineError::Plan(format!(
                "JOIN ON column '{column}' cannot be resolved."
            ))),
        },
    }
}

/// `T.COL[1]` and `T.COL->F` parse as an access on `T` of `.COL`, then `[1]`: rewritten as an
/// access on the column `T.COL`, so that its references read as (qualifier, column).
fn field_access_qualified(operand: &SqlExpr) -> SqlExpr {
    use datafusion::sql::sqlparser::ast::AccessExpr;
    let mut operand = operand.clone();
    let _ = datafusion::sql::sqlparser::ast::visit_expressions_mut(&mut operand, |e| {
        if let SqlExpr::CompoundFieldAccess { root, access_chain } = e {
            if let (SqlExpr::Identifier(qualifier), Some(AccessExpr::Dot(SqlExpr::Identifier(c)))) =
                (root.as_ref(), access_chain.first())
            {
                let column = SqlExpr::CompoundIdentifier(vec![qualifier.clone(), c.clone()]);
                *root = Box::new(column);
                access_chain.remove(0);
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    operand
}

/// The ON condition of a join operator, to rewrite.
pub(super) fn constraint_mut(operator: &mut JoinOperator) -> Option<&mut SqlExpr> {
    match operator {
        JoinOperator::Join(JoinConstraint::On(c))
        | JoinOperator::Inner(JoinConstraint::On(c))
        | JoinOperator::Left(JoinConstraint::On(c))
        | JoinOperator::LeftOuter(JoinConstraint::On(c))
        | JoinOperator::Right(JoinConstraint::On(c))
        | JoinOperator::RightOuter(JoinConstraint::On(c))
        | JoinOperator::FullOuter(JoinConstraint::On(c)) => Some(c),
        _ => None,
    }
}

/// The comparisons an ON condition joins with AND (parentheses dropped).
pub(super) fn conjuncts(condition: &SqlExpr) -> Vec<SqlExpr> {
    match condition {
        SqlExpr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            let mut all = conjuncts(left);
            all.extend(conjuncts(right));
            all
        }
        SqlExpr::Nested(inner) => conjuncts(inner),
        other => vec![other.clone()],
    }
}

fn is_equality(expr: &SqlExpr) -> bool {
    matches!(
        expr,
        SqlExpr::BinaryOp {
            op: BinaryOperator::Eq,
            ..
        }
    )
}

/// An expression as ksqlDB prints it in errors: each binary operation in parentheses.
fn parenthesized(expr: &SqlExpr) -> String {
    match expr {
        SqlExpr::BinaryOp { left, op, right } => {
            format!("({} {op} {})", parenthesized(left), parenthesized(right))
        }
        SqlExpr::Nested(inner) => parenthesized(inner),
        other => other.to_string(),
    }
}

/// `operand` with its column references qualified by their side's alias.
fn qualify(operand: &SqlExpr, sources: &[Arc<Source>; 2], aliases: &[String; 2]) -> SqlExpr {
    let mut qualified = operand.clone();
    let _ = datafusion::sql::sqlparser::ast::visit_expressions_mut(&mut qualified, |e| {
        if let SqlExpr::Identifier(ident) = e {
            if let Ok(side) = resolve(sources, aliases, None, &ident.value) {
                *e = SqlExpr::CompoundIdentifier(vec![
                    Ident::with_quote('"', aliases[side].clone()),
                    ident.clone(),
                ]);
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    qualified
}

/// Joins Eddy (or ksqlDB) cannot run, refused with ksqlDB's messages.
pub fn validate(spec: &JoinSpec) -> Result<()> {
    let [left, right] = &spec.sources;
    let kafka: Vec<&str> = spec
        .sources
        .iter()
        .filter(|s| s.value_format == crate::formats::Format::Kafka)
        .map(|s| s.name.as_str())
        .collect();
    if !kafka.is_empty() {
        return Err(EngineError::Plan(format!(
            "Source(s) {} are using the 'KAFKA' value format. This format does not yet support JOIN.",
            kafka.join(", ")
        )));
    }
    match (left.window, right.window) {
        (None, None) => {}
        // Eddy's extension: a windowed table's rows looking up a plain table by a foreign
        // key (such as their WINDOWSTART); the result is windowed as the left table is.
        (Some(_), None) if spec.foreign_key => {}
        // Eddy's extension: a stream joined WITHIN a time interval to a windowed table's
        // rows, as they come (such as each window's final maximum): see `windowed_table_rows`.
        (None, Some(_)) if windowed_table_rows(spec) => {}
        (Some(w), None) | (None, Some(w)) => {
            let (windowed, plain) = if left.window.is_some() {
                (left, right)
            } else {
                (right, left)
            };
            return Err(EngineError::Plan(format!(
                "Can not join windowed source to non-windowed source.\n`{}` is {} windowed\n`{}` is not windowed",
                windowed.name,
                w.type_name(),
                plain.name
            )));
        }
        (Some(_), Some(_)) => {
            return Err(EngineError::Unsupported("joins of windowed sources".into()))
        }
    }
    match (left.kind, right.kind) {
        (SourceKind::Stream, SourceKind::Stream) if spec.within.is_none() => {
            Err(EngineError::Plan(
                "Stream-Stream joins must have a WITHIN clause specified. None was provided. To \
                 learn about how to specify a WITHIN clause with a stream-stream join, please \
                 visit: https://docs.confluent.io/current/ksql/docs/syntax-reference.html#create-stream-as-select"
                    .into(),
            ))
        }
        (SourceKind::Stream, SourceKind::Stream) => Ok(()),
        _ if windowed_table_rows(spec) => match spec.kind {
            JoinKind::Inner | JoinKind::Left => Ok(()),
            kind => Err(EngineError::Plan(format!(
                "Invalid join type: {kind:?} joins of a stream to a windowed table are not \
                 supported; only INNER and LEFT."
            ))),
        },
        _ if spec.within.is_some() => Err(EngineError::Plan(format!(
            "A window definition was provided for a {}-{} join. These joins are not windowed. \
             Please drop the window definition (ie. the WITHIN clause) and try to submit your \
             query again.",
            title(left.kind),
            title(right.kind)
        ))),
        (SourceKind::Table, SourceKind::Stream) => Err(EngineError::Plan(format!(
            "Invalid join order: table-stream joins are not supported; only stream-table joins. \
             Got {} [{:?}] JOIN {}.",
            left.name, spec.kind, right.name
        ))),
        (SourceKind::Stream, SourceKind::Table)
            if matches!(spec.kind, JoinKind::Right | JoinKind::Full) =>
        {
            Err(EngineError::Plan(format!(
                "Invalid join type: {:?} joins of a stream to a table are not supported; only \
                 INNER and LEFT.",
                spec.kind
            )))
        }
        _ => Ok(()),
    }
}

/// Whether a join reads its right side, a windowed table, as a stream of rows (Eddy's
/// extension): `stream JOIN windowed_table WITHIN ...` joins each stream row to the table rows
/// within the interval, on any of their columns, as a stream-stream join would. The table's
/// rows of a window come once the window is known (EMIT FINAL), so the stream's rows wait for
/// them: they are kept until the table's rows have moved past them.
pub fn windowed_table_rows(spec: &JoinSpec) -> bool {
    let [left, right] = &spec.sources;
    spec.within.is_some()
        && left.kind == SourceKind::Stream
        && right.kind == SourceKind::Table
        && left.window.is_none()
        && right.window.is_some()
}

fn title(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::Stream => "Stream",
        SourceKind::Table => "Table",
    }
}

/// ksqlDB joins only values of one type: `T1.ID{INTEGER} = T2.ID{BIGINT}` is refused (the plan
/// before DataFusion's coercion is checked).
pub fn check_condition_types(plan: &datafusion::logical_expr::LogicalPlan) -> Result<()> {
    use datafusion::logical_expr::{BinaryExpr, Expr, LogicalPlan, Operator};
    let mut node = plan;
    let join = loop {
        match node {
            LogicalPlan::Join(join) => break join,
            other => match other.inputs().first() {
                Some(input) => node = input,
                None => return Ok(()),
            },
        }
    };
    let Some(filter) = &join.filter else {
        return Ok(());
    };
    for conjunct in datafusion::logical_expr::utils::split_conjunction(filter) {
        if let Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) = conjunct
        {
            check_comparison_types(&join.schema, left, right)?;
        }
    }
    Ok(())
}

/// One equality of a join's condition: both sides of one type.
fn check_comparison_types(
    schema: &datafusion::common::DFSchema,
    left: &datafusion::logical_expr::Expr,
    right: &datafusion::logical_expr::Expr,
) -> Result<()> {
    use datafusion::logical_expr::{Expr, ExprSchemable};
    let type_of = |e: &Expr| {
        e.get_type(schema)
            .ok()
            .and_then(|t| crate::types::SqlType::from_arrow(&t))
    };
    // ksqlDB reads a literal 1 as INTEGER where DataFusion reads BIGINT: expressions with
    // literals are left to DataFusion's coercion.
    let has_literal = |e: &Expr| {
        use datafusion::common::tree_node::TreeNode;
        e.exists(|e| Ok(matches!(e, Expr::Literal(..))))
            .unwrap_or(false)
    };
    if has_literal(left) || has_literal(right) {
        return Ok(());
    }
    if let (Some(l), Some(r)) = (type_of(left), type_of(right)) {
        if l != r {
            fn show(e: &Expr) -> String {
                match e {
                    Expr::Cast(cast) => {
                        let to = crate::types::SqlType::from_arrow(cast.field.data_type())
                            .map(|t| t.to_string())
                            .unwrap_or_else(|| cast.field.data_type().to_string());
                        format!("CAST({} AS {to})", show(&cast.expr))
                    }
                    other => other.to_string().replace('"', ""),
                }
            }
            return Err(EngineError::Plan(format!(
                "Invalid join condition: types don't match. Got {}{{{l}}} = {}{{{r}}}.",
                show(left),
                show(right)
            )));
        }
    }
    Ok(())
}
