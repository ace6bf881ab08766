#!/usr/bin/env bash
# Nexmark's stateful queries on one core and on two (issue 23): each query of QUERIES run by
# `eddy bench nexmark` under `taskset -c 0` and `taskset -c 0,1`, for every binary given
# (e.g. the build before a change and after it, the same machine, the same run). Prints one
# line per run: binary, cores, and eddy's own line (events/s over the wall time, events/s per
# CPU-second).
# Usage: bench/nexmark_cores.sh EVENTS EDDY [EDDY ...]   (QUERIES="q4 q5 q7" by default)
set -euo pipefail
EVENTS=${1:?events}
shift
QUERIES=${QUERIES:-q4 q5 q7}
for query in $QUERIES; do
  for eddy in "$@"; do
    for cores in 0 0,1; do
      line=$(taskset -c "$cores" "$eddy" bench nexmark --query "$query" --events "$EVENTS" 2>/dev/null \
        | grep '^nexmark')
      echo "$(basename "$eddy") cores=$cores $line"
    done
  done
done
