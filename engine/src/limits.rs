//! Every bound the engine puts on what a client sends, in one place (docs/limits.md lists them
//! with the broker's and the server's).
//!
//! SQL is checked right after parsing, before anything plans or stores it: a statement too long
//! or an expression too deep is refused with an error that names the limit, so no later stage
//! (DataFusion's planner, the operators, EXPLAIN, dropping the tree) can overflow a stack on it.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{Expr, Visit, Visitor};

use crate::error::{EngineError, Position, Result};

/// Longest SQL text one request may carry, after `${variable}` substitution.
pub const SQL_TEXT_BYTES_MAX: usize = 1024 * 1024;
/// Deepest expression tree accepted. Each operator of a chain (`a OR b OR c`) is one level, as
/// is each bracket or function call: a chain of 2,000 ORs is 2,000 levels deep.
pub const EXPRESSION_DEPTH_MAX: usize = 1_000;
/// Deepest nesting of lambdas (`x => TRANSFORM(x, y => ...)`). Each lambda is parsed on its
/// own before the whole tree is measured against [`EXPRESSION_DEPTH_MAX`], so this bounds the
/// parser's own recursion.
pub const LAMBDA_DEPTH_MAX: usize = 64;
/// Most expression nodes (columns, literals, operators, calls) in one statement.
pub const EXPRESSION_NODES_MAX: usize = 100_000;
/// SQL texts up to this long are parsed on the caller's stack; longer ones on a thread whose
/// stack fits the deepest tree their length allows (parsing a chain is iterative, but freeing
/// a refused tree is not).
pub const INLINE_PARSE_BYTES_MAX: usize = 8 * 1024;
/// Stack given per byte of SQL text when it is parsed on its own thread.
const PARSE_STACK_BYTES_PER_TEXT_BYTE: usize = 256;
/// Longest duration a window, grace period, retention or WITHIN may have: 100 years, so sums
/// of them (a window store's retention is size + grace) cannot overflow.
pub const DURATION_MS_MAX: i64 = 100 * 365 * 24 * 60 * 60 * 1000;
/// Windows one row may fall into (a HOPPING window's SIZE over its ADVANCE BY).
pub const WINDOWS_PER_ROW_MAX: i64 = 10_000;
/// Stages one query may run: each join of a chain but the last, and each subquery in FROM,
/// is a stage with its own tasks and internal topics.
pub const STAGES_PER_QUERY_MAX: usize = 32;

/// Refuses SQL text longer than [`SQL_TEXT_BYTES_MAX`].
pub(crate) fn check_text(sql: &str) -> Result<()> {
    if sql.len() > SQL_TEXT_BYTES_MAX {
        return Err(EngineError::sql(
            format!(
                "the SQL text is {} bytes long; the limit is {SQL_TEXT_BYTES_MAX} bytes \
                 (sql.text.bytes.max): split it into several requests",
                sql.len()
            ),
            Position::default(),
        ));
    }
    Ok(())
}

/// Runs `parse` over `sql` where no tree its length allows can overflow the stack: inline for
/// short texts, otherwise on a scoped thread with a stack sized by the text.
pub(crate) fn on_parse_stack<T: Send>(sql: &str, parse: impl FnOnce() -> T + Send) -> T {
    if sql.len() <= INLINE_PARSE_BYTES_MAX {
        return parse();
    }
    let stack_bytes = 8 * 1024 * 1024 + sql.len() * PARSE_STACK_BYTES_PER_TEXT_BYTE;
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("eddy-sql-parse".into())
            .stack_size(stack_bytes)
            .spawn_scoped(scope, parse)
            .expect("a parse thread starts (the OS refused a thread)")
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Refuses an expression tree deeper than [`EXPRESSION_DEPTH_MAX`] or larger than
/// [`EXPRESSION_NODES_MAX`] anywhere in `node`. The walk stops at the first level past the
/// limit, so it never goes deeper than the limit itself.
pub(crate) fn check_expressions<V: Visit>(node: &V, position: Position) -> Result<()> {
    let mut meter = ExpressionMeter::default();
    match node.visit(&mut meter) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(Exceeded::Depth) => Err(EngineError::sql(
            format!(
                "expression is nested more than {EXPRESSION_DEPTH_MAX} levels deep (each \
                 operator of a chain like a OR b OR c counts as a level; limit \
                 sql.expression.depth.max): use IN (...) for long lists of alternatives"
            ),
            position,
        )),
        ControlFlow::Break(Exceeded::Nodes) => Err(EngineError::sql(
            format!(
                "statement has more than {EXPRESSION_NODES_MAX} expression nodes (limit \
                 sql.expression.nodes.max): split it into several statements"
            ),
            position,
        )),
    }
}

enum Exceeded {
    Depth,
    Nodes,
}

#[derive(Default)]
struct ExpressionMeter {
    depth: usize,
    nodes: usize,
}

impl Visitor for ExpressionMeter {
    type Break = Exceeded;

    fn pre_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<Exceeded> {
        self.depth += 1;
        self.nodes += 1;
        if self.depth > EXPRESSION_DEPTH_MAX {
            return ControlFlow::Break(Exceeded::Depth);
        }
        if self.nodes > EXPRESSION_NODES_MAX {
            return ControlFlow::Break(Exceeded::Nodes);
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<Exceeded> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }
}
