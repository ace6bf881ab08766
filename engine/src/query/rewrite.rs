//! ksqlDB's expression syntax in DataFusion's spelling, rewritten on the sqlparser AST before
//! DataFusion plans it: function names (upper case, ksqlDB's aliases), COUNT_DISTINCT,
//! struct field access `s->f`, and the constructors `MAP(k := v, ..)` and
//! `STRUCT(f := v, ..)`. Operators that need the operands' types are planned later, in
//! [`crate::functions::operators`].

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    visit_expressions_mut, BinaryOperator, Expr as SqlExpr, Function, FunctionArg, FunctionArgExpr,
    FunctionArgOperator, FunctionArgumentList, FunctionArguments, Ident, ObjectName,
    ObjectNamePart, Value,
};

use crate::functions;

/// Rewrites every expression of a query into DataFusion's spelling.
pub(crate) fn rewrite_query(query: &mut datafusion::sql::sqlparser::ast::Query) {
    let _ = visit_expressions_mut(query, |expr| {
        rewrite_node(expr);
        ControlFlow::<()>::Continue(())
    });
}

/// Rewrites one expression (and those inside it) into DataFusion's spelling.
pub(crate) fn rewrite(expr: &mut SqlExpr) {
    let _ = visit_expressions_mut(expr, |expr| {
        rewrite_node(expr);
        ControlFlow::<()>::Continue(())
    });
}

/// Rewrites one node, whose children already are (the visits are post-order): field access
/// and constructors; keywords sqlparser takes for functions are columns; function names in
/// lower case, as DataFusion registers them, under their DataFusion alias where they have
/// one; COUNT_DISTINCT(x) becomes COUNT(DISTINCT x).
fn rewrite_node(expr: &mut SqlExpr) {
    use datafusion::sql::sqlparser::ast::DuplicateTreatment;
    if rebuild_field_access(expr) {
        return;
    }
    if let Some(rewritten) = constructor(expr) {
        *expr = rewritten;
        return;
    }
    // sqlparser reads a few keywords (USER, CURRENT_DATE, ...) as functions without
    // parentheses; ksqlDB has none, so they are columns.
    if let SqlExpr::Function(function) = expr {
        if let (FunctionArguments::None, [ObjectNamePart::Identifier(ident)]) =
            (&function.args, function.name.0.as_slice())
        {
            *expr = SqlExpr::Identifier(Ident::with_quote('"', ident.value.clone()));
            return;
        }
        // `I.USER`: a qualified column whose name is such a keyword.
        if matches!(function.args, FunctionArguments::None) && function.name.0.len() == 2 {
            let parts: Vec<Ident> = function
                .name
                .0
                .iter()
                .filter_map(|p| match p {
                    ObjectNamePart::Identifier(ident) => {
                        Some(Ident::with_quote('"', ident.value.clone()))
                    }
                    _ => None,
                })
                .collect();
            *expr = SqlExpr::CompoundIdentifier(parts);
            return;
        }
    }
    if let SqlExpr::Function(function) = expr {
        let mut distinct = false;
        for part in function.name.0.iter_mut() {
            if let ObjectNamePart::Identifier(ident) = part {
                if ident.quote_style.is_none() {
                    let lower = ident.value.to_lowercase();
                    distinct = lower == "count_distinct";
                    let name = if distinct { "count" } else { lower.as_str() };
                    ident.value = functions::datafusion_name(name).unwrap_or(name).to_string();
                }
            }
        }
        if let (true, FunctionArguments::List(list)) = (distinct, &mut function.args) {
            list.duplicate_treatment = Some(DuplicateTreatment::Distinct);
        }
        time_unit(function);
    }
}

/// The unit of ksqlDB's date arithmetic is a word, `TIMESTAMPADD(SECONDS, 5, ts)`: passed to
/// the function as text.
fn time_unit(function: &mut Function) {
    const SHIFTS: &[&str] = &[
        "dateadd",
        "datesub",
        "timeadd",
        "timesub",
        "timestampadd",
        "timestampsub",
    ];
    let named = |name: &str| matches!(function.name.0.as_slice(), [ObjectNamePart::Identifier(i)] if i.value == name);
    if !SHIFTS.iter().any(|name| named(name)) {
        return;
    }
    let FunctionArguments::List(list) = &mut function.args else {
        return;
    };
    if let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(unit))) = list.args.first_mut() {
        if let SqlExpr::Identifier(word) = unit {
            let upper = word.value.to_uppercase();
            if word.quote_style.is_none() && functions::dates::UNITS.contains(&upper.as_str()) {
                *unit = string(&upper);
            }
        }
    }
}

/// `s->f` reads field `f` of struct `s`: `get_field(s, 'f')`. In ksqlDB `->` binds tightest,
/// but sqlparser reads it as Postgres's JSON arrow, looser than comparisons and arithmetic:
/// `x = s->f` comes as `(x = s)->f` and `s->f = x` as `s->(f = x)`. The access is rebuilt
/// between the innermost operands on either side: the rightmost of the left side and the
/// leftmost of the right, and the operators around them are kept. Rewrites in place.
fn rebuild_field_access(expr: &mut SqlExpr) -> bool {
    if !matches!(
        expr,
        SqlExpr::BinaryOp {
            op: BinaryOperator::Arrow,
            ..
        }
    ) {
        return false;
    }
    let SqlExpr::BinaryOp { left, right, .. } = expr else {
        return false;
    };
    if !matches!(leftmost(right), SqlExpr::Identifier(_)) {
        return false;
    }
    let (mut left, mut right) = (left.as_ref().clone(), right.as_ref().clone());
    let field_leaf = leftmost(&mut right);
    let SqlExpr::Identifier(field) = field_leaf else {
        return false;
    };
    let access = field_access(rightmost(&mut left).clone(), &field.value);
    *field_leaf = access;
    *rightmost(&mut left) = right;
    *expr = left;
    true
}

/// The operand that ends an expression, where a tighter `->` after it applies.
fn rightmost(expr: &mut SqlExpr) -> &mut SqlExpr {
    match expr {
        SqlExpr::BinaryOp { right, .. } => rightmost(right),
        SqlExpr::UnaryOp { expr: inner, .. } => rightmost(inner),
        other => other,
    }
}

/// The operand that starts an expression, where a tighter `->` before it applies.
fn leftmost(expr: &mut SqlExpr) -> &mut SqlExpr {
    match expr {
        SqlExpr::BinaryOp { left, .. } => leftmost(left),
        SqlExpr::IsNull(inner)
        | SqlExpr::IsNotNull(inner)
        | SqlExpr::IsTrue(inner)
        | SqlExpr::IsNotTrue(inner)
        | SqlExpr::IsFalse(inner)
        | SqlExpr::IsNotFalse(inner)
        | SqlExpr::IsDistinctFrom(inner, _)
        | SqlExpr::IsNotDistinctFrom(inner, _)
        | SqlExpr::InList { expr: inner, .. }
        | SqlExpr::Between { expr: inner, .. }
        | SqlExpr::Like { expr: inner, .. }
        | SqlExpr::ILike { expr: inner, .. }
        | SqlExpr::Cast { expr: inner, .. }
        | SqlExpr::CompoundFieldAccess { root: inner, .. } => leftmost(inner),
        other => other,
    }
}

/// The name ksqlDB gives an unaliased `s->f` in a projection: the field's.
/// ksqlDB's names for unnamed SELECT items that are neither columns nor qualified columns:
/// a field access is named after its field, anything else `KSQL_COL_<n>`. A name a source's
/// column or an earlier item has already is not taken again: a field's name gets the next
/// free `_<n>` suffix (`B`, `B_1`, `B_2`), and `<n>` counts past the taken ones.
pub(crate) struct ItemNames {
    taken: std::collections::HashSet<String>,
    generated: usize,
}

impl ItemNames {
    /// Names for a query over sources with `columns`.
    pub(crate) fn new<'a>(columns: impl IntoIterator<Item = &'a str>) -> ItemNames {
        ItemNames {
            taken: columns.into_iter().map(str::to_string).collect(),
            generated: 0,
        }
    }

    /// The name of the unnamed item `expr`.
    pub(crate) fn name(&mut self, expr: &SqlExpr) -> String {
        let name = match field_access_name(expr) {
            Some(field) => (0..)
                .map(|n| match n {
                    0 => field.clone(),
                    n => format!("{field}_{n}"),
                })
                .find(|name| !self.taken.contains(name)),
            None => (self.generated..)
                .map(|n| format!("KSQL_COL_{n}"))
                .find(|name| !self.taken.contains(name)),
        }
        .expect("an unbounded range has a free name");
        if let Some(n) = name
            .strip_prefix("KSQL_COL_")
            .and_then(|n| n.parse::<usize>().ok())
        {
            self.generated = self.generated.max(n + 1);
        }
        self.taken.insert(name.clone());
        name
    }
}

pub(crate) fn field_access_name(expr: &SqlExpr) -> Option<String> {
    field_access_parts(expr).map(|(_, name)| name.to_string())
}

/// `s->f` (as `get_field(s, 'f')`) as the struct and the field's name.
pub(crate) fn field_access_parts(expr: &SqlExpr) -> Option<(&SqlExpr, &str)> {
    let SqlExpr::Function(function) = expr else {
        return None;
    };
    let is_get_field = matches!(function.name.0.as_slice(),
        [ObjectNamePart::Identifier(ident)] if ident.value == "get_field");
    let FunctionArguments::List(list) = &function.args else {
        return None;
    };
    match (is_get_field, list.args.as_slice()) {
        (
            true,
            [FunctionArg::Unnamed(FunctionArgExpr::Expr(inner)), FunctionArg::Unnamed(FunctionArgExpr::Expr(SqlExpr::Value(v)))],
        ) => match &v.value {
            Value::SingleQuotedString(name) => Some((inner, name.as_str())),
            _ => None,
        },
        _ => None,
    }
}

/// `s->f`: field `f` of the struct `s`.
pub(crate) fn field_access(inner: SqlExpr, field: &str) -> SqlExpr {
    call("get_field", vec![inner, string(field)])
}

/// `MAP(k := v, ..)` becomes `make_map(k, v, ..)` and `STRUCT(f := v, ..)` becomes
/// `named_struct('f', v, ..)`. sqlparser reads `a := b` in arguments as a named argument
/// where `a` can be a name, else as an assignment expression; both are taken.
fn constructor(expr: &SqlExpr) -> Option<SqlExpr> {
    let (is_struct, pairs): (bool, Vec<(SqlExpr, SqlExpr)>) = match expr {
        // sqlparser reads STRUCT(..) as its struct literal.
        SqlExpr::Struct { values, fields } if fields.is_empty() && !values.is_empty() => {
            (true, values.iter().map(assignment).collect::<Option<_>>()?)
        }
        SqlExpr::Function(function) => {
            let [ObjectNamePart::Identifier(name)] = function.name.0.as_slice() else {
                return None;
            };
            let is_struct = name.value.eq_ignore_ascii_case("struct");
            if !is_struct && !name.value.eq_ignore_ascii_case("map") {
                return None;
            }
            let FunctionArguments::List(list) = &function.args else {
                return None;
            };
            let pairs = list
                .args
                .iter()
                .map(|arg| match arg {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(pair)) => assignment(pair),
                    // `'a' := v` and `K := v`: sqlparser takes 'a' and K for argument names.
                    FunctionArg::Named {
                        name,
                        arg: FunctionArgExpr::Expr(value),
                        operator: FunctionArgOperator::Assignment,
                    } => {
                        let name = match name.quote_style {
                            Some('\'') => string(&name.value),
                            _ => SqlExpr::Identifier(name.clone()),
                        };
                        Some((name, value.clone()))
                    }
                    _ => None,
                })
                .collect::<Option<_>>()?;
            (is_struct, pairs)
        }
        _ => return None,
    };
    let mut args = Vec::with_capacity(pairs.len() * 2);
    for (name, value) in pairs {
        args.push(match (is_struct, name) {
            (true, SqlExpr::Identifier(field)) => string(&field.value),
            (true, _) => return None,
            (false, key) => key,
        });
        args.push(value);
    }
    Some(call(
        if is_struct {
            "named_struct"
        } else {
            "make_map"
        },
        args,
    ))
}

/// `a := b` as its two sides.
fn assignment(expr: &SqlExpr) -> Option<(SqlExpr, SqlExpr)> {
    match expr {
        SqlExpr::BinaryOp {
            left,
            op: BinaryOperator::Assignment,
            right,
        } => Some((left.as_ref().clone(), right.as_ref().clone())),
        _ => None,
    }
}

/// A call of DataFusion's function `name`.
fn call(name: &str, args: Vec<SqlExpr>) -> SqlExpr {
    SqlExpr::Function(Function {
        name: ObjectName(vec![ObjectNamePart::Identifier(Ident::new(name))]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: args
                .into_iter()
                .map(|a| FunctionArg::Unnamed(FunctionArgExpr::Expr(a)))
                .collect(),
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

fn string(text: &str) -> SqlExpr {
    SqlExpr::Value(Value::SingleQuotedString(text.to_string()).into())
}
