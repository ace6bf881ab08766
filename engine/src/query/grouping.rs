//! ksqlDB's rule for what an aggregation's SELECT may name: each item is an aggregate, a GROUP
//! BY expression, or built of them (and of literals and window bounds). An item naming a
//! column any other way is refused, the items listed as ksqlDB prints them:
//! `Non-aggregate SELECT expression(s) not part of GROUP BY: (F1 + F2), SUBSTRING(SOURCE, 0, 1)`.
//! Expressions match GROUP BY's as written (`f1 + f2` is not `f2 + f1`), as in ksqlDB. The
//! planner asks only once DataFusion has refused the aggregation, to list what ksqlDB lists.

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    visit_expressions, visit_expressions_mut, Expr as SqlExpr, FunctionArg, FunctionArgExpr,
    FunctionArguments, GroupByExpr, Select, SelectItem, Value,
};

use crate::catalog::{WINDOWEND, WINDOWSTART};
use crate::error::{EngineError, Result};
use crate::functions::catalog::is_aggregate;

/// Refuses SELECT items of an aggregation (`select` groups or calls an aggregate) that name
/// one of `columns` outside an aggregate and outside every GROUP BY expression.
pub(super) fn check_select(select: &Select, columns: &HashSet<String>) -> Result<()> {
    let group_by: Vec<String> = match &select.group_by {
        GroupByExpr::Expressions(exprs, _) => exprs.iter().map(comparable).collect(),
        GroupByExpr::All(_) => return Ok(()),
    };
    let items: Vec<&SqlExpr> = select
        .projection
        .iter()
        .filter_map(|item| match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => Some(e),
            _ => None,
        })
        .collect();
    if group_by.is_empty() && !items.iter().any(|e| calls_aggregate(e)) {
        return Ok(()); // not an aggregation
    }
    let offending: Vec<String> = items
        .into_iter()
        .filter(|e| names_ungrouped_column(e, &group_by, columns))
        .map(ksql_text)
        .collect();
    if offending.is_empty() {
        return Ok(());
    }
    Err(EngineError::Plan(format!(
        "Non-aggregate SELECT expression(s) not part of GROUP BY: {}\n\
         Either add the column(s) to the GROUP BY or remove them from the SELECT.",
        offending.join(", ")
    )))
}

/// An expression's text for matching against GROUP BY's: identifiers and function names in
/// one case.
fn comparable(expr: &SqlExpr) -> String {
    expr.to_string().to_uppercase().replace(['"', '`'], "")
}

fn calls_aggregate(expr: &SqlExpr) -> bool {
    visit_expressions(expr, |e| match e {
        SqlExpr::Function(f) if is_aggregate(&f.name.to_string()) => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    })
    .is_break()
}

/// Whether `expr`, once its aggregates and GROUP BY expressions are set aside, still names a
/// column.
fn names_ungrouped_column(expr: &SqlExpr, group_by: &[String], columns: &HashSet<String>) -> bool {
    let mut rest = expr.clone();
    // Pre-order: a replaced expression's parts are not visited.
    let _ = visit_expressions_mut(&mut rest, |e| {
        let covered = match e {
            SqlExpr::Function(f) => is_aggregate(&f.name.to_string()),
            _ => false,
        } || group_by.contains(&comparable(e));
        if covered {
            *e = SqlExpr::Value(Value::Null.into());
        }
        ControlFlow::<()>::Continue(())
    });
    visit_expressions(&rest, |e| {
        let name = match e {
            SqlExpr::Identifier(ident) => Some(&ident.value),
            SqlExpr::CompoundIdentifier(parts) => parts.last().map(|p| &p.value),
            _ => None,
        };
        match name {
            Some(n) if n != WINDOWSTART && n != WINDOWEND && columns.contains(n) => {
                ControlFlow::Break(())
            }
            _ => ControlFlow::Continue(()),
        }
    })
    .is_break()
}

/// An expression as ksqlDB prints it: columns unqualified, operations in brackets, function
/// names in upper case (`(F1 * SUM(F2))`, `SUBSTRING(SOURCE, 0, 1)`).
pub(crate) fn ksql_text(expr: &SqlExpr) -> String {
    match expr {
        SqlExpr::Identifier(ident) => ident.value.clone(),
        SqlExpr::CompoundIdentifier(parts) => {
            parts.last().map(|p| p.value.clone()).unwrap_or_default()
        }
        SqlExpr::Nested(inner) => ksql_text(inner),
        SqlExpr::BinaryOp { left, op, right } => {
            format!("({} {op} {})", ksql_text(left), ksql_text(right))
        }
        SqlExpr::Function(f) => {
            let args: Vec<String> = match &f.args {
                FunctionArguments::List(list) => list
                    .args
                    .iter()
                    .map(|arg| match arg {
                        FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => ksql_text(e),
                        FunctionArg::Unnamed(FunctionArgExpr::Wildcard) => String::new(),
                        other => other.to_string(),
                    })
                    .collect(),
                FunctionArguments::None => Vec::new(),
                FunctionArguments::Subquery(q) => vec![q.to_string()],
            };
            format!("{}({})", f.name.to_string().to_uppercase(), args.join(", "))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn check(sql: &str) -> std::result::Result<(), String> {
        let statement = Parser::parse_sql(&GenericDialect {}, sql)
            .unwrap()
            .remove(0);
        let datafusion::sql::sqlparser::ast::Statement::Query(query) = statement else {
            panic!("a query")
        };
        let datafusion::sql::sqlparser::ast::SetExpr::Select(select) = *query.body else {
            panic!("a select")
        };
        let columns = ["F0", "F1", "F2", "SOURCE", "ID"]
            .map(String::from)
            .into_iter()
            .collect();
        check_select(&select, &columns).map_err(|e| {
            let text = e.to_string();
            let listed = text.split("GROUP BY: ").nth(1).unwrap_or(&text);
            listed.lines().next().unwrap_or_default().to_string()
        })
    }

    #[test]
    fn items_naming_ungrouped_columns_are_listed_as_ksqldb_prints_them() {
        assert_eq!(
            check("SELECT F1 + F2, COUNT(*) FROM T GROUP BY F2 + F1"),
            Err("(F1 + F2)".into())
        );
        assert_eq!(
            check("SELECT F1, F2, COUNT(*) FROM T GROUP BY F2 + F1"),
            Err("F1, F2".into())
        );
        assert_eq!(
            check("SELECT F1 * SUM(F2) FROM T GROUP BY F0"),
            Err("(F1 * SUM(F2))".into())
        );
        assert_eq!(
            check("SELECT substring(SOURCE, 0, 1) AS X, COUNT(*) FROM T GROUP BY substring(SOURCE, 0, 2)"),
            Err("SUBSTRING(SOURCE, 0, 1)".into())
        );
        assert_eq!(check("SELECT F1, COUNT(*) FROM T"), Err("F1".into()));
    }

    #[test]
    fn grouped_expressions_aggregates_and_literals_pass() {
        assert_eq!(
            check("SELECT F2 + F1, COUNT(*) FROM T GROUP BY F2 + F1"),
            Ok(())
        );
        assert_eq!(
            check("SELECT F0, F0 * 2, SUM(F1) + 1, 'x' FROM T GROUP BY F0"),
            Ok(())
        );
        assert_eq!(
            check("SELECT ID, WINDOWSTART, COUNT(*) FROM T GROUP BY ID"),
            Ok(())
        );
        assert_eq!(check("SELECT F1, F2 FROM T"), Ok(()));
    }
}
