#!/usr/bin/env bash
# librdkafka's own transaction tests (2.0.2, Debian bookworm's source package: 0103
# transactions, 0098 consumer_txn, 0129 fetch_aborted_msgs, 0061 consumer lag with
# transactions) against one Eddy broker (issue 21). Run by tests/tests/librdkafka_e2e.rs.
#
#   tests/librdkafka/run.sh EDDY_BINARY
#
# The source is fetched with private apt lists (the system's apt configuration is untouched),
# patched (eddy-single-broker.patch: topics the suite creates with replication factor 3 get
# TEST_MAX_REPLICATION_FACTOR when set, since one broker cannot hold three replicas, as on a
# single-node Kafka; 0098's Java producer variant runs only when KAFKA_PATH names a Kafka
# distribution), built once into $EDDY_LIBRDKAFKA_CACHE (default ~/.cache/eddy/librdkafka), and
# run against `EDDY_BINARY broker` on a free loopback port.
#
# Left out: 0103's do_test_misuse_txn, which expects init_transactions() with a 1 ms timeout to
# time out, and fails when a broker on loopback answers within that millisecond; and the tests
# that use librdkafka's built-in mock cluster (they never reach a broker).
set -uo pipefail

eddy=${1:?usage: run.sh EDDY_BINARY}
here=$(cd "$(dirname "$0")" && pwd)
cache=${EDDY_LIBRDKAFKA_CACHE:-$HOME/.cache/eddy/librdkafka}
version=2.0.2
src=$cache/librdkafka-$version
apt_dir=$cache/apt
jobs=$(nproc 2>/dev/null || echo 2)

log() { printf '[librdkafka %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FATAL: $*"; exit 2; }

fetch_source() {
  local tarball=$apt_dir/src/librdkafka_${version}.orig.tar.gz
  [ -f "$tarball" ] && return 0
  log "fetching the librdkafka $version source package"
  mkdir -p "$apt_dir/sources" "$apt_dir/lists/partial" "$apt_dir/src"
  cat > "$apt_dir/sources/debsrc.sources" <<'SOURCES'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  local opts=(-o Dir::Etc::SourceParts="$apt_dir/sources" -o Dir::Etc::SourceList=/dev/null
              -o Dir::State::Lists="$apt_dir/lists")
  apt-get "${opts[@]}" update > /dev/null || die "apt-get update (deb-src) failed"
  (cd "$apt_dir/src" && apt-get "${opts[@]}" source --download-only "librdkafka=${version}-1") \
    > /dev/null || die "apt-get source failed"
}

install_build_deps() {
  local want=(gcc g++ make pkg-config python3 libssl-dev zlib1g-dev libzstd-dev liblz4-dev
              libsasl2-dev rapidjson-dev patch)
  local missing=()
  for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing build dependencies: ${missing[*]}"
    apt-get update -qq > /dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" > /dev/null \
      || die "apt-get install ${missing[*]} failed"
  fi
}

build() {
  if [ ! -f "$src/configure" ]; then
    tar -C "$cache" -xzf "$apt_dir/src/librdkafka_${version}.orig.tar.gz" || die "extract failed"
  fi
  if ! grep -q EDDY-PATCH "$src/tests/test.c"; then
    (cd "$src" && patch -p1 < "$here/eddy-single-broker.patch") > /dev/null || die "patch failed"
  fi
  cd "$src" || die "no $src"
  if [ ! -f Makefile.config ]; then
    log "configure"
    ./configure --disable-curl > "$cache/configure.log" 2>&1 || die "configure failed: $cache/configure.log"
  fi
  log "building (cached when up to date)"
  make -j"$jobs" libs > "$cache/build-libs.log" 2>&1 || die "make libs failed: $cache/build-libs.log"
  make -j"$jobs" -C tests build > "$cache/build-tests.log" 2>&1 \
    || die "make -C tests build failed: $cache/build-tests.log"
  [ -x tests/test-runner ] || die "no tests/test-runner"
}

mkdir -p "$cache"
fetch_source
install_build_deps
build

work=$(mktemp -d)
broker_pid=
cleanup() {
  [ -n "$broker_pid" ] && kill -9 "$broker_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$eddy" broker --listen "127.0.0.1:$port" --data-dir "$work/data" > "$work/broker.log" 2>&1 &
broker_pid=$!
for _ in $(seq 300); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  kill -0 "$broker_pid" 2>/dev/null || { cat "$work/broker.log"; die "the broker exited"; }
  sleep 0.1
done
cat > "$work/test.conf" <<CONF
bootstrap.servers=127.0.0.1:$port
test.timeout.multiplier=2
CONF

# name | TESTS | SUBTESTS (a substring of the subtest's name; empty: all)
runs=(
  "0103 basic, no compression|0103_transactions|without compression"
  "0103 basic, compression|0103_transactions|with compression"
  "0103 consume-transform-produce|0103_transactions|do_test_consumer_producer_txn"
  "0103 fenced, no produce after|0103_transactions|do not produce after fence"
  "0103 fenced, produce after|0103_transactions|: produce after fence"
  "0103 fatal idempotence error|0103_transactions|do_test_fatal_idempo_error_without_kip360"
  "0103 empty, no offsets, commit|0103_transactions|don't send offsets, commit"
  "0103 empty, no offsets, abort|0103_transactions|don't send offsets, abort"
  "0103 empty, offsets, commit|0103_transactions|: send offsets, commit"
  "0103 empty, offsets, abort|0103_transactions|: send offsets, abort"
  "0103 watermarks by isolation level|0103_transactions|do_test_wmark_isolation_level"
  "0098 consumer_txn (librdkafka producer)|0098_consumer_txn|"
  "0129 fetch_aborted_msgs|0129_fetch_aborted_msgs|"
  "0061 consumer lag with transactions|0061_consumer_lag|with transactions"
)
failed=0
cd "$src/tests" || die "no tests folder"
for run in "${runs[@]}"; do
  IFS='|' read -r name tests subtests <<< "$run"
  out=$work/run.log
  env RDKAFKA_TEST_CONF="$work/test.conf" TESTS="$tests" SUBTESTS="$subtests" \
      TEST_KAFKA_VERSION=3.6.0 TEST_MAX_REPLICATION_FACTOR=1 TEST_LEVEL=2 \
      timeout 600 ./run-test.sh -p1 -L > "$out" 2>&1
  rc=$?
  clean=$(sed 's/\x1b\[[0-9;]*m//g' "$out")
  if [ $rc -eq 0 ] && grep -aq 'bare mode PASSED' <<< "$clean" \
      && { [ -z "$subtests" ] || grep -aqF ": PASS (" <<< "$clean"; }; then
    echo "PASS $name"
  else
    failed=1
    echo "FAIL $name (exit $rc)"
    grep -a -m1 -A2 '^### Test .* failed at' <<< "$clean" || tail -20 <<< "$clean"
  fi
  kill -0 "$broker_pid" 2>/dev/null || { tail -50 "$work/broker.log"; die "the broker died"; }
done
exit $failed
