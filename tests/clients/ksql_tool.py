"""Drives `eddy server` with the ksql-python-ng client (`import ksql`), unmodified, as an
application would: create a stream, insert rows, a push query over HTTP/2, a continuous
aggregation read with a pull query, and a listing of streams. Prints one JSON object with
what it saw."""

import argparse
import json
import time

from ksql import KSQLAPI


def rows_of(chunks):
    """The rows of a /query-stream answer: the header line, then one JSON array per line."""
    text = "".join(chunks)
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    return lines[0], lines[1:]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    args = parser.parse_args()
    client = KSQLAPI(args.url)
    seen = {"version": client.get_ksql_version()}

    created = client.ksql(
        "CREATE STREAM pageviews (user STRING KEY, page STRING, ms INT) "
        "WITH (kafka_topic='pageviews', value_format='JSON', partitions=2);"
    )
    seen["created"] = created[0]["commandStatus"]["status"]
    rows = [
        {"USER": "ann", "PAGE": "/home", "MS": 12},
        {"USER": "bob", "PAGE": "/cart", "MS": 40},
        {"USER": "ann", "PAGE": "/pay", "MS": 7},
    ]
    seen["inserted"] = client.inserts_stream("PAGEVIEWS", rows)

    header, pushed = rows_of(
        client.query(
            "SELECT user, page FROM pageviews EMIT CHANGES LIMIT 3;",
            use_http2=True,
            stream_properties={"auto.offset.reset": "earliest"},
        )
    )
    seen["push_columns"] = header["columnNames"]
    seen["pushed"] = sorted(pushed)

    client.ksql(
        "CREATE TABLE views_per_user AS SELECT user, COUNT(*) AS views "
        "FROM pageviews GROUP BY user EMIT CHANGES;"
    )
    pulled = []
    for _ in range(100):
        _, pulled = rows_of(
            client.query("SELECT * FROM views_per_user WHERE user = 'ann';", use_http2=True)
        )
        if pulled == [["ann", 2]]:
            break
        time.sleep(0.1)
    seen["pulled"] = pulled

    listed = client.ksql("SHOW STREAMS;")
    seen["streams"] = sorted(s["name"] for s in listed[0]["streams"])
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
