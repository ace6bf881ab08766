//! The function catalog behind SHOW FUNCTIONS and DESCRIBE FUNCTION: ksqlDB's built-ins with
//! their kind, category and a one-line description, listed only when Eddy can run them.
//!
//! Whether a function runs is not written down by hand: a name is listed when the planner
//! handles it itself (rewrites such as COUNT_DISTINCT) or when it
//! resolves, under its own name or its DataFusion alias, in a session set up as queries are.
//! DESCRIBE FUNCTION reads the variations from the resolved function's signature.

use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::{Signature, TypeSignature};
use datafusion::prelude::SessionContext;

use super::session;
use crate::types::SqlType;

/// What a function returns per row: ksqlDB's SCALAR, AGGREGATE or TABLE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FunctionKind {
    Scalar,
    Aggregate,
    Table,
}

impl FunctionKind {
    pub fn name(self) -> &'static str {
        match self {
            FunctionKind::Scalar => "SCALAR",
            FunctionKind::Aggregate => "AGGREGATE",
            FunctionKind::Table => "TABLE",
        }
    }
}

/// One listed function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionInfo {
    pub name: &'static str,
    pub kind: FunctionKind,
    pub category: &'static str,
    pub description: &'static str,
}

/// DESCRIBE FUNCTION's answer: the function and its variations, each its argument types and
/// its return type ("" where it depends on more than the argument types).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionDescription {
    pub info: FunctionInfo,
    pub variations: Vec<(Vec<String>, String)>,
}

const MATH: &str = "MATHEMATICAL";
const STRING: &str = "STRING";
const REGEX: &str = "REGULAR EXPRESSION";
const ARRAY: &str = "ARRAY";
const MAP: &str = "MAP";
const LAMBDA: &str = "LAMBDA";
const JSON: &str = "JSON";
const URL: &str = "URL";
const TIME: &str = "DATE / TIME";
const CONDITIONAL: &str = "CONDITIONAL";
const CONVERSION: &str = "CONVERSIONS";
const AGGREGATE: &str = "AGGREGATE";
const TABLE: &str = "TABLE";
const OTHER: &str = "OTHER";

/// ksqlDB's built-ins: name, kind, category, description.
#[rustfmt::skip]
const KNOWN: &[(&str, FunctionKind, &str, &str)] = {
    use FunctionKind::{Aggregate as A, Scalar as S, Table as T};
    &[
        ("ABS", S, MATH, "The absolute value of a number."),
        ("ACOS", S, MATH, "The inverse cosine of a number, in radians."),
        ("ASIN", S, MATH, "The inverse sine of a number, in radians."),
        ("ATAN", S, MATH, "The inverse tangent of a number, in radians."),
        ("ATAN2", S, MATH, "The angle of the point (x, y), in radians: ATAN2(y, x)."),
        ("CBRT", S, MATH, "The cube root of a number."),
        ("CEIL", S, MATH, "The smallest integer not less than a number."),
        ("COS", S, MATH, "The cosine of an angle in radians."),
        ("COSH", S, MATH, "The hyperbolic cosine of a number."),
        ("COT", S, MATH, "The cotangent of an angle in radians."),
        ("DEGREES", S, MATH, "Radians converted to degrees."),
        ("EXP", S, MATH, "e raised to the power of a number."),
        ("FLOOR", S, MATH, "The largest integer not greater than a number."),
        ("GREATEST", S, MATH, "The largest of its arguments, ignoring nulls."),
        ("LEAST", S, MATH, "The smallest of its arguments, ignoring nulls."),
        ("LN", S, MATH, "The natural logarithm of a number."),
        ("LOG", S, MATH, "The logarithm of a number: LOG(x) natural, LOG(base, x)."),
        ("PI", S, MATH, "The number pi."),
        ("POWER", S, MATH, "A number raised to a power."),
        ("RADIANS", S, MATH, "Degrees converted to radians."),
        ("RANDOM", S, MATH, "A random DOUBLE in [0, 1)."),
        ("ROUND", S, MATH, "A number rounded to the nearest integer, or to n decimal places."),
        ("SIGN", S, MATH, "The sign of a number: -1, 0 or 1."),
        ("SIN", S, MATH, "The sine of an angle in radians."),
        ("SINH", S, MATH, "The hyperbolic sine of a number."),
        ("SQRT", S, MATH, "The square root of a number."),
        ("TAN", S, MATH, "The tangent of an angle in radians."),
        ("TANH", S, MATH, "The hyperbolic tangent of a number."),
        ("TRUNC", S, MATH, "A number truncated towards zero, or to n decimal places."),
        ("ARRAY_CONCAT", S, ARRAY, "Two arrays joined end to end."),
        ("ARRAY_CONTAINS", S, ARRAY, "Whether an array holds a value."),
        ("ARRAY_DISTINCT", S, ARRAY, "An array without its duplicate elements."),
        ("ARRAY_EXCEPT", S, ARRAY, "The elements of the first array not in the second."),
        ("ARRAY_INTERSECT", S, ARRAY, "The elements in both arrays."),
        ("ARRAY_JOIN", S, ARRAY, "An array's elements joined into a string by a delimiter."),
        ("ARRAY_LENGTH", S, ARRAY, "The number of elements in an array."),
        ("ARRAY_MAX", S, ARRAY, "The largest element of an array."),
        ("ARRAY_MIN", S, ARRAY, "The smallest element of an array."),
        ("ARRAY_REMOVE", S, ARRAY, "An array without the elements equal to a value."),
        ("ARRAY_SORT", S, ARRAY, "An array sorted, ascending unless 'DESC' is given."),
        ("ARRAY_UNION", S, ARRAY, "The distinct elements of both arrays."),
        ("ENTRIES", S, ARRAY, "A map's entries as an array of structs {K, V}, sorted by key if asked."),
        ("GENERATE_SERIES", S, ARRAY, "The integers from one number to another, as an array."),
        ("SLICE", S, ARRAY, "The elements of an array from one position to another (1-based)."),
        ("FILTER", S, LAMBDA, "The elements of an array or the entries of a map a lambda keeps."),
        ("REDUCE", S, LAMBDA, "An array or map reduced to one value by a lambda from an initial state."),
        ("TRANSFORM", S, LAMBDA, "An array's elements, or a map's keys and values, mapped by lambdas."),
        ("MAP_KEYS", S, MAP, "The keys of a map, as an array."),
        ("MAP_VALUES", S, MAP, "The values of a map, as an array."),
        ("AS_MAP", S, MAP, "A map from an array of keys and an array of values."),
        ("MAP_UNION", S, MAP, "The entries of two maps, the second's value where both have a key."),
        ("CHR", S, STRING, "The character with a Unicode code point."),
        ("CONCAT", S, STRING, "Its arguments joined into one string."),
        ("CONCAT_WS", S, STRING, "Its arguments joined by a separator, skipping nulls."),
        ("ELT", S, STRING, "The n-th of its string arguments after n."),
        ("ENCODE", S, STRING, "A string re-encoded from one encoding to another (hex, utf8, ascii, base64)."),
        ("FIELD", S, STRING, "The 1-based position of a string among the strings after it, 0 if absent."),
        ("INITCAP", S, STRING, "A string with the first letter of each word capitalized."),
        ("INSTR", S, STRING, "The 1-based position of a substring in a string, 0 if absent."),
        ("LCASE", S, STRING, "A string in lower case."),
        ("LEN", S, STRING, "The number of characters in a string."),
        ("LPAD", S, STRING, "A string padded on the left to a length."),
        ("MD5", S, STRING, "The MD5 hash of a string, in hexadecimal."),
        ("REPLACE", S, STRING, "A string with every occurrence of a substring replaced."),
        ("RPAD", S, STRING, "A string padded on the right to a length."),
        ("SPLIT", S, STRING, "A string split by a delimiter into an array."),
        ("SPLIT_TO_MAP", S, STRING, "A string split into a map by an entry and a key-value delimiter."),
        ("SUBSTRING", S, STRING, "Part of a string, from a 1-based position, optionally of a length."),
        ("TRIM", S, STRING, "A string without leading and trailing whitespace."),
        ("UCASE", S, STRING, "A string in upper case."),
        ("UUID", S, STRING, "A random UUID, as a string."),
        ("REGEXP_EXTRACT", S, REGEX, "The first substring matching a regular expression."),
        ("REGEXP_REPLACE", S, REGEX, "A string with the matches of a regular expression replaced."),
        ("REGEXP_SPLIT_TO_ARRAY", S, REGEX, "A string split around matches of a regular expression."),
        ("EXTRACTJSONFIELD", S, JSON, "The value at a JSON path in a JSON string."),
        ("TO_JSON_STRING", S, JSON, "A value as a JSON string."),
        ("IS_JSON_STRING", S, JSON, "Whether a string holds JSON."),
        ("JSON_ARRAY_CONTAINS", S, JSON, "Whether a JSON array holds a value."),
        ("JSON_ARRAY_LENGTH", S, JSON, "The number of elements of a JSON array."),
        ("JSON_CONCAT", S, JSON, "JSON objects merged, or JSON values joined into one array."),
        ("JSON_ITEMS", S, JSON, "The elements of a JSON array, each as a JSON string."),
        ("JSON_KEYS", S, JSON, "The keys of a JSON object."),
        ("JSON_RECORDS", S, JSON, "The entries of a JSON object, as a map of strings."),
        ("URL_DECODE_PARAM", S, URL, "A URL query parameter decoded (a '+' as a space)."),
        ("URL_ENCODE_PARAM", S, URL, "A string encoded as a URL query parameter."),
        ("URL_EXTRACT_FRAGMENT", S, URL, "The fragment of a URL (after '#')."),
        ("URL_EXTRACT_HOST", S, URL, "The host of a URL."),
        ("URL_EXTRACT_PARAMETER", S, URL, "The value of a URL's query parameter, as written."),
        ("URL_EXTRACT_PATH", S, URL, "The path of a URL."),
        ("URL_EXTRACT_PORT", S, URL, "The port of a URL, as an INT."),
        ("URL_EXTRACT_PROTOCOL", S, URL, "The protocol (scheme) of a URL."),
        ("URL_EXTRACT_QUERY", S, URL, "The query of a URL (after '?'), as written."),
        ("CONVERT_TZ", S, TIME, "A timestamp converted from one time zone to another."),
        ("DATEADD", S, TIME, "A date plus an interval."),
        ("DATESUB", S, TIME, "A date minus an interval."),
        ("FORMAT_DATE", S, TIME, "A date formatted with a pattern."),
        ("FORMAT_TIMESTAMP", S, TIME, "A timestamp formatted with a pattern."),
        ("FORMAT_TIME", S, TIME, "A time formatted with a pattern."),
        ("FROM_DAYS", S, TIME, "Days since the epoch as a DATE."),
        ("FROM_UNIXTIME", S, TIME, "Epoch milliseconds as a TIMESTAMP."),
        ("PARSE_DATE", S, TIME, "A string parsed into a DATE with a pattern."),
        ("PARSE_TIMESTAMP", S, TIME, "A string parsed into a TIMESTAMP with a pattern."),
        ("PARSE_TIME", S, TIME, "A string parsed into a TIME with a pattern."),
        ("TIMEADD", S, TIME, "A time plus an interval, around the clock."),
        ("TIMESUB", S, TIME, "A time minus an interval, around the clock."),
        ("TIMESTAMPADD", S, TIME, "A timestamp plus an interval."),
        ("TIMESTAMPSUB", S, TIME, "A timestamp minus an interval."),
        ("UNIX_DATE", S, TIME, "Days since the epoch: of a date, or today."),
        ("UNIX_TIMESTAMP", S, TIME, "Epoch milliseconds: of a timestamp, or now."),
        ("COALESCE", S, CONDITIONAL, "The first argument that is not null."),
        ("IFNULL", S, CONDITIONAL, "The first argument, or the second when the first is null."),
        ("NULLIF", S, CONDITIONAL, "Null when its two arguments are equal, else the first."),
        ("AS_VALUE", S, OTHER, "A key column copied into the value."),
        ("TO_BYTES", S, CONVERSION, "A string encoded as bytes (hex, utf8, base64, ascii)."),
        ("FROM_BYTES", S, CONVERSION, "Bytes decoded into a string (hex, utf8, base64, ascii)."),
        ("INT_FROM_BYTES", S, CONVERSION, "Four bytes as an INT, big endian unless told."),
        ("BIGINT_FROM_BYTES", S, CONVERSION, "Eight bytes as a BIGINT, big endian unless told."),
        ("DOUBLE_FROM_BYTES", S, CONVERSION, "Eight bytes as a DOUBLE, big endian unless told."),
        ("GEO_DISTANCE", S, OTHER, "The great-circle distance between two points, in km or miles."),
        ("ATTR", A, AGGREGATE, "A column's value when all rows of the group share it, else null."),
        ("AVG", A, AGGREGATE, "The average of a column's values."),
        ("COLLECT_LIST", A, AGGREGATE, "The values of a column, as an array (at most 1000)."),
        ("COLLECT_SET", A, AGGREGATE, "The distinct values of a column, as an array (at most 1000)."),
        ("CORRELATION", A, AGGREGATE, "The Pearson correlation of two columns."),
        ("COUNT", A, AGGREGATE, "The number of rows, or of non-null values of a column."),
        ("COUNT_DISTINCT", A, AGGREGATE, "The number of distinct non-null values of a column."),
        ("EARLIEST_BY_OFFSET", A, AGGREGATE, "The earliest value of a column by offset, or the n earliest."),
        ("HISTOGRAM", A, AGGREGATE, "How often each value of a string column occurs, as a map (at most 1000 values)."),
        ("LATEST_BY_OFFSET", A, AGGREGATE, "The latest value of a column by offset, or the n latest."),
        ("MAX", A, AGGREGATE, "The largest value of a column."),
        ("MIN", A, AGGREGATE, "The smallest value of a column."),
        ("STDDEV_SAMP", A, AGGREGATE, "The sample standard deviation of a column."),
        ("STDDEV_SAMPLE", A, AGGREGATE, "The sample standard deviation of a column."),
        ("SUM", A, AGGREGATE, "The sum of a column's values."),
        ("TOPK", A, AGGREGATE, "The k largest values of a column, as an array."),
        ("TOPKDISTINCT", A, AGGREGATE, "The k largest distinct values of a column, as an array."),
        ("EXPLODE", T, TABLE, "One row per element of an array."),
    ]
};

/// Names the planner rewrites before DataFusion sees them.
const PLANNER_HANDLED: &[&str] = &["COUNT_DISTINCT", "EXPLODE"];

/// Whether `name` (any case) is one of ksqlDB's aggregate functions.
pub fn is_aggregate(name: &str) -> bool {
    KNOWN
        .iter()
        .any(|(n, kind, ..)| *kind == FunctionKind::Aggregate && n.eq_ignore_ascii_case(name))
}

/// The functions a query can call, sorted by name.
pub fn list() -> Vec<FunctionInfo> {
    let context = session();
    KNOWN
        .iter()
        .filter(|(name, ..)| resolves(&context, name))
        .map(|&(name, kind, category, description)| FunctionInfo {
            name,
            kind,
            category,
            description,
        })
        .collect()
}

/// DESCRIBE FUNCTION: the function's description and variations; `None` for a name Eddy
/// cannot run.
pub fn describe(name: &str) -> Option<FunctionDescription> {
    let name = name.to_uppercase();
    let info = list().into_iter().find(|f| f.name == name)?;
    let context = session();
    let variations = match signature(&context, &info.name) {
        Some((signature, returns)) => variations(&signature, returns),
        None => Vec::new(),
    };
    Some(FunctionDescription { info, variations })
}

/// Whether a query can call `ksql_name`: a name the planner handles, or a function the
/// session has (scalar, aggregate or higher-order, such as TRANSFORM).
fn resolves(context: &SessionContext, ksql_name: &str) -> bool {
    let higher_order = || {
        let lower = ksql_name.to_lowercase();
        context
            .state()
            .higher_order_functions()
            .contains_key(&lower)
    };
    PLANNER_HANDLED.contains(&ksql_name)
        || signature(context, ksql_name).is_some()
        || higher_order()
}

/// A session with Eddy's functions, as queries have.
type ReturnType = Box<dyn Fn(&[DataType]) -> Option<DataType>>;

/// The signature of the function a ksqlDB name runs as, and how it derives its return type.
fn signature(context: &SessionContext, ksql_name: &str) -> Option<(Signature, ReturnType)> {
    let lower = ksql_name.to_lowercase();
    let name = super::datafusion_name(&lower).unwrap_or(&lower).to_string();
    let state = context.state();
    if let Some(udf) = state.scalar_functions().get(&name) {
        let (udf, signature) = (udf.clone(), udf.signature().clone());
        let returns: ReturnType = Box::new(move |args| udf.return_type(args).ok());
        return Some((signature, returns));
    }
    let udaf = state.aggregate_functions().get(&name)?.clone();
    let signature = udaf.signature().clone();
    let returns: ReturnType = Box::new(move |args| udaf.return_type(args).ok());
    Some((signature, returns))
}

/// The variations DESCRIBE FUNCTION prints, in ksqlDB's type names.
fn variations(signature: &Signature, returns: ReturnType) -> Vec<(Vec<String>, String)> {
    let examples = signature.type_signature.get_example_types();
    let mut out: Vec<(Vec<String>, String)> = examples
        .iter()
        .filter_map(|args| {
            let names = args
                .iter()
                .map(ksql_type_name)
                .collect::<Option<Vec<_>>>()?;
            let result = returns(args)
                .and_then(|t| ksql_type_name(&t))
                .unwrap_or_default();
            Some((names, result))
        })
        .collect();
    out.dedup();
    if out.is_empty() {
        // Variadic and user-defined signatures have no examples: show DataFusion's words.
        let described = match &signature.type_signature {
            TypeSignature::OneOf(options) => {
                options.iter().flat_map(|o| o.to_string_repr()).collect()
            }
            other => other.to_string_repr(),
        };
        out = described
            .into_iter()
            .map(|args| (vec![args], String::new()))
            .collect();
    }
    out
}

/// A type as ksqlDB names it, for the types Eddy's columns can have.
fn ksql_type_name(data_type: &DataType) -> Option<String> {
    let sql = SqlType::from_arrow(data_type)?;
    Some(sql.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_only_functions_that_resolve() {
        let names: Vec<&str> = list().iter().map(|f| f.name).collect();
        for expected in [
            "ABS",
            "UCASE",
            "SPLIT",
            "COLLECT_LIST",
            "HISTOGRAM",
            "EXPLODE",
            "TRANSFORM",
            "REDUCE",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
        let context = session();
        for info in list() {
            assert!(
                resolves(&context, info.name),
                "{} is listed but does not resolve",
                info.name
            );
        }
    }

    #[test]
    fn describes_variations_in_ksql_types() {
        let abs = describe("abs").expect("ABS is described");
        assert_eq!(abs.info.kind, FunctionKind::Scalar);
        assert!(
            abs.variations
                .iter()
                .any(|(args, returns)| args == &["DOUBLE"] && returns == "DOUBLE"),
            "{:?}",
            abs.variations
        );
        assert!(describe("no_such_function").is_none());
    }
}
