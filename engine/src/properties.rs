//! The properties SHOW PROPERTIES lists: those Eddy honours with their server values, and the
//! overrides a session set (SET, or `streamsProperties` over HTTP), as ksqlDB lists them.

use std::collections::BTreeMap;

/// The offset a push query starts from: `earliest` or `latest` (the default). ksqlDB's clients
/// set it under either name.
pub const AUTO_OFFSET_RESET: &str = "ksql.streams.auto.offset.reset";
/// The short name of [`AUTO_OFFSET_RESET`], as the ksql CLI's `SET` examples use it.
pub const AUTO_OFFSET_RESET_SHORT: &str = "auto.offset.reset";

/// Whether a pull query may scan a whole table (else only key lookups and ranges; on by
/// default, as in ksqlDB).
pub const PULL_TABLE_SCAN: &str = "ksql.query.pull.table.scan.enabled";
/// Whether a pull query may read a range of a STRING key without a table scan.
pub const PULL_RANGE_SCAN: &str = "ksql.query.pull.range.scan.enabled";

/// A boolean property of a session, else `default`.
pub fn session_flag(overrides: &BTreeMap<String, String>, name: &str, default: bool) -> bool {
    session_value(overrides, name).map_or(default, |v| v.eq_ignore_ascii_case("true"))
}

/// One property with the value in effect for a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    pub name: String,
    /// ksqlDB's scope: KSQL for `ksql.*`, STREAMS for Kafka Streams' `ksql.streams.*`.
    pub scope: &'static str,
    pub value: String,
    /// Set by the session rather than the server.
    pub overridden: bool,
}

/// The server's properties Eddy honours, with their values in this process.
fn server_properties() -> Vec<(&'static str, String)> {
    let pull = crate::pull::limits();
    vec![
        (AUTO_OFFSET_RESET, "latest".to_string()),
        ("ksql.query.pull.max.bytes", pull.bytes_max.to_string()),
        ("ksql.query.pull.max.rows", pull.rows_max.to_string()),
        (PULL_RANGE_SCAN, "true".to_string()),
        (PULL_TABLE_SCAN, "true".to_string()),
        ("ksql.service.id", "default_".to_string()),
        (
            "ksql.logging.processing.topic.name",
            crate::runtime::processing_log::TOPIC.to_string(),
        ),
    ]
}

/// Every property in effect for a session with `overrides`, sorted by name.
pub fn effective(overrides: &BTreeMap<String, String>) -> Vec<Property> {
    let mut properties: BTreeMap<String, Property> = server_properties()
        .into_iter()
        .map(|(name, value)| {
            let property = Property {
                name: name.to_string(),
                scope: scope(name),
                value,
                overridden: false,
            };
            (name.to_string(), property)
        })
        .collect();
    for (name, value) in overrides {
        let name = match name.as_str() {
            AUTO_OFFSET_RESET_SHORT => AUTO_OFFSET_RESET,
            other => other,
        };
        properties.insert(
            name.to_string(),
            Property {
                name: name.to_string(),
                scope: scope(name),
                value: value.clone(),
                overridden: true,
            },
        );
    }
    properties.into_values().collect()
}

/// The value a session gives a property that has a short alias (`auto.offset.reset`).
pub fn session_value<'a>(overrides: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    let alias = (name == AUTO_OFFSET_RESET).then_some(AUTO_OFFSET_RESET_SHORT);
    overrides
        .get(name)
        .or_else(|| alias.and_then(|a| overrides.get(a)))
        .map(String::as_str)
}

fn scope(name: &str) -> &'static str {
    if name.starts_with("ksql.streams.") {
        "STREAMS"
    } else {
        "KSQL"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_server_values_and_the_short_name_is_the_long_one() {
        let overrides = BTreeMap::from([
            ("auto.offset.reset".to_string(), "earliest".to_string()),
            ("ksql.custom".to_string(), "x".to_string()),
        ]);
        let listed = effective(&overrides);
        let reset = listed
            .iter()
            .find(|p| p.name == AUTO_OFFSET_RESET)
            .expect("listed");
        assert_eq!(
            (reset.value.as_str(), reset.overridden, reset.scope),
            ("earliest", true, "STREAMS")
        );
        let rows = listed
            .iter()
            .find(|p| p.name == "ksql.query.pull.max.rows")
            .expect("listed");
        assert!(!rows.overridden);
        assert!(listed
            .iter()
            .any(|p| p.name == "ksql.custom" && p.overridden));
        assert_eq!(
            session_value(&overrides, AUTO_OFFSET_RESET),
            Some("earliest")
        );
    }
}
