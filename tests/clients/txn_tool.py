"""Drives Kafka transactions against an Eddy broker with confluent-kafka (librdkafka), as an
exactly-once application would.

Each subcommand prints JSON lines on stdout, one per event as it happens (flushed at once, so a
run killed with SIGKILL leaves what it saw so far), and a summary as its last line, which the
Rust tests parse. Every wait is bounded.

Values written by produce-txn are `<run>:<txn>:<index>`: the run id, the transaction's number
within the run (from 0) and the record's index within it, so a reader can tell which
transaction every record it sees belongs to and whether a transaction was seen whole.
"""

import argparse
import json
import os
import socket
import struct
import sys
import time
import uuid

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

# Error names that mean "another producer with this transactional.id took over": the broker's
# PRODUCER_FENCED (90) and INVALID_PRODUCER_EPOCH (47), and librdkafka's local _FENCED state.
FENCED_NAMES = {"PRODUCER_FENCED", "INVALID_PRODUCER_EPOCH", "_FENCED"}


def emit(line):
    print(json.dumps(line), flush=True)


def error_of(exception):
    """A KafkaException's KafkaError as a JSON-able summary. The binding raises a fatal error
    from a callback as a SystemError whose cause is the KafkaException: that one is read."""
    if isinstance(exception, SystemError) and isinstance(exception.__cause__, KafkaException):
        exception = exception.__cause__
    error = exception.args[0] if exception.args and isinstance(exception.args[0], KafkaError) else None
    if error is None:
        return {"name": type(exception).__name__, "message": str(exception), "fatal": False,
                "retriable": False, "abortable": False}
    return {"name": error.name(), "message": error.str(), "fatal": error.fatal(),
            "retriable": error.retriable(), "abortable": error.txn_requires_abort()}


def transactional_producer(args, transactional_id, errors=None):
    def on_error(error):
        if errors is not None:
            errors.append({"name": error.name(), "message": error.str(), "fatal": error.fatal()})

    return Producer(
        {
            "bootstrap.servers": args.bootstrap,
            "transactional.id": transactional_id,
            "transaction.timeout.ms": args.transaction_timeout_ms,
            "message.timeout.ms": min(args.transaction_timeout_ms, 60000),
            "linger.ms": 5,
            "error_cb": on_error,
        }
    )


def with_retries(what, call, deadline_seconds):
    """Calls `call` until it succeeds, retrying while librdkafka says the error is retriable
    (a commit whose outcome is not known yet, a coordinator moving) and time is left."""
    deadline = time.time() + deadline_seconds
    while True:
        try:
            return call()
        except KafkaException as e:
            error = error_of(e)
            if not error["retriable"] or time.time() >= deadline:
                raise
            emit({"retry": what, "error": error})
            time.sleep(0.2)


def produce_txn(args):
    """Runs --transactions transactions of --records records each, committing or aborting
    transaction t as --pattern[t % len] says ('c' or 'a'). Record i of a transaction goes to
    partition i % --partitions, so every transaction spans every partition. Prints one line per
    transaction: its intent and its outcome (committed, aborted, or unknown when a fatal error
    left the outcome to the coordinator)."""
    errors = []
    producer = transactional_producer(args, args.transactional_id, errors)
    with_retries("init_transactions", lambda: producer.init_transactions(30), args.retry_seconds)
    emit({"initialized": args.transactional_id})
    counts = {"committed": 0, "aborted": 0, "unknown": 0}
    txn = None
    for txn in range(args.first_transaction, args.first_transaction + args.transactions):
        intent = "commit" if args.pattern[txn % len(args.pattern)] == "c" else "abort"
        outcome, error = run_one_transaction(args, producer, txn, intent)
        counts[outcome] += 1
        emit({"txn": txn, "intent": intent, "outcome": outcome, "error": error})
        if error is not None and error["fatal"]:
            break
        if args.pause_between_ms:
            time.sleep(args.pause_between_ms / 1000)
    emit({**counts, "errors": errors[:10], "last_transaction": txn})


def run_one_transaction(args, producer, txn, intent):
    """One transaction: begin, send, optionally hold it open, then end it as `intent` says.
    Returns (outcome, error or None)."""
    try:
        producer.begin_transaction()
        for index in range(args.records):
            value = f"{args.run_id}:{txn}:{index}"
            send(producer, args.topic, value, f"k{index}", index % args.partitions)
        producer.flush(30)
        if args.hold_open_ms:
            # The test kills the broker (or the coordinator) while this transaction is open.
            emit({"open": txn})
            time.sleep(args.hold_open_ms / 1000)
        if intent == "commit":
            with_retries("commit_transaction", lambda: producer.commit_transaction(30), args.retry_seconds)
            return "committed", None
        with_retries("abort_transaction", lambda: producer.abort_transaction(30), args.retry_seconds)
        return "aborted", None
    except KafkaException as e:
        error = error_of(e)
        if error["abortable"]:
            try:
                with_retries("abort_transaction", lambda: producer.abort_transaction(30), args.retry_seconds)
                return "aborted", error
            except KafkaException as abort_error:
                return "unknown", error_of(abort_error)
        return "unknown", error


def send(producer, topic, value, key, partition):
    """Produces one record (partition -1: the partitioner picks), waiting while the local queue
    is full."""
    while True:
        try:
            producer.produce(topic, key=key, value=value, partition=partition)
            producer.poll(0)
            return
        except BufferError:
            producer.poll(0.05)


def produce_idempotent(args):
    """Produces keyed records `<run>-<n>` with enable.idempotence and acks=all at about --rate
    records/s until --stop-file exists, appending each acknowledged record to --out the moment
    its delivery report arrives. Then flushes and prints the failed deliveries and the errors
    librdkafka reported, by name, so a test can see that no OUT_OF_ORDER_SEQUENCE_NUMBER or
    UNKNOWN_PRODUCER_ID happened across broker restarts."""
    out = open(args.out, "a", buffering=1)
    stats = {"acked": 0, "failed": 0, "failures": {}, "errors": []}

    def report(err, msg):
        if err is not None:
            stats["failed"] += 1
            stats["failures"][err.name()] = stats["failures"].get(err.name(), 0) + 1
            return
        stats["acked"] += 1
        out.write(json.dumps({"key": msg.key().decode(), "value": msg.value().decode(),
                              "partition": msg.partition(), "offset": msg.offset()}) + "\n")

    def on_error(error):
        if len(stats["errors"]) < 20:
            stats["errors"].append({"name": error.name(), "fatal": error.fatal()})

    producer = Producer(
        {
            "bootstrap.servers": args.bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": args.message_timeout_ms,
            "on_delivery": report,
            "error_cb": on_error,
        }
    )
    sent = 0
    start = time.time()
    while not os.path.exists(args.stop_file):
        wait = start + sent / args.rate - time.time()
        if wait > 0:
            producer.poll(min(wait, 0.05))
            continue
        send(producer, args.topic, f"{args.run_id}-{sent}", f"key-{sent}", -1)
        sent += 1
    unflushed = producer.flush(60)
    emit({**stats, "sent": sent, "unflushed": unflushed})


def consume(args):
    """Reads every partition of --topic from the beginning with --isolation, without a consumer
    group (assigned partitions, nothing committed), until --count records, --idle-seconds
    without a record, or --max-seconds. Prints each record, then a summary."""
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": f"txn-tool-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "isolation.level": args.isolation,
        }
    )
    metadata = consumer.list_topics(args.topic, timeout=15)
    partitions = sorted(metadata.topics[args.topic].partitions)
    consumer.assign([TopicPartition(args.topic, p, OFFSET_BEGINNING) for p in partitions])
    count, error, transient = 0, None, []
    last_record = time.time()
    deadline = time.time() + args.max_seconds
    while count < args.count and time.time() < deadline:
        msg = consumer.poll(0.2)
        if msg is None:
            if time.time() - last_record > args.idle_seconds:
                break
            continue
        if msg.error():
            # Connection errors while a broker restarts are retried by librdkafka: kept apart
            # from the fatal ones that end the read.
            if msg.error().fatal():
                error = msg.error().name()
                break
            if len(transient) < 10:
                transient.append(msg.error().name())
            continue
        last_record = time.time()
        count += 1
        key = msg.key().decode() if msg.key() is not None else None
        value = msg.value().decode() if msg.value() is not None else None
        emit({"partition": msg.partition(), "offset": msg.offset(), "key": key, "value": value})
    consumer.close()
    emit({"consumed": count, "isolation": args.isolation, "partitions": partitions, "error": error,
          "transient_errors": transient})


def fence(args):
    """Two producers with one transactional.id: the first initializes, begins and sends; the
    second initializes (which must fence the first and abort its open transaction); the first
    then sends again and tries to commit, which must fail with a fatal fencing error. The second
    then commits a transaction of its own. Prints what each saw."""
    first_errors, second_errors = [], []
    first = transactional_producer(args, args.transactional_id, first_errors)
    first.init_transactions(30)
    first.begin_transaction()
    first_deliveries = []

    def delivered(err, msg):
        first_deliveries.append(err.name() if err is not None else "OK")

    first.produce(args.topic, value="first:0", on_delivery=delivered)
    first.flush(30)
    second = transactional_producer(args, args.transactional_id, second_errors)
    with_retries("second init_transactions", lambda: second.init_transactions(30), args.retry_seconds)

    first_result = {"send_after_fence": None, "commit": None}
    try:
        first.produce(args.topic, value="first:1", on_delivery=delivered)
        first.flush(30)
        first_result["send_after_fence"] = "queued"
    except (KafkaException, SystemError) as e:
        first_result["send_after_fence"] = error_of(e)
    try:
        first.commit_transaction(30)
        first_result["commit"] = "committed"
    except (KafkaException, SystemError) as e:
        first_result["commit"] = error_of(e)
    first_result["deliveries"] = first_deliveries
    first_result["errors"] = first_errors[:10]
    seen = {d for d in first_deliveries} | {e["name"] for e in first_errors}
    if isinstance(first_result["commit"], dict):
        seen.add(first_result["commit"]["name"])
    first_result["fenced"] = bool(seen & FENCED_NAMES)
    first_result["fatal"] = any(e["fatal"] for e in first_errors) or (
        isinstance(first_result["commit"], dict) and first_result["commit"]["fatal"])

    second_result = {"commit": None}
    try:
        second.begin_transaction()
        second.produce(args.topic, value="second:0")
        second.commit_transaction(30)
        second_result["commit"] = "committed"
    except KafkaException as e:
        second_result["commit"] = error_of(e)
    second_result["errors"] = second_errors[:10]
    emit({"first": first_result, "second": second_result})


def eos_loop(args):
    """Kafka's consume-transform-produce loop, exactly once: reads --input read_committed in
    group --group without auto commit; for each batch, one transaction writes each input's
    transformed value (`<value>:out`, same key) to --output and commits the consumer's position
    with it (send_offsets_to_transaction). An abortable error aborts and rewinds the consumer to
    the group's committed offsets. Stops once the group has committed --expected input records
    in all (or when killed). The producer initializes before the consumer joins, so a restarted
    loop first fences its predecessor and aborts its open transaction, then reads the offsets
    that committed transactions left."""
    producer = transactional_producer(args, args.transactional_id)
    with_retries("init_transactions", lambda: producer.init_transactions(30), args.retry_seconds)
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "session.timeout.ms": args.session_timeout_ms,
            "heartbeat.interval.ms": 500,
        }
    )
    consumer.subscribe([args.input])
    emit({"started": args.transactional_id})
    deadline = time.time() + args.max_seconds
    transactions = 0
    while time.time() < deadline:
        messages = [m for m in consumer.consume(num_messages=args.batch, timeout=0.5) if not m.error()]
        if not messages:
            done = committed_total(consumer, args.input)
            if done >= args.expected:
                emit({"done": True, "committed_inputs": done, "transactions": transactions})
                consumer.close()
                return
            continue
        if transform_batch(args, producer, consumer, messages):
            transactions += 1
            emit({"committed_txn": transactions, "inputs": len(messages),
                  "positions": positions_of(consumer)})
    emit({"done": False, "committed_inputs": committed_total(consumer, args.input),
          "transactions": transactions})
    sys.exit(4)


def transform_batch(args, producer, consumer, messages):
    """One transaction for `messages`. True when it committed; on an abortable error, aborts,
    rewinds the consumer to the committed offsets and returns False. Fatal errors raise."""
    try:
        producer.begin_transaction()
        for m in messages:
            value = m.value().decode() + ":out"
            # Keyed inputs are placed by key; unkeyed ones keep their input partition.
            send(producer, args.output, value, m.key(), -1 if m.key() is not None else m.partition())
        offsets = [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]
        producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), 30)
        if args.pause_ms:
            # Widens the window in which a test's SIGKILL lands inside a transaction.
            time.sleep(args.pause_ms / 1000)
        with_retries("commit_transaction", lambda: producer.commit_transaction(30), args.retry_seconds)
        return True
    except KafkaException as e:
        error = error_of(e)
        emit({"transaction_error": error})
        if not error["abortable"]:
            raise
        with_retries("abort_transaction", lambda: producer.abort_transaction(30), args.retry_seconds)
        rewind(consumer)
        return False


def rewind(consumer):
    """Seeks every assigned partition back to the group's committed offset (the beginning when
    nothing is committed), so an aborted batch is read and transformed again."""
    for tp in consumer.committed(consumer.assignment(), timeout=15):
        offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
        consumer.seek(TopicPartition(tp.topic, tp.partition, offset))


def committed_total(consumer, topic):
    """The sum of the group's committed offsets over every partition of `topic`: the number of
    inputs processed, since inputs are written without transactions (dense offsets from 0)."""
    try:
        partitions = consumer.list_topics(topic, timeout=15).topics[topic].partitions
        committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=15)
    except KafkaException as e:
        emit({"committed_unknown": error_of(e)})
        return -1
    return sum(tp.offset for tp in committed if tp.offset >= 0)


def positions_of(consumer):
    return {tp.partition: tp.offset for tp in consumer.position(consumer.assignment())}


def bench(args):
    """Produces --value-bytes records to --topic for --seconds: with --mode txn-interval one
    transaction per --commit-ms, with txn-records one per --commit-records records, with
    idempotent no transactions (enable.idempotence). Prints records/s counted at the end, over
    records whose transaction committed (or that were acknowledged)."""
    value = "x" * args.value_bytes
    config = {
        "bootstrap.servers": args.bootstrap,
        "linger.ms": args.linger_ms,
        "batch.size": 1000000,
        "queue.buffering.max.messages": 1000000,
    }
    if args.mode == "idempotent":
        producer = Producer({**config, "enable.idempotence": True})
        return bench_idempotent(args, producer, value)
    producer = Producer({**config, "transactional.id": f"bench-{uuid.uuid4()}",
                         "transaction.timeout.ms": 60000})
    producer.init_transactions(30)
    records, transactions = 0, 0
    start = time.time()
    while time.time() - start < args.seconds:
        producer.begin_transaction()
        opened = time.time()
        in_transaction = 0
        while True:
            if args.mode == "txn-interval" and time.time() - opened >= args.commit_ms / 1000:
                break
            if args.mode == "txn-records" and in_transaction >= args.commit_records:
                break
            send(producer, args.topic, value, None, -1)
            in_transaction += 1
        producer.commit_transaction(60)
        records += in_transaction
        transactions += 1
    elapsed = time.time() - start
    emit({"mode": args.mode, "records": records, "transactions": transactions, "seconds": elapsed,
          "records_per_second": records / elapsed,
          "records_per_transaction": records / max(transactions, 1)})


def bench_idempotent(args, producer, value):
    acknowledged = {"ok": 0, "failed": 0}

    def report(err, _msg):
        acknowledged["failed" if err is not None else "ok"] += 1

    sent = 0
    start = time.time()
    while time.time() - start < args.seconds:
        while True:
            try:
                producer.produce(args.topic, value=value, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.05)
        sent += 1
        if sent % 1000 == 0:
            producer.poll(0)
    producer.flush(60)
    elapsed = time.time() - start
    emit({"mode": "idempotent", "records": acknowledged["ok"], "failed": acknowledged["failed"],
          "seconds": elapsed, "records_per_second": acknowledged["ok"] / elapsed})


def find_coordinator(args):
    """Asks one broker (the first of --bootstrap) which node coordinates --key (FindCoordinator
    v1, key type 1 = transactional id, 0 = group), with a raw request: librdkafka does not expose
    the answer."""
    host, port = args.bootstrap.split(",")[0].rsplit(":", 1)
    key = args.key.encode()
    client_id = b"txn-tool"
    body = struct.pack(">hhih", 10, 1, 1, len(client_id)) + client_id
    body += struct.pack(">h", len(key)) + key + struct.pack(">b", args.key_type)
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", read_exactly(connection, 4))[0]
        response = read_exactly(connection, size)
    _correlation, _throttle, error_code = struct.unpack_from(">iih", response, 0)
    at = 10
    (message_length,) = struct.unpack_from(">h", response, at)
    at += 2
    message = response[at:at + message_length].decode() if message_length >= 0 else None
    at += max(message_length, 0)
    (node_id, host_length) = struct.unpack_from(">ih", response, at)
    at += 6
    node_host = response[at:at + host_length].decode()
    at += host_length
    (node_port,) = struct.unpack_from(">i", response, at)
    emit({"error_code": error_code, "error_message": message, "node_id": node_id,
          "host": node_host, "port": node_port})


def read_exactly(connection, size):
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        data += chunk
    return data


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--transaction-timeout-ms", type=int, default=60000)
    parser.add_argument("--retry-seconds", type=float, default=60.0,
                        help="how long retriable errors are retried")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("produce-txn")
    p.add_argument("--topic", required=True)
    p.add_argument("--transactional-id", required=True)
    p.add_argument("--transactions", type=int, required=True)
    p.add_argument("--records", type=int, required=True, help="records per transaction")
    p.add_argument("--pattern", default="c", help="c = commit, a = abort, repeating: cac")
    p.add_argument("--partitions", type=int, default=1)
    p.add_argument("--run-id", default="r")
    p.add_argument("--first-transaction", type=int, default=0,
                   help="the number of the first transaction (a restarted producer goes on)")
    p.add_argument("--hold-open-ms", type=int, default=0,
                   help="pause after sending, before ending each transaction")
    p.add_argument("--pause-between-ms", type=int, default=0)
    p.set_defaults(run=produce_txn)

    p = sub.add_parser("produce-idempotent")
    p.add_argument("--topic", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--stop-file", required=True, help="stop once this file exists")
    p.add_argument("--rate", type=float, default=2000.0, help="records per second")
    p.add_argument("--run-id", default="i")
    p.add_argument("--message-timeout-ms", type=int, default=120000)
    p.set_defaults(run=produce_idempotent)

    p = sub.add_parser("consume")
    p.add_argument("--topic", required=True)
    p.add_argument("--isolation", choices=["read_committed", "read_uncommitted"], required=True)
    p.add_argument("--count", type=int, default=10**9)
    p.add_argument("--idle-seconds", type=float, default=3.0)
    p.add_argument("--max-seconds", type=float, default=60.0)
    p.set_defaults(run=consume)

    p = sub.add_parser("fence")
    p.add_argument("--topic", required=True)
    p.add_argument("--transactional-id", required=True)
    p.set_defaults(run=fence)

    p = sub.add_parser("eos-loop")
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--transactional-id", required=True)
    p.add_argument("--expected", type=int, required=True, help="input records in all")
    p.add_argument("--batch", type=int, default=50, help="input records per transaction, at most")
    p.add_argument("--session-timeout-ms", type=int, default=6000)
    p.add_argument("--pause-ms", type=int, default=0, help="pause before each commit")
    p.add_argument("--max-seconds", type=float, default=120.0)
    p.set_defaults(run=eos_loop)

    p = sub.add_parser("bench")
    p.add_argument("--topic", required=True)
    p.add_argument("--mode", choices=["txn-interval", "txn-records", "idempotent"], required=True)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--commit-ms", type=int, default=100)
    p.add_argument("--commit-records", type=int, default=1000)
    p.add_argument("--value-bytes", type=int, default=100)
    p.add_argument("--linger-ms", type=int, default=5)
    p.set_defaults(run=bench)

    p = sub.add_parser("find-coordinator")
    p.add_argument("--key", required=True)
    p.add_argument("--key-type", type=int, default=1)
    p.set_defaults(run=find_coordinator)

    args = parser.parse_args()
    try:
        args.run(args)
    except KafkaException as e:
        emit({"kafka_error": error_of(e)})
        sys.exit(3)


if __name__ == "__main__":
    main()
