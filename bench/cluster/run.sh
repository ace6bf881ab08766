#!/usr/bin/env bash
# Replication benchmark (issue 20): three `eddy broker` processes on this machine, a
# replication-factor-3 topic, 100-byte records from one librdkafka producer (kcat) with acks=1
# and acks=all, then the failover time: kill -9 the leader while an acks=all producer runs and
# measure the longest pause between acknowledgements. Usage: bench/cluster/run.sh [RECORDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
RECORDS=${1:-2000000}
EDDY=${EDDY:-${CARGO_TARGET_DIR:-target}/release/eddy}
PYTHON=${PYTHON:-$HOME/.cache/eddy/test-venv/bin/python}
WORK=$(mktemp -d)
trap 'kill -9 $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
start_node() {
  "$EDDY" broker --node-id "$1" --listen "127.0.0.1:39${1}92" --data-dir "$WORK/node$1" \
    --controller-listen "127.0.0.1:39${1}93" --controller-quorum-voters "$V" \
    --min-insync-replicas 2 > "$WORK/log$1" 2>&1 &
  echo $! > "$WORK/pid$1"
}
V=1@127.0.0.1:39193,2@127.0.0.1:39293,3@127.0.0.1:39393
for n in 1 2 3; do start_node $n; done
B=127.0.0.1:39192,127.0.0.1:39292,127.0.0.1:39392
sleep 3
python3 -c "print(('x' * 100 + '\n') * $RECORDS, end='')" > "$WORK/records.txt"
for acks in 1 all; do
  topic="bench-acks-$acks"
  "$PYTHON" tests/clients/kafka_tool.py --bootstrap "$B" create-topic --topic "$topic" \
    --partitions 1 --replication-factor 3 > /dev/null
  sleep 1
  begin=$(date +%s.%N)
  kcat -b "$B" -P -t "$topic" -p 0 -X acks=$acks -X linger.ms=5 -X batch.size=1000000 < "$WORK/records.txt"
  end=$(date +%s.%N)
  python3 -c "print('acks=$acks: %d records in %.2f s: %.0f records/s' % ($RECORDS, $end - $begin, $RECORDS / ($end - $begin)))"
done
topic=bench-failover
"$PYTHON" tests/clients/kafka_tool.py --bootstrap "$B" create-topic --topic "$topic" \
  --partitions 1 --replication-factor 3 > /dev/null
sleep 1
leader=$(kcat -b "$B" -L -J -t "$topic" | python3 -c "import json,sys; print(json.load(sys.stdin)['topics'][0]['partitions'][0]['leader'])")
"$PYTHON" bench/cluster/failover_probe.py --bootstrap "$B" --topic "$topic" --seconds 15 --kill-at 5 > "$WORK/failover.json" &
probe=$!
sleep 5
kill -9 "$(cat "$WORK/pid$leader")"
wait $probe
echo "failover after kill -9 of leader $leader: $(cat "$WORK/failover.json")"
