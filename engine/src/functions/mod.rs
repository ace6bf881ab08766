//! Functions: DataFusion's built-ins under ksqlDB's names, and ksqlDB's own where DataFusion
//! has none or means something else ([`udaf`], [`histogram`], and EXPLODE in `explode`);
//! [`catalog`] lists them for SHOW FUNCTIONS and DESCRIBE FUNCTION.

use datafusion::prelude::SessionContext;

pub mod catalog;
pub(crate) mod explode;
pub mod histogram;
pub mod udaf;

/// Registers ksqlDB's functions with a DataFusion session.
pub fn register(context: &SessionContext) {
    for function in udaf::all() {
        context.register_udaf(function);
    }
    context.register_udaf(histogram::udaf());
    context.register_udf(explode::udf());
}

/// ksqlDB function names whose DataFusion function has another name and the same meaning.
pub fn datafusion_name(name: &str) -> Option<&'static str> {
    Some(match name {
        "ucase" => "upper",
        "lcase" => "lower",
        "len" => "character_length",
        "ifnull" => "coalesce",
        "instr" => "strpos",
        "split" => "string_to_array",
        _ => return None,
    })
}
