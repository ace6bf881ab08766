//! GEO_DISTANCE: the great-circle distance between two points given in decimal degrees, by
//! the haversine formula, in kilometres or (a fifth argument 'MI') miles, as ksqlDB computes
//! it. (Java's trigonometry can differ from Rust's in the last bit or two of a result.)

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{exec_err, Result, ScalarValue};
use datafusion::logical_expr::ScalarUDF;

use super::rowwise::{self, is_text, number, refuse, text};

const EARTH_RADIUS_KM: f64 = 6371.0;
const EARTH_RADIUS_MILES: f64 = 3959.0;

pub(crate) fn udf() -> ScalarUDF {
    rowwise::udf("geo_distance", distance_type, distance)
}

fn distance_type(name: &str, arguments: &[DataType]) -> Result<DataType> {
    let numeric = |t: &DataType| t.is_numeric() || *t == DataType::Null;
    match arguments {
        [a, b, c, d, rest @ ..]
            if [a, b, c, d].into_iter().all(numeric)
                && (rest.is_empty() || (rest.len() == 1 && is_text(&rest[0]))) =>
        {
            Ok(DataType::Float64)
        }
        _ => refuse(name, arguments),
    }
}

fn distance(values: &[ScalarValue], _: &DataType) -> Result<ScalarValue> {
    let coordinates: Option<Vec<f64>> = values[..4].iter().map(number).collect();
    let Some(c) = coordinates else {
        return Ok(ScalarValue::Float64(None));
    };
    let radius = match values.get(4).map(text) {
        None | Some(None) => EARTH_RADIUS_KM,
        Some(Some(unit)) => radius(unit)?,
    };
    Ok(ScalarValue::Float64(Some(
        haversine(c[0], c[1], c[2], c[3])? * radius,
    )))
}

fn radius(unit: &str) -> Result<f64> {
    match unit.trim().to_lowercase().as_str() {
        "" | "km" | "kilometer" | "kilometers" | "kilometre" | "kilometres" => Ok(EARTH_RADIUS_KM),
        "mi" | "mile" | "miles" => Ok(EARTH_RADIUS_MILES),
        _ => exec_err!(
            "GeoDistance function units parameter must be one of mi, mile, miles, km, \
             kilometer, kilometers, kilometre or kilometres. Values are case-insensitive."
        ),
    }
}

/// The central angle between two points, in radians.
fn haversine(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> Result<f64> {
    if [lat1, lat2].iter().any(|l| !(-90.0..=90.0).contains(l)) {
        return exec_err!(
            "valid latitude values for GeoDistance function are in the range of -90 to 90 \
             decimal degrees"
        );
    }
    if [lon1, lon2].iter().any(|l| !(-180.0..=180.0).contains(l)) {
        return exec_err!(
            "valid longitude values for GeoDistance function are in the range of -180 to +180 \
             decimal degrees"
        );
    }
    let haversin = |angle: f64| (angle / 2.0).sin().powi(2);
    let (delta_lat, delta_lon) = ((lat2 - lat1).to_radians(), (lon2 - lon1).to_radians());
    let a = haversin(delta_lat)
        + haversin(delta_lon) * lat1.to_radians().cos() * lat2.to_radians().cos();
    Ok(2.0 * a.sqrt().asin())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_are_ksqldbs() {
        let km = haversine(37.4439, -122.1663, 51.5257, -0.1122).unwrap() * EARTH_RADIUS_KM;
        assert!((km - 8634.659796579544).abs() < 1e-9, "{km}");
        let near = haversine(39.18660374, -76.73262144, 39.18660374, -76.73222145).unwrap();
        assert!((near * EARTH_RADIUS_KM - 0.03447366811448324).abs() < 1e-12);
        assert!(haversine(91.0, 0.0, 0.0, 0.0).is_err());
        assert_eq!(radius("MI").unwrap(), EARTH_RADIUS_MILES);
        assert!(radius("parsecs").is_err());
    }
}
