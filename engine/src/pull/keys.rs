//! What a pull query's WHERE asks of a table's key, and ksqlDB's rules for it.
//!
//! ksqlDB answers a pull query by key lookups (`ID = 10`, `ID IN (1, 2)`), by a range of a
//! STRING key (`ID < 'm'`, under `ksql.query.pull.range.scan.enabled`), or by a table scan
//! (`ksql.query.pull.table.scan.enabled`; both on by default). Eddy scans its snapshot in every
//! case; these rules give ksqlDB's errors where the configuration turns scans off, and those it
//! gives whatever the configuration (a key IN list holding a value that cannot be a key).
//!
//! The WHERE clause is read as a disjunction of conjunctions (OR of ANDs); in each, a
//! comparison of a key column with a literal (=, IN, or a range) constrains that key.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{visit_expressions, BinaryOperator, Expr as SqlExpr, Value};

use crate::catalog::Source;
use crate::error::{EngineError, Result};
use crate::parser::ColumnDef;
use crate::query::ksql_text;
use crate::types::SqlType;

/// Which ways of answering a pull query are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanConfig {
    /// `ksql.query.pull.table.scan.enabled`.
    pub table_scan: bool,
    /// `ksql.query.pull.range.scan.enabled`.
    pub range_scan: bool,
}

/// The most disjuncts the WHERE clause is expanded into (past it: a table scan).
const DISJUNCTS_MAX: usize = 256;

/// How one disjunct constrains a key column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Constraint {
    Equal,
    Range,
}

/// Checks `selection` against ksqlDB's rules for pull queries on `source`.
pub(super) fn check(
    selection: Option<&SqlExpr>,
    source: &Source,
    config: ScanConfig,
) -> Result<()> {
    let keys: Vec<&ColumnDef> = source.key_columns().collect();
    if let Some(selection) = selection {
        check_key_lists(selection, &keys)?;
    }
    if config.table_scan {
        return Ok(());
    }
    let refused = |message: &str| Err(EngineError::Plan(message.to_string()));
    let Some(selection) = selection else {
        return refused("Query requires table scan to be enabled");
    };
    let Some(disjuncts) = disjuncts(selection) else {
        return refused("Query requires table scan to be enabled");
    };
    let mut ranges = false;
    for disjunct in &disjuncts {
        let mut constrained: Vec<(usize, Constraint)> = Vec::new();
        for atom in disjunct {
            if let Some(constraint) = key_constraint(atom, &keys)? {
                if constrained.iter().any(|(k, _)| *k == constraint.0) {
                    return refused(
                        "A comparison condition on the key column cannot be combined with other \
                         comparisons such as an IN predicate",
                    );
                }
                constrained.push(constraint);
            }
        }
        if constrained.is_empty() && keys.len() <= 1 {
            let text: Vec<String> = disjunct.iter().map(|a| ksql_text(a)).collect();
            return Err(EngineError::Plan(format!(
                "WHERE clause missing key column for disjunct: {}",
                text.join(" AND ")
            )));
        }
        if constrained.len() < keys.len() {
            return refused("Multi-column sources must specify every key in the WHERE clause.");
        }
        ranges |= constrained.iter().any(|(_, c)| *c == Constraint::Range);
    }
    let string_key = keys.len() == 1 && keys[0].data_type == SqlType::String;
    let range_scan = config.range_scan && string_key && source.window.is_none();
    if ranges && (!range_scan || disjuncts.len() > 1) {
        return refused("Query requires table scan to be enabled");
    }
    Ok(())
}

/// The key column of `keys` that `expr` is, by name.
fn key_index(expr: &SqlExpr, keys: &[&ColumnDef]) -> Option<usize> {
    let name = match expr {
        SqlExpr::Identifier(ident) => &ident.value,
        SqlExpr::CompoundIdentifier(parts) => &parts.last()?.value,
        SqlExpr::Nested(inner) => return key_index(inner, keys),
        _ => return None,
    };
    keys.iter().position(|k| &k.name == name)
}

/// Whether `expr` names a column (of any source) anywhere.
fn names_column(expr: &SqlExpr) -> bool {
    visit_expressions(expr, |e| match e {
        SqlExpr::Identifier(_) | SqlExpr::CompoundIdentifier(_) => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    })
    .is_break()
}

/// Whether `expr` names one of `keys` anywhere.
fn names_key(expr: &SqlExpr, keys: &[&ColumnDef]) -> bool {
    visit_expressions(expr, |e| match key_index(e, keys) {
        Some(_) => ControlFlow::Break(()),
        None => ControlFlow::Continue(()),
    })
    .is_break()
}

/// The key column `atom` constrains and how, if it is a comparison of a key column with a
/// value; errors for the comparisons of a key ksqlDB cannot look up.
fn key_constraint(atom: &SqlExpr, keys: &[&ColumnDef]) -> Result<Option<(usize, Constraint)>> {
    let unresolvable = || {
        EngineError::Plan(
            "A comparison must be between a key column and a resolvable expression.".into(),
        )
    };
    match atom {
        SqlExpr::BinaryOp { left, op, right } => {
            let constraint = match op {
                BinaryOperator::Eq => Constraint::Equal,
                BinaryOperator::Lt
                | BinaryOperator::LtEq
                | BinaryOperator::Gt
                | BinaryOperator::GtEq => Constraint::Range,
                BinaryOperator::NotEq => match (key_index(left, keys), key_index(right, keys)) {
                    (Some(k), _) | (_, Some(k)) => {
                        return Err(EngineError::Plan(format!(
                            "Bound on key columns '[`{}` {} KEY]' must currently be '='. ",
                            keys[k].name, keys[k].data_type
                        )))
                    }
                    _ => return Ok(None),
                },
                _ => return Ok(None),
            };
            let (key, other) = match (key_index(left, keys), key_index(right, keys)) {
                (Some(k), _) => (k, right),
                (_, Some(k)) => (k, left),
                _ if names_key(left, keys) || names_key(right, keys) => {
                    return Err(EngineError::Plan(
                        "A comparison must directly reference a key column.".into(),
                    ))
                }
                _ => return Ok(None),
            };
            if names_column(other) {
                return Err(unresolvable());
            }
            Ok(Some((key, constraint)))
        }
        SqlExpr::InList {
            expr,
            list,
            negated: false,
        } => match key_index(expr, keys) {
            Some(_) if list.iter().any(names_column) => Err(unresolvable()),
            Some(key) => Ok(Some((key, Constraint::Equal))),
            None => Ok(None),
        },
        _ => Ok(None),
    }
}

/// A key IN list's values must be keys: of the key's type, and not null.
fn check_key_lists(selection: &SqlExpr, keys: &[&ColumnDef]) -> Result<()> {
    let mut refused = None;
    let _ = visit_expressions(selection, |e| {
        let SqlExpr::InList { expr, list, .. } = e else {
            return ControlFlow::Continue(());
        };
        let Some(key) = key_index(expr, keys).map(|k| keys[k]) else {
            return ControlFlow::Continue(());
        };
        for item in list {
            let value = match item {
                SqlExpr::Value(v) => &v.value,
                _ => continue,
            };
            let fits = match (value, &key.data_type) {
                (Value::Null, _) => {
                    refused = Some(format!(
                        "Primary key columns can not be NULL: ({} = null)",
                        key.name
                    ));
                    return ControlFlow::Break(());
                }
                (Value::SingleQuotedString(_), t) => *t == SqlType::String,
                (Value::Number(..), t) => t.arrow().is_numeric(),
                (Value::Boolean(_), t) => *t == SqlType::Boolean,
                _ => true,
            };
            if !fits {
                refused = Some(format!(
                    "{item} can not be converted to the type of the key column: {} {} KEY",
                    key.name, key.data_type
                ));
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    });
    match refused {
        Some(message) => Err(EngineError::Plan(message)),
        None => Ok(()),
    }
}

/// `expr` as an OR of ANDs of its other parts; `None` past [`DISJUNCTS_MAX`].
fn disjuncts(expr: &SqlExpr) -> Option<Vec<Vec<&SqlExpr>>> {
    match expr {
        SqlExpr::Nested(inner) => disjuncts(inner),
        SqlExpr::BinaryOp {
            left,
            op: BinaryOperator::Or,
            right,
        } => {
            let mut out = disjuncts(left)?;
            out.extend(disjuncts(right)?);
            (out.len() <= DISJUNCTS_MAX).then_some(out)
        }
        SqlExpr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            let (left, right) = (disjuncts(left)?, disjuncts(right)?);
            if left.len() * right.len() > DISJUNCTS_MAX {
                return None;
            }
            let mut out = Vec::new();
            for l in &left {
                for r in &right {
                    out.push(l.iter().chain(r).copied().collect());
                }
            }
            Some(out)
        }
        other => Some(vec![vec![other]]),
    }
}
