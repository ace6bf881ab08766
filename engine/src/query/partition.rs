//! PARTITION BY: which projection items become the key columns of a stream's output.
//!
//! As in ksqlDB, a partitioning column keeps its name (an alias in the projection renames
//! it), a struct field `s->f` is named after the field, and any other expression is the
//! projection item that computes it (its alias, or KSQL_COL_n). With `SELECT *` a
//! partitioning expression the projection lacks is added to it; otherwise the projection
//! must include every one. `PARTITION BY NULL` leaves the output without a key.

use datafusion::sql::sqlparser::ast::{
    visit_expressions_mut, CastKind, DataType as SqlDataType, Expr as SqlExpr, Ident, Select,
    SelectItem,
};
use std::ops::ControlFlow;

use crate::catalog::{Source, ROWTIME};
use crate::error::{EngineError, Result};

use super::{field_access_name, must_include, rewrite};

/// What PARTITION BY asks of the output's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Partitioning {
    /// No PARTITION BY: the key follows from the source (or GROUP BY, or the join).
    Source,
    /// PARTITION BY NULL: no key columns at all.
    Null,
    /// One key column per partitioning expression, in order.
    Keys(Vec<PartitionKey>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PartitionKey {
    /// A source column: the projection item that reads it (aliased or not) is the key.
    Column(String),
    /// The projection item at this index computes the key.
    Item(usize),
}

impl Partitioning {
    /// The rank among the key columns of the output column `index`, which reads the source
    /// column `read_column` when it is a plain column reference.
    pub(super) fn rank(&self, index: usize, read_column: Option<&String>) -> Option<usize> {
        let Partitioning::Keys(keys) = self else {
            return None;
        };
        keys.iter().position(|key| match key {
            PartitionKey::Column(name) => Some(name) == read_column,
            PartitionKey::Item(item) => *item == index,
        })
    }

    pub(super) fn is_source(&self) -> bool {
        *self == Partitioning::Source
    }
}

/// Resolves `partition_by` against the projection, already expanded (`star`: it was `*`).
pub(super) fn resolve(
    select: &mut Select,
    partition_by: &[SqlExpr],
    source: &Source,
    star: bool,
    sink: &str,
) -> Result<Partitioning> {
    if partition_by.is_empty() {
        return Ok(Partitioning::Source);
    }
    let is_null = |e: &SqlExpr| matches!(e, SqlExpr::Value(v) if v.value == datafusion::sql::sqlparser::ast::Value::Null);
    if partition_by.iter().any(is_null) {
        if partition_by.len() > 1 {
            return Err(EngineError::Plan(
                "Cannot PARTITION BY multiple columns including NULL".into(),
            ));
        }
        return Ok(Partitioning::Null);
    }
    let mut keys = Vec::with_capacity(partition_by.len());
    let mut missing = false;
    for original in partition_by {
        let mut expr = original.clone();
        rewrite(&mut expr);
        let column = column_name(&expr);
        let found = select.projection.iter().enumerate().find_map(|(i, item)| {
            let item = item_expr(item)?;
            match &column {
                Some(name) => (column_name(item).as_ref() == Some(name))
                    .then(|| PartitionKey::Column(name.clone())),
                None => (*item == expr).then_some(PartitionKey::Item(i)),
            }
        });
        match (found, star) {
            (Some(key), _) => keys.push(key),
            (None, true) => {
                let alias = match &column {
                    Some(name) => name.clone(),
                    None => field_access_name(&expr).unwrap_or_else(|| {
                        let generated = select
                            .projection
                            .iter()
                            .filter(|item| matches!(item, SelectItem::ExprWithAlias { alias, .. } if alias.value.starts_with("KSQL_COL_")))
                            .count();
                        format!("KSQL_COL_{generated}")
                    }),
                };
                // ksqlDB's ROWTIME is a BIGINT of epoch milliseconds.
                if column.as_deref() == Some(ROWTIME) {
                    expr = SqlExpr::Cast {
                        kind: CastKind::Cast,
                        expr: Box::new(expr),
                        data_type: SqlDataType::BigInt(None),
                        array: false,
                        format: None,
                    };
                }
                keys.push(PartitionKey::Item(select.projection.len()));
                select.projection.push(SelectItem::ExprWithAlias {
                    expr,
                    alias: Ident::with_quote('"', alias),
                });
            }
            (None, false) => missing = true,
        }
    }
    if missing {
        let qualified: Vec<String> = partition_by
            .iter()
            .map(|e| qualify(e, &source.name))
            .collect();
        must_include(sink, "partitioning expression", &qualified)?;
    }
    Ok(Partitioning::Keys(keys))
}

/// The expression of a projection item.
fn item_expr(item: &SelectItem) -> Option<&SqlExpr> {
    match item {
        SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. } => Some(expr),
        _ => None,
    }
}

/// The column an expression names, when it is a plain (maybe qualified) column reference.
fn column_name(expr: &SqlExpr) -> Option<String> {
    match expr {
        SqlExpr::Identifier(ident) => Some(ident.value.clone()),
        SqlExpr::CompoundIdentifier(parts) => parts.last().map(|p| p.value.clone()),
        _ => None,
    }
}

/// The expression as ksqlDB prints it in messages: columns qualified by the source.
fn qualify(expr: &SqlExpr, source: &str) -> String {
    let mut expr = expr.clone();
    let _ = visit_expressions_mut(&mut expr, |e| {
        if let SqlExpr::Identifier(ident) = e {
            *e = SqlExpr::CompoundIdentifier(vec![Ident::new(source), ident.clone()]);
        }
        ControlFlow::<()>::Continue(())
    });
    expr.to_string()
}
