use super::*;

fn one(sql: &str) -> Statement {
    parse_one(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .statement
}

fn error(sql: &str) -> String {
    match parse_one(sql) {
        Ok(s) => panic!("{sql} parsed as {s:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn create_stream_with_key_columns_types_and_properties() {
    let statement = one(
        "CREATE STREAM pageviews (viewtime BIGINT, `userId` VARCHAR KEY, tags ARRAY<STRING>, \
         attrs MAP<STRING, ARRAY<INT>>, addr STRUCT<street STRING, zip INT>, price DECIMAL(10, 2)) \
         WITH (kafka_topic='pageviews', value_format='JSON', partitions=3);",
    );
    let Statement::CreateSource {
        kind,
        name,
        columns,
        properties,
        ..
    } = statement
    else {
        panic!("not a CREATE STREAM");
    };
    assert_eq!(kind, SourceKind::Stream);
    assert_eq!(name, "PAGEVIEWS");
    assert_eq!(
        columns[1].name, "userId",
        "backquoted names keep their case"
    );
    assert!(columns[1].key);
    assert_eq!(
        columns[3].data_type.to_string(),
        "MAP<STRING, ARRAY<INTEGER>>"
    );
    assert_eq!(
        columns[4].data_type.to_string(),
        "STRUCT<`STREET` STRING, `ZIP` INTEGER>"
    );
    assert_eq!(properties["KAFKA_TOPIC"], "pageviews");
    assert_eq!(properties["PARTITIONS"], "3");
}

#[test]
fn create_table_as_select_with_window_and_emit() {
    let statement = one(
        "CREATE TABLE counts WITH (kafka_topic='c') AS SELECT id, COUNT(*) AS n FROM s \
         WINDOW TUMBLING (SIZE 1 MINUTE, GRACE PERIOD 10 SECONDS) WHERE x > 1 GROUP BY id EMIT FINAL;",
    );
    let Statement::CreateAsSelect {
        kind,
        query,
        properties,
        ..
    } = statement
    else {
        panic!("not a CTAS");
    };
    assert_eq!(kind, SourceKind::Table);
    assert_eq!(properties["KAFKA_TOPIC"], "c");
    assert_eq!(
        query.window,
        Some(WindowSpec::Tumbling {
            size_ms: 60_000,
            grace_ms: Some(10_000),
            retention_ms: None
        })
    );
    assert_eq!(query.emit, Some(Emit::Final));
    let text = query.query.to_string();
    assert!(text.contains("WHERE X > 1 GROUP BY ID"), "{text}");
}

#[test]
fn push_query_with_partition_by_and_limit() {
    let Statement::Select(query) = one("select * from s partition by a, b emit changes limit 5")
    else {
        panic!("not a select");
    };
    assert_eq!(query.emit, Some(Emit::Changes));
    assert_eq!(query.partition_by.len(), 2);
    assert!(
        query.query.to_string().ends_with("LIMIT 5"),
        "{}",
        query.query
    );
}

#[test]
fn insert_values_drop_show_describe_terminate_print() {
    assert!(matches!(
        one("INSERT INTO s (a, b) VALUES (1, 'x');"),
        Statement::InsertValues { ref columns, ref values, .. } if columns.len() == 2 && values.len() == 2
    ));
    assert_eq!(
        one("DROP TABLE IF EXISTS t DELETE TOPIC"),
        Statement::Drop {
            kind: SourceKind::Table,
            name: "T".into(),
            if_exists: true,
            delete_topic: true
        }
    );
    assert_eq!(
        one("LIST STREAMS"),
        Statement::Show {
            kind: ShowKind::Streams,
            extended: false
        }
    );
    assert_eq!(
        one("DESCRIBE EXTENDED s"),
        Statement::Describe {
            name: "S".into(),
            extended: true
        }
    );
    assert_eq!(
        one("TERMINATE ALL"),
        Statement::Terminate { query_id: None }
    );
    assert_eq!(
        one("PRINT 'my-topic' FROM BEGINNING LIMIT 3"),
        Statement::Print {
            topic: "my-topic".into(),
            from_beginning: true,
            interval: 1,
            limit: Some(3)
        }
    );
    assert_eq!(
        one("PRINT pageviews INTERVAL 2"),
        Statement::Print {
            topic: "PAGEVIEWS".into(),
            from_beginning: false,
            interval: 2,
            limit: None
        }
    );
}

#[test]
fn several_statements_and_variables() {
    let vars = BTreeMap::from([("topic".to_string(), "t1".to_string())]);
    let all = parse("DEFINE x = 'y'; CREATE STREAM s (a INT) WITH (kafka_topic='${topic}', value_format='JSON');", &vars)
        .expect("parses");
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].position.line, 1);
    assert!(
        all[1].text.starts_with("CREATE STREAM s"),
        "{}",
        all[1].text
    );
    let Statement::CreateSource { properties, .. } = &all[1].statement else {
        panic!()
    };
    assert_eq!(properties["KAFKA_TOPIC"], "t1");
}

#[test]
fn errors_name_line_column_and_what_was_expected() {
    assert_eq!(
        error("CREATE STREEM s (a INT)"),
        "line 1:8: expected STREAM or TABLE, found 'STREEM'"
    );
    assert_eq!(
        error("CREATE STREAM s (a INTT)"),
        "line 1:20: unknown type 'INTT'"
    );
    assert_eq!(
        error("CREATE TABLE t (a INT KEY)"),
        "line 1:23: column 'A' is a KEY, but tables have PRIMARY KEY columns"
    );
    let e = error("SELECT * FROM s\nWHERE EMIT CHANGES");
    assert!(e.starts_with("line 2:"), "{e}");
    assert_eq!(error("FROB x"), "line 1:1: expected a statement (CREATE, INSERT, SELECT, DROP, SHOW, DESCRIBE, ...), found 'FROB'");
}

#[test]
fn split_finds_whole_statements_and_the_open_rest() {
    let (statements, rest) = split_statements(
        "CREATE STREAM s\n (a INT) WITH (kafka_topic='x;y');\n-- c;\nSELECT a\nFROM s",
    )
    .unwrap();
    assert_eq!(
        statements,
        ["CREATE STREAM s\n (a INT) WITH (kafka_topic='x;y')"]
    );
    assert_eq!(rest, "SELECT a\nFROM s");
    let (statements, rest) = split_statements("SHOW STREAMS; ;  list topics ;").unwrap();
    assert_eq!(statements, ["SHOW STREAMS", "list topics"]);
    assert_eq!(rest, "");
    assert!(split_statements("SELECT 'open").is_err());
}
