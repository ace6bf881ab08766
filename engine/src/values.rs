//! The rows INSERT VALUES and the REST inserts write: VALUES' expressions evaluated (literals
//! directly, anything else, such as `1 + 1`, `CAST(NULL AS INT)`, `MAP('a' := 1)` or
//! `STRUCT(F := 2)`, by DataFusion), values checked and converted to their column's type as
//! ksqlDB does, and the record the source's formats make of a row.

use std::collections::BTreeMap;

use bytes::Bytes;
use datafusion::sql::sqlparser::ast::{
    Expr, Ident, SelectItem, SetExpr, UnaryOperator, Value as SqlValue,
};
use eddy_broker::ProducerRecord;
use serde_json::{Map, Value};

use crate::catalog::{Source, ROWOFFSET, ROWPARTITION, ROWTIME};
use crate::error::{EngineError, Result};
use crate::formats;
use crate::functions;
use crate::parser::ColumnDef;
use crate::query::rewrite_query;
use crate::types::SqlType;

/// The values of VALUES (...), in order.
pub(crate) async fn evaluate(exprs: &[Expr]) -> Result<Vec<Value>> {
    let literals: Vec<Result<Value>> = exprs.iter().map(literal).collect();
    if literals
        .iter()
        .all(|l| !matches!(l, Err(EngineError::Unsupported(_))))
    {
        return literals.into_iter().collect();
    }
    evaluate_with_datafusion(exprs).await
}

/// Evaluates the expressions as `SELECT e0, e1, ..` with no FROM: they can read no column.
async fn evaluate_with_datafusion(exprs: &[Expr]) -> Result<Vec<Value>> {
    use datafusion::sql::parser::Statement as DfStatement;
    use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    let name = |i: usize| format!("V{i}");
    let mut statement =
        datafusion::sql::sqlparser::parser::Parser::parse_sql(&GenericDialect {}, "SELECT 1")
            .map_err(|e| EngineError::Internal(e.to_string()))?
            .remove(0);
    let SqlStatement::Query(query) = &mut statement else {
        return Err(EngineError::Internal("SELECT 1 is a query".into()));
    };
    if let SetExpr::Select(select) = query.body.as_mut() {
        select.projection = exprs
            .iter()
            .enumerate()
            .map(|(i, expr)| SelectItem::ExprWithAlias {
                expr: expr.clone(),
                alias: Ident::with_quote('"', name(i)),
            })
            .collect();
    }
    rewrite_query(query);
    let context = functions::session();
    let plan = context
        .state()
        .statement_to_plan(DfStatement::Statement(Box::new(statement)))
        .await?;
    let batches = context.execute_logical_plan(plan).await?.collect().await?;
    let mut row = batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .map(crate::runtime::to_rows)
        .transpose()?
        .and_then(|rows| rows.into_iter().next())
        .unwrap_or_default();
    Ok((0..exprs.len())
        .map(|i| row.remove(&name(i)).unwrap_or(Value::Null))
        .collect())
}

/// One row to insert as the record its source's formats make of it.
pub(crate) fn row_record(
    source: &Source,
    target: &str,
    row: BTreeMap<String, Value>,
) -> Result<ProducerRecord> {
    let mut row: BTreeMap<String, Value> = row
        .into_iter()
        .map(|(name, value)| {
            let known = name == ROWTIME || source.columns.iter().any(|c| c.name == name);
            (if known { name } else { name.to_uppercase() }, value)
        })
        .collect();
    let timestamp_ms = match row.remove(ROWTIME) {
        Some(Value::Number(n)) => n.as_i64(),
        _ => None,
    };
    for name in row.keys() {
        if name == ROWPARTITION || name == ROWOFFSET {
            return Err(EngineError::Plan(format!(
                "Inserting into column `{name}` is not allowed."
            )));
        }
        if !source.columns.iter().any(|c| &c.name == name) {
            return Err(EngineError::Plan(format!(
                "column '{name}' does not exist in {target}"
            )));
        }
    }
    let pick = |columns: Vec<&ColumnDef>| -> Result<Vec<Value>> {
        columns
            .iter()
            .map(|c| coerce(row.get(&c.name).cloned().unwrap_or(Value::Null), c))
            .collect()
    };
    let key_columns: Vec<&ColumnDef> = source.key_columns().collect();
    let value_columns: Vec<&ColumnDef> = source.value_columns().collect();
    let key = if key_columns.is_empty() {
        None
    } else {
        formats::encode(
            source.key_format,
            &key_columns,
            &pick(key_columns.clone())?,
            false,
        )?
    };
    let value = formats::encode(
        source.value_format,
        &value_columns,
        &pick(value_columns.clone())?,
        source.wrap_single_value,
    )?;
    Ok(ProducerRecord {
        key: key.map(Bytes::from),
        value: value.map(Bytes::from),
        timestamp_ms,
        ..Default::default()
    })
}

/// A literal's value: numbers, strings, booleans, NULL, and arrays of them. Anything else is
/// `Unsupported`, for DataFusion to evaluate.
fn literal(expr: &Expr) -> Result<Value> {
    Ok(match expr {
        Expr::Value(v) => match &v.value {
            SqlValue::Number(n, _) => {
                if let Ok(i) = n.parse::<i64>() {
                    Value::from(i)
                } else {
                    n.parse::<f64>()
                        .map(Value::from)
                        .map_err(|_| EngineError::Plan(format!("bad number {n}")))?
                }
            }
            SqlValue::SingleQuotedString(s) => Value::String(s.clone()),
            SqlValue::Boolean(b) => Value::Bool(*b),
            SqlValue::Null => Value::Null,
            other => {
                return Err(EngineError::Unsupported(format!(
                    "literal {other} in VALUES"
                )))
            }
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match literal(expr)? {
            Value::Number(n) if n.is_i64() => Value::from(-n.as_i64().unwrap_or_default()),
            Value::Number(n) => Value::from(-n.as_f64().unwrap_or_default()),
            other => return Err(EngineError::Plan(format!("cannot negate {other}"))),
        },
        Expr::Array(array) => Value::Array(array.elem.iter().map(literal).collect::<Result<_>>()?),
        Expr::Nested(inner) => literal(inner)?,
        other => {
            return Err(EngineError::Unsupported(format!(
                "expression {other} in VALUES (use literals)"
            )))
        }
    })
}

/// Checks a value against its column's type, converting where ksqlDB would.
fn coerce(value: Value, column: &ColumnDef) -> Result<Value> {
    let shown = value.to_string();
    coerce_to(value, &column.data_type).ok_or_else(|| {
        EngineError::Plan(format!(
            "value {shown} does not fit column {} of type {}",
            column.name, column.data_type
        ))
    })
}

/// `value` as a value of `data_type`, or `None` where it cannot be one.
fn coerce_to(value: Value, data_type: &SqlType) -> Option<Value> {
    Some(match (data_type, value) {
        (_, Value::Null) => Value::Null,
        (SqlType::Int, Value::Number(n)) => {
            Value::from(n.as_i64().filter(|i| i32::try_from(*i).is_ok())?)
        }
        (SqlType::Bigint, Value::Number(n)) => Value::from(n.as_i64()?),
        (SqlType::Double, Value::Number(n)) => Value::from(n.as_f64()?),
        (SqlType::Decimal { precision, scale }, Value::Number(n)) => {
            decimal(n.as_f64()?, *precision, *scale)?
        }
        (SqlType::Decimal { precision, scale }, Value::String(text)) => {
            decimal(text.trim().parse().ok()?, *precision, *scale)?
        }
        (SqlType::String, Value::String(s)) => Value::String(s),
        (SqlType::Boolean, Value::Bool(b)) => Value::Bool(b),
        (SqlType::Bytes, Value::String(s)) => Value::String(s),
        (SqlType::Array(item), Value::Array(items)) => Value::Array(
            items
                .into_iter()
                .map(|v| coerce_to(v, item))
                .collect::<Option<_>>()?,
        ),
        (SqlType::Map(_, item), Value::Object(entries)) => Value::Object(
            entries
                .into_iter()
                .map(|(k, v)| Some((k, coerce_to(v, item)?)))
                .collect::<Option<_>>()?,
        ),
        // Fields match by name, exactly or else ignoring case; missing ones are null.
        (SqlType::Struct(fields), Value::Object(mut given)) => {
            let mut out = Map::new();
            for (name, field_type) in fields {
                let found = match given.remove(name) {
                    Some(v) => Some(v),
                    None => given
                        .keys()
                        .find(|k| k.eq_ignore_ascii_case(name))
                        .cloned()
                        .and_then(|k| given.remove(&k)),
                };
                out.insert(
                    name.clone(),
                    coerce_to(found.unwrap_or(Value::Null), field_type)?,
                );
            }
            if !given.is_empty() {
                return None;
            }
            Value::Object(out)
        }
        // Timestamps are epoch milliseconds on the wire, as ksqlDB writes them; a string is
        // read as ISO-8601 ('2026-01-01T00:00:00.000', UTC unless it names a zone).
        (SqlType::Timestamp, Value::Number(n)) if n.is_i64() => Value::Number(n),
        (SqlType::Timestamp, Value::String(text)) => {
            use datafusion::arrow::compute::kernels::cast_utils::string_to_timestamp_nanos;
            Value::from(string_to_timestamp_nanos(&text).ok()?.div_euclid(1_000_000))
        }
        _ => return None,
    })
}

/// A DECIMAL(precision, scale) value: rounded to `scale` digits, refused when its integer
/// part has more than `precision - scale` digits.
fn decimal(value: f64, precision: u8, scale: i8) -> Option<Value> {
    let factor = 10f64.powi(i32::from(scale));
    let rounded = (value * factor).round() / factor;
    let integer_digits = i32::from(precision) - i32::from(scale);
    (rounded.abs() < 10f64.powi(integer_digits)).then(|| Value::from(rounded))
}
