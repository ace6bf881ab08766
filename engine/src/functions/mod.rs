//! Functions: DataFusion's built-ins under ksqlDB's names, and ksqlDB's own where DataFusion
//! has none or means something else ([`udaf`], [`histogram`], EXPLODE in `explode`, AS_VALUE
//! in `as_value`, Java-pattern date functions in `datetime`,
//! REGEXP_EXTRACT in `regex`, TRANSFORM, FILTER and REDUCE in `lambda`, LPAD and RPAD in `pad`, TO_JSON_STRING in `json`, the URL functions in `url`,
//! conversions to and from BYTES in `bytes`, ARRAY and MAP functions in `collections`, date
//! arithmetic in `dates`, functions over JSON text in `json_text`, SIGN and LOG in `math`,
//! string functions in `text`, GEO_DISTANCE in `geo`, most of them computed row by row
//! through [`rowwise`]); MIN and MAX over tables in `retractable`; [`guard`] gives null
//! where a call fails on a row, as ksqlDB does;
//! [`catalog`] lists them for SHOW FUNCTIONS and DESCRIBE FUNCTION; [`operators`] plans
//! ksqlDB's operators that DataFusion spells differently; CORRELATION and STDDEV_SAMP give
//! ksqlDB's NaN and 0.0 over too few rows in `degenerate`.

use datafusion::prelude::SessionContext;

pub(crate) mod as_value;
pub(crate) mod attr;
pub(crate) mod bytes;
pub mod catalog;
pub(crate) mod collections;
pub(crate) mod dates;
pub(crate) mod datetime;
pub(crate) mod degenerate;
pub(crate) mod explode;
pub(crate) mod geo;
pub(crate) mod guard;
pub mod histogram;
pub(crate) mod json;
pub(crate) mod json_text;
pub(crate) mod lambda;
pub(crate) mod math;
pub mod operators;
pub(crate) mod pad;
pub(crate) mod regex;
pub(crate) mod retractable;
pub(crate) mod rowwise;
pub(crate) mod text;
pub mod udaf;
pub(crate) mod url;

/// A DataFusion session that reads ksqlDB's SQL: identifiers keep the case Eddy's parser gave
/// them, and ksqlDB's functions and operators are registered.
pub fn session() -> SessionContext {
    let config = datafusion::prelude::SessionConfig::new()
        .set_bool("datafusion.sql_parser.enable_ident_normalization", false);
    let context = SessionContext::new_with_config(config);
    register(&context);
    context
}

/// Registers ksqlDB's functions with a DataFusion session.
pub fn register(context: &SessionContext) {
    for function in udaf::all().into_iter().chain(degenerate::udafs()) {
        context.register_udaf(function);
    }
    context.register_udaf(histogram::udaf());
    context.register_udaf(attr::udaf());
    context.register_udf(explode::udf());
    context.register_udf(as_value::udf());
    context.register_udf(json::udf());
    lambda::register(context);
    let scalars = datetime::udfs()
        .into_iter()
        .chain(regex::udfs())
        .chain(pad::udfs())
        .chain(url::udfs())
        .chain(bytes::udfs())
        .chain(collections::udfs())
        .chain(dates::udfs())
        .chain(json_text::udfs())
        .chain(math::udfs())
        .chain(text::udfs())
        .chain([geo::udf()]);
    for function in scalars {
        context.register_udf(function);
    }
    use datafusion::execution::FunctionRegistry;
    context
        .state_ref()
        .write()
        .register_expr_planner(std::sync::Arc::new(operators::KsqlOperators))
        .expect("a session state takes expression planners");
}

/// ksqlDB function names whose DataFusion function has another name and the same meaning.
pub fn datafusion_name(name: &str) -> Option<&'static str> {
    Some(match name {
        "ucase" => "upper",
        "lcase" => "lower",
        "len" => "character_length",
        "ifnull" => "coalesce",
        "correlation" => "corr",
        "stddev_sample" => "stddev_samp",
        _ => return None,
    })
}
