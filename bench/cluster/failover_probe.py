"""Produces 100-byte records with acks=all for --seconds and prints, as JSON, the longest pause
between two consecutive acknowledgements that starts after --kill-at seconds: the time from a
leader's death to the first write its successor acknowledged (bench/cluster/run.sh kills it)."""
import argparse
import json
import time

from confluent_kafka import Producer


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--kill-at", type=float, default=5)
    args = parser.parse_args()
    producer = Producer({
        "bootstrap.servers": args.bootstrap,
        "acks": "all",
        "linger.ms": 1,
        "enable.idempotence": True,
        "message.timeout.ms": 60000,
    })
    acks = []

    def report(err, msg):
        if err is None:
            acks.append(time.monotonic())

    start = time.monotonic()
    value = "x" * 100
    while time.monotonic() - start < args.seconds:
        try:
            producer.produce(args.topic, value=value, partition=0, on_delivery=report)
        except BufferError:
            pass
        producer.poll(0.001)
    producer.flush(60)
    kill_at = start + args.kill_at
    gaps = [(b - a, a - start) for a, b in zip(acks, acks[1:]) if b > kill_at]
    longest = max(gaps, default=(0, 0))
    print(json.dumps({"acked": len(acks), "failover_seconds": round(longest[0], 3),
                      "pause_started_at": round(longest[1], 3)}))


if __name__ == "__main__":
    main()
