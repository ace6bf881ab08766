"""Drives an Eddy broker with confluent-kafka (librdkafka), as a user's application would.

Each subcommand does one thing and prints one JSON document on stdout (or writes JSON lines to
--out as it goes), so the Rust end-to-end tests can check the results. Every wait is bounded.
"""

import argparse
import json
import sys
import time

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
)


def admin(args):
    return AdminClient({"bootstrap.servers": args.bootstrap})


def create_topic(args):
    configs = dict(c.split("=", 1) for c in args.config)
    client = admin(args)  # kept alive until the future resolves
    futures = client.create_topics(
        [
            NewTopic(
                args.topic,
                num_partitions=args.partitions,
                replication_factor=args.replication_factor,
                config=configs,
            )
        ],
        request_timeout=15,
    )
    futures[args.topic].result(timeout=20)
    print(json.dumps({"created": args.topic}))


def produce(args):
    """Produces --count records (or, with --forever, until killed), appending one JSON line per
    acknowledged record to --out the moment its delivery report arrives."""
    retries = {} if args.retries is None else {"retries": args.retries}
    producer = Producer(
        {
            **retries,
            "bootstrap.servers": args.bootstrap,
            "acks": args.acks,
            "partitioner": "murmur2_random",
            "linger.ms": args.linger_ms,
            "batch.size": args.batch_bytes,
            "message.max.bytes": args.message_max_bytes,
            "compression.type": args.compression,
            "enable.idempotence": args.idempotence,
            "message.timeout.ms": args.message_timeout_ms,
        }
    )
    out = open(args.out, "a", buffering=1) if args.out else None
    stats = {"acked": 0, "failed": 0, "errors": []}

    def report(err, msg):
        if err is not None:
            stats["failed"] += 1
            if len(stats["errors"]) < 5:
                stats["errors"].append(err.name())
            return
        stats["acked"] += 1
        if out:
            key = msg.key().decode() if msg.key() is not None else None
            line = {"key": key, "value": msg.value().decode(), "partition": msg.partition(), "offset": msg.offset()}
            out.write(json.dumps(line) + "\n")

    i = 0
    start = time.time()
    while args.forever or i < args.count:
        key = f"key-{i}" if args.keyed else None
        value = ("%s%d-" % (args.value_prefix, i)).ljust(args.value_bytes, "x")
        while True:
            try:
                extra = {"timestamp": args.timestamp_ms + i} if args.timestamp_ms else {}
                producer.produce(args.topic, key=key, value=value, on_delivery=report, **extra)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
        i += 1
    remaining = producer.flush(30)
    elapsed = time.time() - start
    stats.update({"sent": i, "unflushed": remaining, "seconds": elapsed, "records_per_second": i / elapsed})
    print(json.dumps(stats))


def consume(args):
    """Consumes with a consumer group until --count records or --idle-seconds without records,
    then commits synchronously and writes what it read."""
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "auto.offset.reset": args.reset,
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
        }
    )
    consumer.subscribe([args.topic])
    records = []
    last_record = time.time()
    deadline = time.time() + args.max_seconds
    error = None
    while len(records) < args.count and time.time() < deadline:
        msg = consumer.poll(0.2)
        if msg is None:
            if records and time.time() - last_record > args.idle_seconds:
                break
            continue
        if msg.error():
            error = msg.error().name()
            if msg.error().fatal():
                break
            continue
        last_record = time.time()
        key = msg.key().decode() if msg.key() is not None else None
        records.append({"key": key, "value": msg.value().decode() if msg.value() is not None else None,
                        "partition": msg.partition(), "offset": msg.offset(), "timestamp": msg.timestamp()[1]})
    committed = []
    if args.commit and records:
        for tp in consumer.commit(asynchronous=False):
            committed.append({"partition": tp.partition, "offset": tp.offset})
    assignment = [tp.partition for tp in consumer.assignment()]
    consumer.close()
    if args.out:
        with open(args.out, "w") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
    print(json.dumps({"consumed": len(records), "committed": committed, "assignment": assignment, "error": error}))


def member(args):
    """Stays in a consumer group for --seconds (or until killed), appending its assignment to
    --out as a JSON line every time it changes."""
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "session.timeout.ms": args.session_timeout_ms,
            "heartbeat.interval.ms": 300,
            "partition.assignment.strategy": args.strategy,
            "enable.auto.commit": False,
        }
    )
    out = open(args.out, "a", buffering=1)
    consumer.subscribe([args.topic])
    last = None
    deadline = time.time() + args.seconds
    while time.time() < deadline:
        consumer.poll(0.1)
        current = sorted(tp.partition for tp in consumer.assignment())
        if current != last:
            out.write(json.dumps({"assignment": current}) + "\n")
            last = current
    consumer.close()
    print(json.dumps({"final": last}))


def describe_configs(args):
    client = admin(args)
    resource = ConfigResource(ConfigResource.Type.TOPIC, args.topic)
    configs = client.describe_configs([resource], request_timeout=15)[resource].result(timeout=20)
    print(json.dumps({name: entry.value for name, entry in configs.items()}))


def delete_topic(args):
    client = admin(args)
    client.delete_topics([args.topic], request_timeout=15)[args.topic].result(timeout=20)
    print(json.dumps({"deleted": args.topic}))


def offsets_for_times(args):
    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": "eddy-times"})
    tps = [TopicPartition(args.topic, p, args.timestamp_ms) for p in range(args.partitions)]
    found = consumer.offsets_for_times(tps, timeout=10)
    consumer.close()
    print(json.dumps([{"partition": tp.partition, "offset": tp.offset} for tp in found]))


def watermarks(args):
    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": "eddy-watermarks"})
    result = []
    for p in range(args.partitions):
        low, high = consumer.get_watermark_offsets(TopicPartition(args.topic, p), timeout=10)
        result.append({"partition": p, "low": low, "high": high})
    consumer.close()
    print(json.dumps(result))


def committed(args):
    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": args.group})
    tps = [TopicPartition(args.topic, p) for p in range(args.partitions)]
    result = [{"partition": tp.partition, "offset": tp.offset} for tp in consumer.committed(tps, timeout=10)]
    consumer.close()
    print(json.dumps(result))


def group_admin(args):
    """Takes a consumer group through the admin APIs, as kafka-consumer-groups or a lag checker
    would: consumes with asynchronous commits, each read back at once with committed(); lists
    and describes the group and tries to delete it while its member is in it; then, once the
    member has left, reads its offsets and deletes it. Prints what each step saw."""
    client = admin(args)
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "client.id": "group-admin-member",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
        }
    )
    consumer.subscribe([args.topic])
    consumed, stale = 0, 0
    deadline = time.time() + args.max_seconds
    while consumed < args.count and time.time() < deadline:
        msg = consumer.poll(0.2)
        if msg is None or msg.error():
            continue
        consumed += 1
        consumer.commit(message=msg, asynchronous=True)
        read = consumer.committed([TopicPartition(msg.topic(), msg.partition())], timeout=10)
        if read[0].offset != msg.offset() + 1:
            stale += 1

    def listed():
        groups = client.list_consumer_groups(request_timeout=10).result().valid
        return sorted(
            ({"group": g.group_id, "state": g.state.name, "simple": g.is_simple_consumer_group} for g in groups),
            key=lambda g: g["group"],
        )

    def deleted():
        try:
            client.delete_consumer_groups([args.group], request_timeout=10)[args.group].result()
            return "NONE"
        except KafkaException as e:
            return e.args[0].name()

    described = {}
    futures = client.describe_consumer_groups([args.group, "never-seen"], include_authorized_operations=True)
    for group_id, future in futures.items():
        d = future.result()
        described[group_id] = {
            "state": d.state.name,
            "assignor": d.partition_assignor,
            "operations": sorted(op.name for op in (d.authorized_operations or [])),
            "members": [
                {
                    "client_id": m.client_id,
                    "host": m.host,
                    "partitions": sorted(tp.partition for tp in m.assignment.topic_partitions),
                }
                for m in d.members
            ],
        }
    busy = {"listed": listed(), "described": described, "delete": deleted()}
    consumer.close()
    request = [ConsumerGroupTopicPartitions(args.group)]
    offsets = client.list_consumer_group_offsets(request)[args.group].result().topic_partitions
    left = {
        "offsets": {str(tp.partition): tp.offset for tp in offsets},
        "delete": deleted(),
        "listed_after_delete": listed(),
    }
    print(json.dumps({"consumed": consumed, "stale_committed": stale, "busy": busy, "left": left}))
def groups(args):
    """Deletes the --delete groups, then lists every group and describes the --describe ones, as
    kafka-consumer-groups --list / --describe would. A group of protocol type "consumer" is not
    simple; one known only by committed offsets (no protocol type) is."""
    client = admin(args)
    deleted = {}
    if args.delete:
        for group_id, future in client.delete_consumer_groups(args.delete, request_timeout=10).items():
            try:
                future.result()
                deleted[group_id] = "NONE"
            except KafkaException as e:
                deleted[group_id] = e.args[0].name()
    listed = sorted(
        (
            {"group": g.group_id, "state": g.state.name, "simple": g.is_simple_consumer_group}
            for g in client.list_consumer_groups(request_timeout=10).result().valid
        ),
        key=lambda g: g["group"],
    )
    described = {}
    if args.describe:
        for group_id, future in client.describe_consumer_groups(args.describe, request_timeout=10).items():
            d = future.result()
            described[group_id] = {
                "state": d.state.name,
                "simple": d.is_simple_consumer_group,
                "members": len(d.members),
            }
    print(json.dumps({"deleted": deleted, "listed": listed, "described": described}))


def coordinator(args):
    """Prints the broker coordinating --group, as DescribeGroups (after FindCoordinator) names it."""
    client = admin(args)
    future = client.describe_consumer_groups([args.group], request_timeout=10)[args.group]
    description = future.result(timeout=15)
    node = description.coordinator
    print(json.dumps({"id": node.id, "host": node.host, "port": node.port, "state": description.state.name}))


def create_partitions(args):
    client = admin(args)
    futures = client.create_partitions([NewPartitions(args.topic, args.count)], request_timeout=15)
    futures[args.topic].result(timeout=20)
    metadata = client.list_topics(args.topic, timeout=10)
    print(json.dumps({"partitions": len(metadata.topics[args.topic].partitions)}))


def delete_records(args):
    client = admin(args)
    futures = client.delete_records(
        [TopicPartition(args.topic, args.partition, args.offset)], request_timeout=15
    )
    deleted = list(futures.values())[0].result(timeout=20)
    print(json.dumps({"low_watermark": deleted.low_watermark}))


def alter_configs(args):
    """Incremental changes (--set/--delete/--append/--subtract), or with --replace the legacy
    AlterConfigs, which replaces every override of the topic with the --set ones."""
    client = admin(args)
    if args.replace:
        configs = dict(c.split("=", 1) for c in args.set)
        resource = ConfigResource(ConfigResource.Type.TOPIC, args.topic, set_config=configs)
        future = client.alter_configs([resource], request_timeout=15)[resource]
    else:
        operations = []
        for flag, op in [("set", AlterConfigOpType.SET), ("append", AlterConfigOpType.APPEND),
                         ("subtract", AlterConfigOpType.SUBTRACT)]:
            for entry in getattr(args, flag):
                name, value = entry.split("=", 1)
                operations.append(ConfigEntry(name, value, incremental_operation=op))
        for name in args.delete:
            operations.append(ConfigEntry(name, None, incremental_operation=AlterConfigOpType.DELETE))
        resource = ConfigResource(ConfigResource.Type.TOPIC, args.topic, incremental_configs=operations)
        future = client.incremental_alter_configs([resource], request_timeout=15)[resource]
    future.result(timeout=20)
    print(json.dumps({"altered": args.topic}))


def describe_config_sources(args):
    """Each config's value and source name (DYNAMIC_TOPIC_CONFIG, DEFAULT_CONFIG, ...)."""
    client = admin(args)
    kind = ConfigResource.Type.BROKER if args.broker is not None else ConfigResource.Type.TOPIC
    resource = ConfigResource(kind, args.broker if args.broker is not None else args.topic)
    configs = client.describe_configs([resource], request_timeout=15)[resource].result(timeout=20)
    print(json.dumps({
        name: {"value": e.value, "source": ConfigSource(e.source).name,
               "read_only": e.is_read_only, "synonyms": [s.name for s in e.synonyms.values()]}
        for name, e in configs.items()
    }))


def describe_cluster(args):
    client = admin(args)
    cluster = client.describe_cluster(request_timeout=15).result(timeout=20)
    print(json.dumps({
        "cluster_id": cluster.cluster_id,
        "controller": cluster.controller.id if cluster.controller else None,
        "nodes": [{"id": n.id, "host": n.host, "port": n.port} for n in cluster.nodes],
    }))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("create-topic")
    p.add_argument("--topic", required=True)
    p.add_argument("--partitions", type=int, default=1)
    p.add_argument("--replication-factor", type=int, default=1)
    p.add_argument("--config", action="append", default=[])
    p.set_defaults(run=create_topic)

    p = sub.add_parser("produce")
    p.add_argument("--topic", required=True)
    p.add_argument("--count", type=int, default=0)
    p.add_argument("--forever", action="store_true")
    p.add_argument("--keyed", action="store_true")
    p.add_argument("--acks", default="all")
    p.add_argument("--linger-ms", type=int, default=5)
    p.add_argument("--batch-bytes", type=int, default=1000000)
    p.add_argument("--timestamp-ms", type=int, default=0)
    p.add_argument("--value-bytes", type=int, default=20)
    p.add_argument("--value-prefix", default="v", help="values are PREFIX<n>-xxx...")
    p.add_argument("--message-max-bytes", type=int, default=1000000)
    p.add_argument("--compression", default="none")
    p.add_argument("--idempotence", action="store_true")
    p.add_argument("--message-timeout-ms", type=int, default=20000)
    p.add_argument("--retries", type=int, help="librdkafka's retries (default: its own)")
    p.add_argument("--out")
    p.set_defaults(run=produce)

    p = sub.add_parser("consume")
    p.add_argument("--topic", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--count", type=int, default=10**9)
    p.add_argument("--reset", default="earliest")
    p.add_argument("--commit", action="store_true")
    p.add_argument("--idle-seconds", type=float, default=3.0)
    p.add_argument("--max-seconds", type=float, default=60.0)
    p.add_argument("--out")
    p.set_defaults(run=consume)

    p = sub.add_parser("member")
    p.add_argument("--topic", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--session-timeout-ms", type=int, default=6000)
    p.add_argument("--strategy", default="range")
    p.add_argument("--out", required=True)
    p.set_defaults(run=member)

    p = sub.add_parser("describe-configs")
    p.add_argument("--topic", required=True)
    p.set_defaults(run=describe_configs)

    p = sub.add_parser("delete-topic")
    p.add_argument("--topic", required=True)
    p.set_defaults(run=delete_topic)

    p = sub.add_parser("offsets-for-times")
    p.add_argument("--topic", required=True)
    p.add_argument("--timestamp-ms", type=int, required=True)
    p.add_argument("--partitions", type=int, default=1)
    p.set_defaults(run=offsets_for_times)

    p = sub.add_parser("watermarks")
    p.add_argument("--topic", required=True)
    p.add_argument("--partitions", type=int, default=1)
    p.set_defaults(run=watermarks)

    p = sub.add_parser("committed")
    p.add_argument("--topic", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--partitions", type=int, default=1)
    p.set_defaults(run=committed)

    p = sub.add_parser("group-admin")
    p.add_argument("--topic", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--max-seconds", type=float, default=30.0)
    p.set_defaults(run=group_admin)

    p = sub.add_parser("groups")
    p.add_argument("--delete", action="append", default=[])
    p.add_argument("--describe", action="append", default=[])
    p.set_defaults(run=groups)

    p = sub.add_parser("coordinator")
    p.add_argument("--group", required=True)
    p.set_defaults(run=coordinator)

    p = sub.add_parser("create-partitions")
    p.add_argument("--topic", required=True)
    p.add_argument("--count", type=int, required=True)
    p.set_defaults(run=create_partitions)

    p = sub.add_parser("delete-records")
    p.add_argument("--topic", required=True)
    p.add_argument("--partition", type=int, default=0)
    p.add_argument("--offset", type=int, required=True)
    p.set_defaults(run=delete_records)

    p = sub.add_parser("alter-configs")
    p.add_argument("--topic", required=True)
    p.add_argument("--replace", action="store_true")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--append", action="append", default=[])
    p.add_argument("--subtract", action="append", default=[])
    p.add_argument("--delete", action="append", default=[])
    p.set_defaults(run=alter_configs)

    p = sub.add_parser("describe-config-sources")
    p.add_argument("--topic")
    p.add_argument("--broker")
    p.set_defaults(run=describe_config_sources)

    p = sub.add_parser("describe-cluster")
    p.set_defaults(run=describe_cluster)

    args = parser.parse_args()
    try:
        args.run(args)
    except KafkaException as e:
        print(json.dumps({"kafka_error": str(e)}))
        sys.exit(3)


if __name__ == "__main__":
    main()
