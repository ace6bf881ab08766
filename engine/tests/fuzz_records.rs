//! Property: no record bytes panic the engine. Arbitrary and mutated JSON, DELIMITED and KAFKA
//! keys and values are decoded for columns of every type, directly (`formats::decode`) and
//! through persistent queries reading them from topics (every decoding path: JSON straight
//! into Arrow, per-column values, Arrow's JSON reader), which must stay RUNNING with the bad
//! records in the processing log. proptest prints the failing bytes.

mod common;

use std::time::Duration;

use bytes::Bytes;
use eddy_broker::ProducerRecord;
use eddy_engine::formats::{self, Format};
use eddy_engine::parser::ColumnDef;
use eddy_engine::types::SqlType;
use eddy_engine::StatementResult;
use proptest::prelude::*;

/// Columns of every type the formats read.
const COLUMNS: &str = "i INT, b BIGINT, d DOUBLE, s STRING, f BOOLEAN, m DECIMAL(10, 2), \
     a ARRAY<INT>, p MAP<STRING, INT>, r STRUCT<X INT, Y ARRAY<STRING>>, t TIMESTAMP, \
     dt DATE, tm TIME, y BYTES";

/// The columns DELIMITED can carry: no nested types.
const SCALAR_COLUMNS: &str = "i INT, b BIGINT, d DOUBLE, s STRING, f BOOLEAN, \
     m DECIMAL(10, 2), t TIMESTAMP, dt DATE, tm TIME";

/// A valid JSON value for [`COLUMNS`], for mutations to start from.
const VALID_JSON: &str = r#"{"I":1,"B":2,"D":1.5,"S":"x","F":true,"M":12.34,"A":[1,2],"P":{"k":1},"R":{"X":1,"Y":["a"]},"T":1767225600000,"DT":20000,"TM":3600000,"Y":"AAE="}"#;

fn bytes_strategy() -> impl Strategy<Value = Vec<u8>> {
    let valid = VALID_JSON.as_bytes().to_vec();
    let mutated = proptest::collection::vec((0..VALID_JSON.len(), any::<u8>(), 0..3u8), 1..6)
        .prop_map(move |edits| {
            let mut bytes = valid.clone();
            for (at, byte, kind) in edits {
                let at = at % bytes.len().max(1);
                match kind {
                    0 => bytes[at] = byte,
                    1 => bytes.insert(at, byte),
                    _ if bytes.len() > 1 => {
                        bytes.remove(at);
                    }
                    _ => {}
                }
            }
            bytes
        });
    let text = "[-0-9a-zA-Z,.:\"{}\\[\\] eE+]{0,60}".prop_map(String::into_bytes);
    prop_oneof![
        2 => mutated,
        1 => text,
        1 => proptest::collection::vec(any::<u8>(), 0..40),
    ]
}

fn columns(sql: &str) -> Vec<ColumnDef> {
    let statement = format!("CREATE STREAM c ({sql}) WITH (kafka_topic='c', value_format='JSON');");
    match eddy_engine::parser::parse_one(&statement)
        .expect("parses")
        .statement
    {
        eddy_engine::Statement::CreateSource { columns, .. } => columns,
        _ => unreachable!("a CREATE STREAM"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn decoding_any_bytes_in_any_format_never_panics(bytes in bytes_strategy()) {
        let all = columns(COLUMNS);
        let types: Vec<&SqlType> = all.iter().map(|c| &c.data_type).collect();
        for format in [Format::Json, Format::Delimited(','), Format::Kafka] {
            let every: Vec<&ColumnDef> = all.iter().collect();
            let _ = formats::decode(format, &every, Some(&bytes), false);
            for column in &all {
                let _ = formats::decode(format, &[column], Some(&bytes), true);
                let _ = formats::decode(format, &[column], Some(&bytes), false);
            }
        }
        prop_assert_eq!(types.len(), 13);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 8,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn queries_survive_any_record_bytes(
        records in proptest::collection::vec((bytes_strategy(), bytes_strategy()), 50),
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(queries_read(records));
    }
}

async fn queries_read(records: Vec<(Vec<u8>, Vec<u8>)>) {
    let (_dir, engine) = common::engine().await;
    let mut script = String::new();
    for (name, format, key) in [
        ("j", "JSON", "k STRING KEY"),
        ("jk", "JSON", "k INT KEY"),
        ("dl", "DELIMITED", "k STRING KEY"),
        ("kf", "KAFKA", "k BIGINT KEY"),
    ] {
        let value_columns = match format {
            "KAFKA" => "v DOUBLE",
            "DELIMITED" => SCALAR_COLUMNS,
            _ => COLUMNS,
        };
        script.push_str(&format!(
            "CREATE STREAM {name} ({key}, {value_columns}) WITH (kafka_topic='{name}', \
             value_format='{format}', partitions=1); \
             CREATE STREAM {name}_out AS SELECT * FROM {name};"
        ));
        // ksqlDB's KAFKA format takes no GROUP BY.
        if format != "KAFKA" {
            script.push_str(&format!(
                "CREATE TABLE {name}_count AS SELECT k, COUNT(*) AS n FROM {name} GROUP BY k;"
            ));
        }
    }
    engine.execute(&script).await.expect("set up");
    for topic in ["j", "jk", "dl", "kf"] {
        let batch: Vec<ProducerRecord> = records
            .iter()
            .map(|(key, value)| ProducerRecord {
                key: Some(Bytes::from(key.clone())),
                value: Some(Bytes::from(value.clone())),
                ..Default::default()
            })
            .collect();
        engine
            .client()
            .produce(topic, batch)
            .await
            .expect("produce");
    }
    assert!(engine.wait_until_caught_up(Duration::from_secs(30)).await);
    let Some(StatementResult::Queries(queries)) =
        engine.execute("SHOW QUERIES;").await.expect("show").pop()
    else {
        panic!("queries");
    };
    assert_eq!(queries.len(), 7);
    for query in queries {
        assert_eq!(query.state, "RUNNING", "{query:?}");
    }
}
