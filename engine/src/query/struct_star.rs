//! ksqlDB's `s->*` in a SELECT: every field of a struct as a column of its own, named after the
//! field (`v1->a->*`, `I.V1->*`, key columns too). The parser reads `->*` as access to a field
//! named `*`, which [`super::rewrite`] turns into `get_field(s, '*')`; here, with the sources'
//! columns known, each such item becomes one item per field.

use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, Ident, ObjectNamePart, Select, SelectItem, TableFactor,
};

use super::rewrite::{field_access, field_access_parts};

use crate::catalog::Catalog;
use crate::error::{EngineError, Result};
use crate::types::SqlType;

/// Expands each `s->*` item of `select` into the struct's fields.
pub(crate) fn expand(select: &mut Select, catalog: &Catalog) -> Result<()> {
    if !select.projection.iter().any(|item| star_of(item).is_some()) {
        return Ok(());
    }
    let mut sources = Vec::new();
    for table in &select.from {
        let relations =
            std::iter::once(&table.relation).chain(table.joins.iter().map(|j| &j.relation));
        for relation in relations {
            if let TableFactor::Table { name, alias, .. } = relation {
                let Some(ObjectNamePart::Identifier(ident)) = name.0.last() else {
                    continue;
                };
                if let Ok(source) = catalog.get(&ident.value) {
                    let alias = alias.as_ref().map(|a| a.name.value.clone());
                    sources.push((alias.unwrap_or_else(|| ident.value.clone()), source));
                }
            }
        }
    }
    let type_of_column = |qualifier: Option<&str>, name: &str| -> Option<SqlType> {
        sources
            .iter()
            .filter(|(alias, source)| qualifier.is_none_or(|q| q == alias || q == source.name))
            .flat_map(|(_, source)| source.columns.iter())
            .find(|column| column.name == name)
            .map(|column| column.data_type.clone())
    };
    let mut projection = Vec::with_capacity(select.projection.len());
    for item in std::mem::take(&mut select.projection) {
        let Some(inner) = star_of(&item) else {
            projection.push(item);
            continue;
        };
        let Some(SqlType::Struct(fields)) = type_of(inner, &type_of_column) else {
            return Err(EngineError::Plan(format!(
                "Expected STRUCT type got {inner}->*: only a STRUCT's fields can be selected with ->*"
            )));
        };
        for (field, _) in fields {
            projection.push(SelectItem::ExprWithAlias {
                expr: field_access(inner.clone(), &field),
                alias: Ident::with_quote('"', field),
            });
        }
    }
    select.projection = projection;
    Ok(())
}

/// The struct of an `s->*` item.
fn star_of(item: &SelectItem) -> Option<&SqlExpr> {
    let SelectItem::UnnamedExpr(expr) = item else {
        return None;
    };
    match field_access_parts(expr)? {
        (inner, "*") => Some(inner),
        _ => None,
    }
}

/// The type of a column, or of a field of one, `None` when it is something else.
fn type_of(
    expr: &SqlExpr,
    column: &dyn Fn(Option<&str>, &str) -> Option<SqlType>,
) -> Option<SqlType> {
    match expr {
        SqlExpr::Identifier(ident) => column(None, &ident.value),
        SqlExpr::CompoundIdentifier(parts) => match parts.as_slice() {
            [qualifier, name] => column(Some(&qualifier.value), &name.value),
            _ => None,
        },
        SqlExpr::Nested(inner) => type_of(inner, column),
        other => {
            let (inner, name) = field_access_parts(other)?;
            match type_of(inner, column)? {
                SqlType::Struct(fields) => fields
                    .into_iter()
                    .find(|(field, _)| field == name)
                    .map(|(_, t)| t),
                _ => None,
            }
        }
    }
}
