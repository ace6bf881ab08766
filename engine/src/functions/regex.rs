//! REGEXP_EXTRACT(pattern, text [, group]) and REGEXP_EXTRACT_ALL(pattern, text [, group]):
//! ksqlDB's (Java's `Matcher.find`) first match, or every match, of a regular expression, as
//! the whole match (group 0) or one capture group. No match, a group that took no part, or a
//! null argument gives null (REGEXP_EXTRACT_ALL: an empty array when nothing matches).

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, Int64Array, ListBuilder, StringArray, StringBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::{plan_err, DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use regex::Regex;

#[derive(Debug, PartialEq, Eq, Hash)]
struct Extract {
    all: bool,
    signature: Signature,
}

pub(crate) fn udfs() -> Vec<ScalarUDF> {
    [false, true]
        .into_iter()
        .map(|all| {
            ScalarUDF::new_from_impl(Extract {
                all,
                signature: Signature::variadic_any(Volatility::Immutable),
            })
        })
        .collect()
}

impl ScalarUDFImpl for Extract {
    fn name(&self) -> &str {
        if self.all {
            "regexp_extract_all"
        } else {
            "regexp_extract"
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arguments: &[DataType]) -> Result<DataType> {
        if !(2..=3).contains(&arguments.len()) {
            return plan_err!(
                "{} takes a pattern, a string and optionally a group",
                self.name().to_uppercase()
            );
        }
        Ok(match self.all {
            true => DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            false => DataType::Utf8,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let strings = |i: usize| -> Result<ArrayRef> { Ok(cast(&arrays[i], &DataType::Utf8)?) };
        let (patterns, texts) = (strings(0)?, strings(1)?);
        let patterns = patterns
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("Utf8");
        let texts = texts.as_any().downcast_ref::<StringArray>().expect("Utf8");
        let groups = match arrays.get(2) {
            Some(g) => Some(cast(g, &DataType::Int64)?),
            None => None,
        };
        let groups = groups
            .as_ref()
            .map(|g| g.as_any().downcast_ref::<Int64Array>().expect("Int64"));
        let mut compiled: Option<(String, Regex)> = None;
        let mut one = StringBuilder::new();
        let mut all = ListBuilder::new(StringBuilder::new());
        for row in 0..rows {
            let group = match groups {
                Some(g) if g.is_null(row) => None,
                Some(g) => usize::try_from(g.value(row)).ok(),
                None => Some(0),
            };
            let (false, false, Some(group)) = (patterns.is_null(row), texts.is_null(row), group)
            else {
                one.append_null();
                all.append_null();
                continue;
            };
            let pattern = patterns.value(row);
            if compiled.as_ref().map(|(p, _)| p.as_str()) != Some(pattern) {
                let regex = Regex::new(pattern).map_err(|e| {
                    DataFusionError::Execution(format!(
                        "invalid regular expression '{pattern}': {e}"
                    ))
                })?;
                compiled = Some((pattern.to_string(), regex));
            }
            let regex = &compiled.as_ref().expect("just compiled").1;
            let text = texts.value(row);
            if self.all {
                for captures in regex.captures_iter(text) {
                    all.values()
                        .append_option(captures.get(group).map(|m| m.as_str()));
                }
                all.append(true);
            } else {
                let found = regex.captures(text).and_then(|c| c.get(group));
                one.append_option(found.map(|m| m.as_str()));
            }
        }
        let out: ArrayRef = match self.all {
            true => Arc::new(all.finish()),
            false => Arc::new(one.finish()),
        };
        Ok(ColumnarValue::Array(out))
    }
}
