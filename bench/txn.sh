#!/usr/bin/env bash
# Transactions benchmark (issue 21): one `eddy broker` on this machine, a 3-partition topic per
# mode, 100-byte records from one confluent-kafka (librdkafka) Python producer for SECONDS each:
# transactional with a commit every 100 ms, transactional with a commit every 1,000 records, and
# plain idempotent produce (enable.idempotence, no transactions) for comparison. Prints
# records/s per mode; records count only once their transaction committed (or, idempotent,
# once acknowledged). The client is one Python process, so the figures bound the broker from
# below, as the README's confluent-kafka row does.
# Usage: bench/txn.sh [SECONDS]   (EDDY=path/to/eddy, PYTHON=venv python with confluent-kafka)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_MODE=${1:-10}
EDDY=${EDDY:-${CARGO_TARGET_DIR:-target}/release/eddy}
PYTHON=${PYTHON:-$HOME/.cache/eddy/test-venv/bin/python}
PORT=${PORT:-39692}
B=127.0.0.1:$PORT
WORK=$(mktemp -d)
trap 'kill -9 $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
"$EDDY" broker --listen "$B" --data-dir "$WORK/data" > "$WORK/broker.log" 2>&1 &
for _ in $(seq 1 100); do
  grep -q "listening on" "$WORK/broker.log" && break
  sleep 0.1
done
grep -q "listening on" "$WORK/broker.log" || { cat "$WORK/broker.log"; exit 1; }
failed=0
for mode in txn-interval txn-records idempotent; do
  topic="bench-$mode"
  "$PYTHON" tests/clients/kafka_tool.py --bootstrap "$B" create-topic --topic "$topic" \
    --partitions 3 > /dev/null
  "$PYTHON" tests/clients/txn_tool.py --bootstrap "$B" bench --topic "$topic" --mode "$mode" \
    --seconds "$SECONDS_PER_MODE" --commit-ms 100 --commit-records 1000 --value-bytes 100 \
    2> "$WORK/$mode.err" | tail -1 > "$WORK/$mode.json" || true
  # A mode that fails (a broker without transactions) is reported; the others still run.
  "$PYTHON" - "$mode" "$WORK/$mode.json" <<'EOF' || failed=1
import json, sys
mode, path = sys.argv[1], sys.argv[2]
r = json.load(open(path))
if "records_per_second" not in r:
    sys.exit(f"{mode}: {r}")
what = {"txn-interval": "transactional, commit every 100 ms",
        "txn-records": "transactional, commit every 1,000 records",
        "idempotent": "idempotent, no transactions"}[mode]
extra = f", {r['transactions']} transactions" if "transactions" in r else ""
print(f"{what}: {r['records']} records in {r['seconds']:.1f} s{extra}: "
      f"{r['records_per_second']:.0f} records/s")
EOF
done
exit $failed
