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

/// The lambdas of the first SELECT item's call, as sqlparser's nodes.
fn lambdas_of(sql: &str) -> Vec<LambdaFunction> {
    let Statement::Select(select) = one(sql) else {
        panic!("{sql}: not a SELECT");
    };
    let mut found = Vec::new();
    let _ = datafusion::sql::sqlparser::ast::visit_expressions(&select.query, |e| {
        if let Expr::Lambda(lambda) = e {
            found.push(lambda.clone());
        }
        ControlFlow::<()>::Continue(())
    });
    found
}

#[test]
fn lambdas_with_one_or_several_parameters() {
    let found = lambdas_of("SELECT TRANSFORM(numbers, x => x + 5) FROM s;");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].to_string(), "\"X\" -> X + 5");
    let found = lambdas_of(
        "SELECT REDUCE(m, 0, (s, k, v) => CASE WHEN LEN(k) > 3 THEN s + v ELSE s - v END) FROM t;",
    );
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].to_string(),
        "(\"S\", \"K\", \"V\") -> CASE WHEN LEN(K) > 3 THEN S + V ELSE S - V END"
    );
    let found = lambdas_of(
        "SELECT TRANSFORM(m, (x,y) => x + '_test' , (k,v) => ARRAY_MIN(v) + 1) AS t FROM s",
    );
    assert_eq!(found.len(), 2);
    assert_eq!(found[1].to_string(), "(\"K\", \"V\") -> ARRAY_MIN(V) + 1");
}

#[test]
fn lambdas_nest_and_keep_struct_access_and_constructors() {
    let found = lambdas_of(
        "SELECT TRANSFORM(FILTER(m, (a, b) => LEN(a) > 2 AND REDUCE(b, 0, (c, d) => c+d) < 20), \
         (x, y) => x, (x, y) => y) FROM s",
    );
    // The visit meets the outer lambdas and the nested one inside the FILTER's.
    assert_eq!(found.len(), 4);
    assert!(found
        .iter()
        .any(|l| l.to_string() == "(\"C\", \"D\") -> C + D"));
    let found =
        lambdas_of("SELECT TRANSFORM(v, x => STRUCT(Q := x->d + 5, P := ARRAY[x->c, 'h'])) FROM s");
    assert_eq!(found.len(), 1);
    let body = found[0].body.to_string();
    assert!(
        body.contains("X -> D + 5"),
        "`->` is still struct access: {body}"
    );
    assert!(body.contains("ARRAY[X -> C, 'h']"), "{body}");
}

#[test]
fn struct_access_outside_lambdas_is_unchanged() {
    let Statement::Select(select) = one("SELECT s->f, g(a, b) FROM t WHERE s->f > 1") else {
        panic!("not a SELECT");
    };
    let text = select.query.to_string();
    assert!(text.contains("s -> f") || text.contains("S -> F"), "{text}");
    assert!(!text.contains("lambda"), "{text}");
}

#[test]
fn lambda_errors_name_what_is_missing() {
    let message = error("SELECT TRANSFORM(numbers, x => ) FROM s");
    assert!(message.contains("lambda's body"), "{message}");
    let message = error("SELECT TRANSFORM(numbers, x => x +) FROM s");
    assert!(message.starts_with("line 1:"), "{message}");
}

#[test]
fn lambda_nesting_is_bounded() {
    let depth = limits::LAMBDA_DEPTH_MAX + 1;
    let mut body = "x0".to_string();
    for level in (0..depth).rev() {
        body = format!("TRANSFORM(a, x{level} => {body})");
    }
    let message = error(&format!("SELECT {body} FROM s"));
    assert!(message.contains("lambda.depth.max"), "{message}");
    let expression = parse_expression("TRANSFORM(a, x => x * 2)").unwrap();
    assert!(matches!(expression, Expr::Function(_)), "{expression:?}");
}

#[test]
fn header_columns_name_their_header_and_must_have_its_type() {
    let statement = one(
        "CREATE STREAM s (k STRING KEY, h ARRAY<STRUCT<key STRING, value BYTES>> HEADERS, \
         v BIGINT, one BYTES HEADER('abc')) WITH (kafka_topic='t', value_format='JSON');",
    );
    let Statement::CreateSource { columns, .. } = statement else {
        panic!("not a CREATE STREAM");
    };
    let headers: Vec<(&str, Option<&Header>)> = columns
        .iter()
        .map(|c| (c.name.as_str(), c.header.as_ref()))
        .collect();
    assert_eq!(
        headers,
        [
            ("K", None),
            ("H", Some(&Header::All)),
            ("V", None),
            ("ONE", Some(&Header::Key("abc".into())))
        ]
    );
    assert_eq!(
        error("CREATE STREAM s (h1 BYTES HEADERS) WITH (kafka_topic='t', value_format='JSON');"),
        "line 1:27: Invalid type for HEADERS column: expected \
         ARRAY<STRUCT<`KEY` STRING, `VALUE` BYTES>>, got BYTES"
    );
    assert_eq!(
        error(
            "CREATE STREAM s (h1 INT HEADER('key')) WITH (kafka_topic='t', value_format='JSON');"
        ),
        "line 1:25: Invalid type for HEADER('key') column: expected BYTES, got INTEGER"
    );
}

#[test]
fn an_alias_may_start_with_a_digit() {
    let statement = one("CREATE STREAM o AS SELECT ROUND(v, -1) AS 1R FROM s;");
    let Statement::CreateAsSelect { query, .. } = statement else {
        panic!("not a CREATE STREAM AS SELECT");
    };
    let text = query.query.to_string();
    assert!(text.contains("AS \"1R\""), "{text}");
}
