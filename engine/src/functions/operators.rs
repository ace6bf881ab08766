//! ksqlDB's operators that DataFusion spells differently, planned while DataFusion turns SQL
//! into expressions (where the operands' types are known): `+` on two strings concatenates.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DFSchema, Result};
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::{BinaryExpr, Expr, ExprSchemable, Operator};
use datafusion::sql::sqlparser::ast::BinaryOperator;

/// The [`ExprPlanner`] registered with every query session.
#[derive(Debug)]
pub struct KsqlOperators;

impl ExprPlanner for KsqlOperators {
    fn plan_binary_op(
        &self,
        expr: RawBinaryExpr,
        schema: &DFSchema,
    ) -> Result<PlannerResult<RawBinaryExpr>> {
        let is_string = |e: &Expr| {
            matches!(
                e.get_type(schema),
                Ok(DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
            )
        };
        if expr.op == BinaryOperator::Plus && is_string(&expr.left) && is_string(&expr.right) {
            return Ok(PlannerResult::Planned(Expr::BinaryExpr(BinaryExpr::new(
                Box::new(expr.left),
                Operator::StringConcat,
                Box::new(expr.right),
            ))));
        }
        Ok(PlannerResult::Original(expr))
    }
}
