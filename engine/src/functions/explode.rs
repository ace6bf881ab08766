//! EXPLODE, ksqlDB's table function: one output row per element of an array. DataFusion sees
//! it as a function from an array to its element type, so the plan's types come out right;
//! the planner then takes it out of the projection (query.rs) and the stateless operator
//! expands the rows (runtime/filter_project.rs). Anywhere else it is an error.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{exec_err, plan_err, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

pub(crate) const NAME: &str = "explode";

#[derive(Debug, PartialEq, Eq, Hash)]
struct Explode {
    signature: Signature,
}

pub(crate) fn udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(Explode {
        signature: Signature::any(1, Volatility::Immutable),
    })
}

impl ScalarUDFImpl for Explode {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arguments: &[DataType]) -> Result<DataType> {
        match arguments {
            [DataType::List(element)] | [DataType::LargeList(element)] => {
                Ok(element.data_type().clone())
            }
            [other] => plan_err!("EXPLODE takes an ARRAY, not {other}"),
            _ => plan_err!("EXPLODE takes one argument"),
        }
    }

    fn invoke_with_args(&self, _: ScalarFunctionArgs) -> Result<ColumnarValue> {
        exec_err!("EXPLODE can only be a whole item of a SELECT's projection")
    }
}
