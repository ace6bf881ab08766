//! ksqlDB's type rules for WHERE and HAVING comparisons, which DataFusion's coercion would
//! otherwise paper over: a number is never compared with a string (`ID >= 'ten'` is refused,
//! not read as a string comparison), nor a boolean with anything but a boolean. Strings and
//! numbers compare with times (`ROWTIME > '2024-01-01'`, `ROWTIME > 1767225600000`), and null
//! with anything. The plan is checked
//! before DataFusion's analyzer coerces its types.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::DFSchema;
use datafusion::logical_expr::{BinaryExpr, Expr, ExprSchemable, LogicalPlan, Operator};

use crate::error::{EngineError, Result};
use crate::types::SqlType;

/// Refuses a WHERE or HAVING comparison of values ksqlDB does not compare, with ksqlDB's error:
/// `Error in WHERE expression: Cannot compare ID (INTEGER) to 'ten' (STRING) with
/// GREATER_THAN_OR_EQUAL.`
pub(crate) fn check_comparisons(plan: &LogicalPlan) -> Result<()> {
    let mut refused = None;
    plan.apply(|node| {
        if let LogicalPlan::Filter(filter) = node {
            let clause = match filter.input.as_ref() {
                LogicalPlan::Aggregate(_) => "HAVING",
                _ => "WHERE",
            };
            refused = refused_comparison(&filter.predicate, filter.input.schema()).map(|why| {
                let statement = ksql_text(&filter.predicate);
                format!("Error in {clause} expression: {why}\nStatement: {statement}")
            });
        }
        Ok(match refused {
            Some(_) => TreeNodeRecursion::Stop,
            None => TreeNodeRecursion::Continue,
        })
    })?;
    match refused {
        Some(message) => Err(EngineError::Plan(message)),
        None => Ok(()),
    }
}

/// The first comparison in `predicate` of types ksqlDB does not compare, said as ksqlDB says it.
fn refused_comparison(predicate: &Expr, schema: &DFSchema) -> Option<String> {
    let mut refused = None;
    let _ = predicate.apply(|e| {
        let Expr::BinaryExpr(BinaryExpr { left, op, right }) = e else {
            return Ok(TreeNodeRecursion::Continue);
        };
        let Some(name) = comparison_name(*op) else {
            return Ok(TreeNodeRecursion::Continue);
        };
        let (Ok(left_type), Ok(right_type)) = (left.get_type(schema), right.get_type(schema))
        else {
            return Ok(TreeNodeRecursion::Continue);
        };
        if left_type == DataType::Null || right_type == DataType::Null {
            let symbol = match op {
                Operator::NotEq => "<>".to_string(),
                op => op.to_string(),
            };
            refused = Some(format!(
                "Comparison with NULL not supported: {} {symbol} {}\n\
                 Use 'IS NULL' or 'IS NOT NULL' instead.",
                type_name(&left_type),
                type_name(&right_type)
            ));
            return Ok(TreeNodeRecursion::Stop);
        }
        if comparable(&left_type, &right_type) {
            return Ok(TreeNodeRecursion::Continue);
        }
        let described = |e: &Expr, t: &DataType| format!("{} ({})", ksql_text(e), type_name(t));
        refused = Some(format!(
            "Cannot compare {} to {} with {name}.",
            described(left, &left_type),
            described(right, &right_type)
        ));
        Ok(TreeNodeRecursion::Stop)
    });
    refused
}

/// A type as ksqlDB names it in errors (`INTEGER`, `DECIMAL(4, 2)`), else as Arrow does.
fn type_name(data_type: &DataType) -> String {
    match data_type {
        DataType::Null => "NULL".into(),
        t => SqlType::from_arrow(t).map_or_else(|| t.to_string(), |t| t.to_string()),
    }
}

fn comparison_name(op: Operator) -> Option<&'static str> {
    Some(match op {
        Operator::Eq => "EQUAL",
        Operator::NotEq => "NOT_EQUAL",
        Operator::Lt => "LESS_THAN",
        Operator::LtEq => "LESS_THAN_OR_EQUAL",
        Operator::Gt => "GREATER_THAN",
        Operator::GtEq => "GREATER_THAN_OR_EQUAL",
        _ => return None,
    })
}

/// Whether ksqlDB compares values of these types.
fn comparable(left: &DataType, right: &DataType) -> bool {
    use DataType::*;
    let kind = |t: &DataType| match t {
        Null => 0,
        t if t.is_numeric() => 1,
        Utf8 | LargeUtf8 | Utf8View => 2,
        Boolean => 3,
        Timestamp(..) | Date32 | Date64 | Time32(_) | Time64(_) => 4,
        _ => 5,
    };
    match (kind(left), kind(right)) {
        (0, _) | (_, 0) => true,
        // Times compare with their text, and with epoch numbers (ksqlDB's ROWTIME and window
        // bounds are BIGINTs).
        (2, 4) | (4, 2) | (1, 4) | (4, 1) => true,
        (5, 5) => true,
        (a, b) => a == b,
    }
}

/// An expression as ksqlDB prints it in errors: columns by name, strings in single quotes,
/// functions in upper case (`SUM(VALUE)`).
fn ksql_text(expr: &Expr) -> String {
    match expr {
        Expr::Column(column) => unqualified(&column.name),
        Expr::Literal(value, _) => match value.try_as_str() {
            Some(Some(text)) => format!("'{text}'"),
            _ if value.is_null() => "null".into(),
            _ => value.to_string(),
        },
        Expr::Alias(alias) => ksql_text(&alias.expr),
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            format!("({} {op} {})", ksql_text(left), ksql_text(right))
        }
        Expr::Cast(cast) => ksql_text(&cast.expr),
        other => unqualified(&other.to_string()),
    }
}

/// DataFusion's name for an expression without its qualifiers, functions in upper case:
/// `sum(TEST.VALUE)` is `SUM(VALUE)`.
fn unqualified(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut word = String::new();
    for c in name.chars() {
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
            continue;
        }
        match c {
            // A qualifier: dropped.
            '.' if !word.is_empty() => word.clear(),
            '(' => {
                out.push_str(&word.to_uppercase());
                word.clear();
                out.push(c);
            }
            _ => {
                out.push_str(&word);
                word.clear();
                out.push(c);
            }
        }
    }
    out.push_str(&word);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_as_ksqldb_prints_them() {
        assert_eq!(unqualified("sum(TEST.VALUE)"), "SUM(VALUE)");
        assert_eq!(unqualified("INPUT.ID"), "ID");
        assert_eq!(unqualified("ID"), "ID");
    }

    #[test]
    fn booleans_read_as_ksqldb_reads_them() {
        for (text, value) in [("TrUe", Some(true)), ("tr", Some(true)), ("Y", Some(true))] {
            assert_eq!(parse_boolean(text), value, "{text}");
        }
        assert_eq!(parse_boolean("no"), Some(false));
        assert_eq!(parse_boolean("Not a boolean"), None);
        assert_eq!(parse_boolean(""), None);
    }

    #[test]
    fn numbers_and_strings_do_not_compare() {
        use DataType::*;
        assert!(!comparable(&Int32, &Utf8));
        assert!(!comparable(&Boolean, &Int64));
        assert!(comparable(&Int32, &Float64));
        assert!(comparable(
            &Utf8,
            &Timestamp(datafusion::arrow::datatypes::TimeUnit::Millisecond, None)
        ));
        assert!(comparable(&Null, &Int32));
    }
}

/// ksqlDB's IN over scalar values: a string literal in the list is read as the tested value's
/// type (`ID IN (1, '2')`, `FLAG IN (true, 'yes')`), a literal in a list testing a string is
/// read as its text (`NAME IN (10, true)`), and other values of another kind are refused with
/// ksqlDB's `Invalid Predicate: operator does not exist: INTEGER = BOOLEAN (true)`. Runs on the
/// plan before DataFusion's coercion, which would compare such lists as strings.
pub(crate) fn coerce_in_lists(plan: LogicalPlan) -> Result<LogicalPlan> {
    use datafusion::common::tree_node::Transformed;
    let mut refused = None;
    let plan = plan.transform_up(|node| {
        let schema = node
            .inputs()
            .first()
            .map(|input| std::sync::Arc::clone(input.schema()));
        let Some(schema) = schema else {
            return Ok(Transformed::no(node));
        };
        node.map_expressions(|expr| {
            expr.transform_up(|e| match e {
                Expr::InList(mut list) => {
                    if let Err(why) = coerce_in_list(&mut list, &schema) {
                        refused.get_or_insert(why);
                    }
                    Ok(Transformed::yes(Expr::InList(list)))
                }
                other => Ok(Transformed::no(other)),
            })
        })
    })?;
    match refused {
        Some(why) => Err(EngineError::Plan(why)),
        None => Ok(plan.data),
    }
}

/// Coerces one IN list's items, or says why ksqlDB refuses it.
fn coerce_in_list(
    list: &mut datafusion::logical_expr::expr::InList,
    schema: &DFSchema,
) -> std::result::Result<(), String> {
    use datafusion::common::ScalarValue;
    let Ok(tested) = list.expr.get_type(schema) else {
        return Ok(());
    };
    let tested_kind = scalar_kind(&tested);
    if tested_kind == Kind::Other {
        return Ok(());
    }
    for item in list.list.iter_mut() {
        let Ok(item_type) = item.get_type(schema) else {
            continue;
        };
        let item_kind = scalar_kind(&item_type);
        if item_kind == tested_kind || item_kind == Kind::Null {
            continue;
        }
        let literal = match item {
            Expr::Literal(value, _) => Some(value.clone()),
            _ => None,
        };
        let coerced = match (tested_kind, literal) {
            (Kind::Number | Kind::Boolean, Some(ScalarValue::Utf8(Some(text)))) => {
                let value = match tested_kind {
                    Kind::Boolean => parse_boolean(&text).map(|b| ScalarValue::Boolean(Some(b))),
                    // A number's text: an integer stays exact, others are read as DOUBLE.
                    _ => match text.trim().parse::<i64>() {
                        Ok(integer) => Some(ScalarValue::Int64(Some(integer))),
                        Err(_) => text
                            .trim()
                            .parse::<f64>()
                            .ok()
                            .filter(|f| f.is_finite())
                            .map(|f| match f.fract() == 0.0 && f.abs() < 9.0e15 {
                                true => ScalarValue::Int64(Some(f as i64)),
                                false => ScalarValue::Float64(Some(f)),
                            }),
                    },
                };
                let Some(value) = value else {
                    // The type without its precision: `DECIMAL`, not `DECIMAL(4, 2)`.
                    let tested_name = type_name(&tested);
                    let base = tested_name.split('(').next().unwrap_or_default();
                    return Err(format!(
                        "Invalid Predicate: invalid input syntax for type {base}: \"{text}\"."
                    ));
                };
                Expr::Literal(value, None)
            }
            (Kind::String, Some(value)) if item_kind != Kind::Other => {
                Expr::Literal(ScalarValue::Utf8(Some(value.to_string())), None)
            }
            _ => {
                let item_name = match item {
                    Expr::Literal(ScalarValue::Int64(Some(n)), _) if i32::try_from(*n).is_ok() => {
                        "INTEGER".to_string()
                    }
                    _ => type_name(&item_type),
                };
                return Err(format!(
                    "Invalid Predicate: operator does not exist: {} = {item_name} ({})\n\
                     Hint: You might need to add explicit type casts.",
                    type_name(&tested),
                    ksql_text(item)
                ));
            }
        };
        *item = coerced;
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Null,
    Number,
    String,
    Boolean,
    Other,
}

fn scalar_kind(data_type: &DataType) -> Kind {
    match data_type {
        DataType::Null => Kind::Null,
        t if t.is_numeric() => Kind::Number,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Kind::String,
        DataType::Boolean => Kind::Boolean,
        _ => Kind::Other,
    }
}

/// ksqlDB's reading of text as a BOOLEAN: `true`, `false`, `yes`, `no` or a prefix of one
/// (`t`, `tr`, `y`, `n`, ...), in any case.
fn parse_boolean(text: &str) -> Option<bool> {
    let lower = text.trim().to_lowercase();
    if lower.is_empty() {
        return None;
    }
    let prefix_of = |word: &str| word.starts_with(lower.as_str());
    match () {
        _ if prefix_of("true") || prefix_of("yes") => Some(true),
        _ if prefix_of("false") || prefix_of("no") => Some(false),
        _ => None,
    }
}
