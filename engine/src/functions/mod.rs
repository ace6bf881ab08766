//! Functions: DataFusion's built-ins under ksqlDB's names, and ksqlDB's own where DataFusion
//! has none or means something else ([`udaf`]).

use datafusion::prelude::SessionContext;

pub mod udaf;

/// Registers ksqlDB's functions with a DataFusion session.
pub fn register(context: &SessionContext) {
    for function in udaf::all() {
        context.register_udaf(function);
    }
}

/// ksqlDB function names whose DataFusion function has another name and the same meaning.
pub fn datafusion_name(name: &str) -> Option<&'static str> {
    Some(match name {
        "ucase" => "upper",
        "lcase" => "lower",
        "len" => "character_length",
        "ifnull" => "coalesce",
        "instr" => "strpos",
        _ => return None,
    })
}
