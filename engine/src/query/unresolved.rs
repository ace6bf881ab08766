//! ksqlDB's error for a name no source has (DataFusion says "No field named X"): `SELECT column
//! 'BOB' cannot be resolved.`, naming the clause that mentions it, qualified as written
//! (`'I.BOB'`).

use std::ops::ControlFlow;

use datafusion::common::SchemaError;
use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::ast::{visit_expressions, Expr as SqlExpr, Query, SetExpr};

use crate::error::EngineError;

/// `error` in ksqlDB's words when it is a column that does not resolve in `query`.
pub(crate) fn column_error(error: DataFusionError, query: &Query) -> EngineError {
    let DataFusionError::SchemaError(schema_error, _) = error.find_root() else {
        return error.into();
    };
    let SchemaError::FieldNotFound { field, .. } = schema_error.as_ref() else {
        return error.into();
    };
    let name = match &field.relation {
        Some(relation) => format!("{}.{}", relation.table(), field.name),
        None => field.name.clone(),
    };
    let clause = clause_naming(query, &field.name).unwrap_or("SELECT");
    EngineError::Plan(format!("{clause} column '{name}' cannot be resolved."))
}

/// The first clause of `query` that names column `name`.
fn clause_naming(query: &Query, name: &str) -> Option<&'static str> {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    let names = |e: &SqlExpr| {
        visit_expressions(e, |e| match e {
            SqlExpr::Identifier(i) if i.value == name => ControlFlow::Break(()),
            SqlExpr::CompoundIdentifier(p) if p.last().is_some_and(|i| i.value == name) => {
                ControlFlow::Break(())
            }
            _ => ControlFlow::Continue(()),
        })
        .is_break()
    };
    let group_by = match &select.group_by {
        datafusion::sql::sqlparser::ast::GroupByExpr::Expressions(exprs, _) => exprs.as_slice(),
        _ => &[],
    };
    if select.projection.iter().any(|item| {
        visit_expressions(item, |e| match names(e) {
            true => ControlFlow::Break(()),
            false => ControlFlow::Continue(()),
        })
        .is_break()
    }) {
        Some("SELECT")
    } else if select.selection.as_ref().is_some_and(names) {
        Some("WHERE")
    } else if group_by.iter().any(names) {
        Some("GROUP BY")
    } else if select.having.as_ref().is_some_and(names) {
        Some("HAVING")
    } else {
        None
    }
}
