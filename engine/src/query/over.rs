//! OVER windows: aggregate functions over the rows before each row of its partition
//! (`AVG(price) OVER (PARTITION BY seller ORDER BY ROWTIME ROWS BETWEEN 10 PRECEDING AND
//! CURRENT ROW)`), an Eddy extension of ksqlDB's SQL for Nexmark q6.
//!
//! A stream's rows arrive roughly in time order; an OVER window needs them exactly in its
//! ORDER BY order. So the window is ordered by event time first (ROWTIME, or the stream's
//! TIMESTAMP column), and the runtime holds each row until every partition reader has passed
//! its time, then takes the rows in ORDER BY order (further ORDER BY columns break ties).
//! The frame ends at the current row: later rows have not arrived when a row is emitted.

use std::sync::Arc;

use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::expr::{AggregateFunction, WindowFunction};
use datafusion::logical_expr::{
    Expr, WindowFrameBound, WindowFrameUnits, WindowFunctionDefinition,
};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;

use crate::catalog::{Source, ROWTIME};
use crate::error::{EngineError, Result};
use crate::parser::SourceKind;

/// The OVER windows of a SELECT: they share one PARTITION BY and one ORDER BY.
#[derive(Clone)]
pub struct OverPlan {
    pub partition_by: Vec<Arc<dyn PhysicalExpr>>,
    /// The ORDER BY expressions with whether each is descending; the first is the rows'
    /// event time, ascending.
    pub order_by: Vec<(Arc<dyn PhysicalExpr>, bool)>,
    pub functions: Vec<OverFunction>,
}

/// One aggregate function OVER the window, and its frame.
#[derive(Clone)]
pub struct OverFunction {
    pub aggregate: Arc<AggregateFunctionExpr>,
    pub frame: Frame,
}

/// Which rows before the current one a function sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// `ROWS BETWEEN n PRECEDING AND CURRENT ROW`: the current row and up to n before it.
    Rows(usize),
    /// `ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW`: every row so far.
    AllRows,
    /// `RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW` (the default with ORDER BY):
    /// every row so far and the current row's peers (equal in every ORDER BY column).
    AllRowsAndPeers,
}

impl std::fmt::Display for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Frame::Rows(n) => write!(f, "ROWS {n} PRECEDING"),
            Frame::AllRows => write!(f, "ROWS UNBOUNDED PRECEDING"),
            Frame::AllRowsAndPeers => write!(f, "RANGE UNBOUNDED PRECEDING"),
        }
    }
}

/// Plans the window expressions of a SELECT (`windows`, as DataFusion's Window nodes list
/// them, innermost first) over rows of `scan` read from `source`.
pub(super) fn plan(
    windows: &[Expr],
    scan: &DFSchema,
    source: &Source,
    context: &SessionContext,
) -> Result<OverPlan> {
    if source.kind != SourceKind::Stream {
        return Err(EngineError::Plan(format!(
            "OVER windows need a stream: {} is a table",
            source.name
        )));
    }
    let mut shared: Option<(Vec<Expr>, Vec<datafusion::logical_expr::expr::Sort>)> = None;
    let mut functions = Vec::new();
    for expr in windows {
        let mut inner = expr;
        while let Expr::Alias(alias) = inner {
            inner = alias.expr.as_ref();
        }
        let Expr::WindowFunction(window) = inner else {
            return Err(EngineError::Internal(format!(
                "a window node computes {expr}"
            )));
        };
        let WindowFunction { fun, params } = window.as_ref();
        let WindowFunctionDefinition::AggregateUDF(udaf) = fun else {
            return Err(EngineError::Unsupported(format!(
                "{fun} OVER a window: OVER windows take aggregate functions (AVG, SUM, COUNT, \
                 MIN, MAX, ...)"
            )));
        };
        if params.distinct || params.filter.is_some() {
            return Err(EngineError::Unsupported(
                "DISTINCT or FILTER in an aggregate OVER a window".into(),
            ));
        }
        match &shared {
            None => shared = Some((params.partition_by.clone(), params.order_by.clone())),
            Some((partition_by, order_by))
                if *partition_by == params.partition_by && *order_by == params.order_by => {}
            Some(_) => {
                return Err(EngineError::Unsupported(
                    "OVER windows with different PARTITION BY or ORDER BY in one query".into(),
                ))
            }
        }
        if params.order_by.is_empty() {
            return Err(EngineError::Plan(
                "an OVER window needs ORDER BY its rows' event time (ROWTIME, or the stream's \
                 TIMESTAMP column): a stream's rows have no order otherwise"
                    .into(),
            ));
        }
        let frame = frame(&params.window_frame)?;
        let aggregate = Expr::AggregateFunction(AggregateFunction::new_udf(
            Arc::clone(udaf),
            params.args.clone(),
            false,
            None,
            vec![],
            None,
        ));
        let props = datafusion::execution::context::ExecutionProps::new();
        #[allow(deprecated)]
        let (aggregate, _, _) =
            datafusion::physical_planner::create_aggregate_expr_and_maybe_filter(
                &aggregate,
                scan,
                scan.as_arrow(),
                &props,
            )?;
        // The frame must be computable as rows come: the sliding accumulator retracts the
        // row leaving a bounded frame.
        if let Frame::Rows(_) = frame {
            aggregate.create_sliding_accumulator().map_err(|_| {
                EngineError::Unsupported(format!(
                    "{} over a bounded ROWS frame (it cannot forget a row leaving the frame)",
                    udaf.name()
                ))
            })?;
        }
        functions.push(OverFunction { aggregate, frame });
    }
    let Some((partition_by, order_by)) = shared else {
        return Err(EngineError::Internal(
            "a window node without functions".into(),
        ));
    };
    let Some(first) = order_by.first() else {
        return Err(EngineError::Internal(
            "an OVER window without ORDER BY".into(),
        ));
    };
    let time_columns = [Some(ROWTIME), source.timestamp_column.as_deref()];
    let by_time = matches!(&first.expr, Expr::Column(c)
        if time_columns.iter().flatten().any(|t| c.name.eq_ignore_ascii_case(t)));
    if !by_time || !first.asc {
        return Err(EngineError::Plan(format!(
            "an OVER window is ordered by its rows' event time first, ascending (ORDER BY \
             ROWTIME{}), not by {}",
            source
                .timestamp_column
                .as_deref()
                .map(|t| format!(" or ORDER BY {t}"))
                .unwrap_or_default(),
            if first.asc {
                first.expr.to_string()
            } else {
                format!("{} DESC", first.expr)
            }
        )));
    }
    let physical = |e: &Expr| super::physical_expr(context, e.clone(), scan);
    Ok(OverPlan {
        partition_by: partition_by
            .iter()
            .map(physical)
            .collect::<datafusion::error::Result<_>>()?,
        order_by: order_by
            .iter()
            .map(|s| Ok((physical(&s.expr)?, !s.asc)))
            .collect::<datafusion::error::Result<_>>()?,
        functions,
    })
}

/// The frame of a window function, when the runtime can compute it as rows come.
fn frame(frame: &datafusion::logical_expr::WindowFrame) -> Result<Frame> {
    let unsupported = || {
        EngineError::Unsupported(format!(
            "the window frame {frame}: a streaming OVER window's frame is ROWS BETWEEN n \
             PRECEDING (or UNBOUNDED PRECEDING) AND CURRENT ROW, or RANGE BETWEEN UNBOUNDED \
             PRECEDING AND CURRENT ROW"
        ))
    };
    if frame.end_bound != WindowFrameBound::CurrentRow {
        return Err(unsupported());
    }
    match (&frame.units, &frame.start_bound) {
        (WindowFrameUnits::Rows, WindowFrameBound::Preceding(n)) if n.is_null() => {
            Ok(Frame::AllRows)
        }
        (WindowFrameUnits::Rows, WindowFrameBound::Preceding(n)) => {
            let n = match n {
                ScalarValue::UInt64(Some(n)) => *n as usize,
                ScalarValue::Int64(Some(n)) if *n >= 0 => *n as usize,
                _ => return Err(unsupported()),
            };
            Ok(Frame::Rows(n))
        }
        (WindowFrameUnits::Rows, WindowFrameBound::CurrentRow) => Ok(Frame::Rows(0)),
        (WindowFrameUnits::Range, WindowFrameBound::Preceding(n)) if n.is_null() => {
            Ok(Frame::AllRowsAndPeers)
        }
        _ => Err(unsupported()),
    }
}
