#!/usr/bin/env bash
# LinkedIn's Burrow (Debian's `burrow`, 1.2.1) reports a consumer group's committed offsets and
# lag from an Eddy broker: the steps of tests/tests/burrow_e2e.rs, runnable without building the
# engine (issue 24).
#
#   tests/burrow/run.sh BROKER [KAFKA_VERSION]
#
# BROKER is `eddy` (run as `eddy broker --listen .. --data-dir ..`) or the broker crate's example
# (`cargo build -p eddy-broker --example serve`, run as `serve ADDRESS DATA_DIR`). KAFKA_VERSION is
# the kafka-version of Burrow's client profile (default 2.0.0; 1.2.1 knows 0.8.0 to 2.1.0).
# Burrow 1.2 keeps its own state in ZooKeeper: Debian's `zookeeper` runs standalone on loopback.
# Everything runs on free loopback ports in a temporary folder, stopped on exit.
#
# Method: Burrow starts against a fresh broker (it reads __consumer_offsets, which no group has
# created yet); 100 keyed records go to a topic of 2 partitions; once Burrow has read the high
# watermarks, a consumer group reads those 100 and commits; 100 more are produced. Burrow must
# then report, per partition, the committed offset and a lag of high watermark minus committed.
# Burrow 1.2.1 decodes group metadata records up to v1 while Kafka 2.3+ (and Eddy) write v3: it
# logs "failed to decode ... value version 3" and shows no owner per partition, as against
# Kafka; offsets and lag do not depend on those records.
set -euo pipefail

broker=${1:?usage: run.sh BROKER [KAFKA_VERSION]}
kafka_version=${2:-2.0.0}
root=$(cd "$(dirname "$0")/../.." && pwd)
python=${EDDY_TEST_PYTHON:-$HOME/.cache/eddy/test-venv/bin/python}
topic=orders
group=billing
deadline_seconds=60

for package in burrow:/usr/bin/Burrow zookeeper:/usr/share/java/zookeeper.jar kcat:/usr/bin/kcat; do
    if [ ! -e "${package#*:}" ]; then
        apt-get update -qq && apt-get install -y -qq "${package%%:*}"
    fi
done

dir=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ "${keep:-}" != 1 ]; then rm -rf "$dir"; fi
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Polls `$@` every 200 ms until it succeeds or $deadline_seconds pass.
wait_for() {
    local what=$1
    shift
    local until=$((SECONDS + deadline_seconds))
    until "$@"; do
        if [ $SECONDS -ge $until ]; then
            echo "timed out after ${deadline_seconds}s waiting for $what" >&2
            if [ -n "${last_seen:-}" ]; then echo "last seen: $last_seen" >&2; fi
            keep=1
            echo "logs kept in $dir" >&2
            exit 1
        fi
        sleep 0.2
    done
}

# ZooKeeper serves sessions once its four-letter `srvr` answers with its mode (listening alone
# is not enough: it closes connections until its database is loaded).
zookeeper_serving() {
    python3 - "$1" <<'PY'
import socket, sys
try:
    with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2) as s:
        s.sendall(b"srvr")
        answer = b"".join(iter(lambda: s.recv(4096), b""))
except OSError:
    sys.exit(1)
sys.exit(0 if b"Mode:" in answer else 1)
PY
}

zookeeper_port=$(free_port)
broker_port=$(free_port)
burrow_port=$(free_port)
bootstrap=127.0.0.1:$broker_port
burrow_url=http://127.0.0.1:$burrow_port/v3/kafka/eddy

# ZooKeeper standalone: the server class straight from Debian's jar (its manifest names the
# libraries), without the init scripts or systemd.
mkdir -p "$dir/zookeeper"
cat >"$dir/zookeeper/zoo.cfg" <<EOF
tickTime=2000
dataDir=$dir/zookeeper/data
clientPort=$zookeeper_port
clientPortAddress=127.0.0.1
admin.enableServer=false
EOF
java -cp /usr/share/java/zookeeper.jar org.apache.zookeeper.server.ZooKeeperServerMain \
    "$dir/zookeeper/zoo.cfg" >"$dir/zookeeper.log" 2>&1 &
pids+=($!)

if [ "$(basename "$broker")" = eddy ]; then
    EDDY_LOG=info "$broker" broker --listen "$bootstrap" --data-dir "$dir/data" \
        --group-initial-rebalance-delay-ms 0 >"$dir/broker.log" 2>&1 &
else
    "$broker" "$bootstrap" "$dir/data" >"$dir/broker.log" 2>&1 &
fi
pids+=($!)
wait_for "the broker to listen" grep -q "listening on" "$dir/broker.log"
wait_for "ZooKeeper to serve" zookeeper_serving "$zookeeper_port"

# Burrow polls every second (topic-refresh, offset-refresh); the evaluator caches for 1 s.
mkdir -p "$dir/burrow"
cat >"$dir/burrow/burrow.toml" <<EOF
[general]
pidfile="$dir/burrow/burrow.pid"

[logging]
level="info"

[zookeeper]
servers=["127.0.0.1:$zookeeper_port"]
timeout=6
root-path="/burrow"

[client-profile.eddy]
client-id="burrow-e2e"
kafka-version="$kafka_version"

[cluster.eddy]
class-name="kafka"
servers=["$bootstrap"]
client-profile="eddy"
topic-refresh=1
offset-refresh=1

[consumer.eddy]
class-name="kafka"
cluster="eddy"
servers=["$bootstrap"]
client-profile="eddy"

[httpserver.default]
address="127.0.0.1:$burrow_port"

[storage.default]
class-name="inmemory"
workers=4
intervals=10
expire-group=604800
min-distance=1

[evaluator.default]
class-name="caching"
expire-cache=1
EOF
/usr/bin/Burrow --config-dir "$dir/burrow" >"$dir/burrow.log" 2>&1 &
burrow_pid=$!
pids+=($burrow_pid)

burrow_get() { curl -sf "$burrow_url$1"; }
burrow_up() {
    kill -0 "$burrow_pid" 2>/dev/null || {
        echo "Burrow exited:" >&2
        tail -20 "$dir/burrow.log" >&2
        keep=1
        exit 1
    }
    burrow_get "" >/dev/null
}
wait_for "Burrow's HTTP API" burrow_up
# Burrow's consumer module started: it found __consumer_offsets and reads it from the start.
wait_for "Burrow to read __consumer_offsets" grep -q '"starting consumers"' "$dir/burrow.log"

tool() { "$python" "$root/tests/clients/kafka_tool.py" --bootstrap "$bootstrap" "$@"; }
high_watermarks() {
    tool watermarks --topic $topic --partitions 2 | jq -c '[.[].high]'
}

tool create-topic --topic $topic --partitions 2 >/dev/null
tool produce --topic $topic --count 100 --keyed >/dev/null
first=$(high_watermarks)
echo "high watermarks after 100 records: $first"

# Burrow drops a commit for a partition whose high watermark it has not read yet: wait for them.
burrow_topic_offsets() {
    [ "$(burrow_get "/topic/$topic" | jq -c .offsets)" = "$first" ]
}
wait_for "Burrow to read the high watermarks $first" burrow_topic_offsets

consumed=$(tool consume --topic $topic --group $group --count 100 --commit --idle-seconds 1)
committed=$(echo "$consumed" | jq -c '[.committed | sort_by(.partition)[] | .offset]')
echo "group $group committed $committed"
[ "$committed" = "$first" ] || { echo "the group committed $committed, not $first" >&2; exit 1; }

tool produce --topic $topic --count 100 --keyed >/dev/null
second=$(high_watermarks)
echo "high watermarks after 200 records: $second"

# What Burrow must report, per partition: [committed offset, high watermark - committed].
expected=$(jq -cn --argjson c "$committed" --argjson h "$second" \
    '[range(0; 2) | [$c[.], $h[.] - $c[.]]]')
expected_total=$(jq -n --argjson e "$expected" '[$e[][1]] | add')
burrow_lag() {
    local lag
    lag=$(burrow_get "/consumer/$group/lag") || return 1
    local seen total
    seen=$(echo "$lag" | jq -c \
        '[.status.partitions | sort_by(.partition)[] | select(.topic == "orders")
          | [.end.offset, .current_lag]]')
    total=$(echo "$lag" | jq .status.totallag)
    [ "$seen" = "$expected" ] && [ "$total" = "$expected_total" ] || {
        last_seen="$seen total $total"
        return 1
    }
}
last_seen=none
wait_for "Burrow to report [offset, lag] per partition $expected" burrow_lag
echo "Burrow reports [committed, lag] per partition $expected, total lag $expected_total"

consumers=$(burrow_get "/consumer" | jq -c .consumers)
[ "$consumers" = "[\"$group\"]" ] || { echo "Burrow lists consumers $consumers" >&2; exit 1; }
status=$(burrow_get "/consumer/$group/status" | jq -r '.status.status, .status.partition_count')
echo "Burrow's status for $group: $(echo $status)"
echo "ok: Burrow (kafka-version $kafka_version) reads Eddy's groups, offsets and lag"
