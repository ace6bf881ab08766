//! ksqlDB's SIGN (an INTEGER for any number) and LOG (the natural logarithm, or
//! `LOG(base, value)`: NaN for a base that is not positive or is 1, as Java computes it).

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::ScalarUDF;

use super::rowwise::{self, number, refuse};

pub(crate) fn udfs() -> Vec<ScalarUDF> {
    vec![
        rowwise::udf("sign", sign_type, sign),
        rowwise::udf("log", log_type, log),
    ]
}

fn is_number(data_type: &DataType) -> bool {
    data_type.is_numeric() || *data_type == DataType::Null
}

fn sign_type(name: &str, arguments: &[DataType]) -> Result<DataType> {
    match arguments {
        [value] if is_number(value) => Ok(DataType::Int32),
        _ => refuse(name, arguments),
    }
}

fn sign(values: &[ScalarValue], _: &DataType) -> Result<ScalarValue> {
    let sign = number(&values[0]).map(|v| match v {
        v if v > 0.0 => 1,
        v if v < 0.0 => -1,
        _ => 0,
    });
    Ok(ScalarValue::Int32(sign))
}

fn log_type(name: &str, arguments: &[DataType]) -> Result<DataType> {
    match arguments {
        [value] if is_number(value) => Ok(DataType::Float64),
        [base, value] if is_number(base) && is_number(value) => Ok(DataType::Float64),
        _ => refuse(name, arguments),
    }
}

fn log(values: &[ScalarValue], _: &DataType) -> Result<ScalarValue> {
    let logarithm = match values {
        [value] => number(value).map(f64::ln),
        [base, value] => match (number(base), number(value)) {
            (Some(base), Some(_)) if base <= 0.0 || base == 1.0 => Some(f64::NAN),
            (Some(base), Some(value)) => Some(value.ln() / base.ln()),
            _ => None,
        },
        _ => None,
    };
    Ok(ScalarValue::Float64(logarithm))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logarithms_as_java() {
        let log_of = |values: &[ScalarValue]| match log(values, &DataType::Float64).unwrap() {
            ScalarValue::Float64(v) => v,
            other => panic!("{other:?}"),
        };
        assert_eq!(log_of(&[ScalarValue::Int32(Some(13))]), Some(13f64.ln()));
        let (base, value) = (ScalarValue::Int32(Some(15)), ScalarValue::Int32(Some(13)));
        assert_eq!(log_of(&[base, value]), Some(0.9471572411831843));
        assert!(
            log_of(&[ScalarValue::Int32(Some(1)), ScalarValue::Int32(Some(13))])
                .unwrap()
                .is_nan()
        );
        assert_eq!(log_of(&[ScalarValue::Int32(None)]), None);
    }
}
