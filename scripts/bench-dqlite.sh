#!/usr/bin/env bash
# The dqlite column of `synd bench` (issue 10): one dqlite node on loopback
# running go-dqlite's own benchmark (kvwrite: INSERT OR REPLACE of a random
# key and a value of VALUE_BYTES, each its own transaction, replicated through
# raft and fsynced). Debian: apt-get install go-dqlite.
#
#   scripts/bench-dqlite.sh DIR PORT SECONDS WORKERS VALUE_BYTES
#
# Prints "results FILE" for each results file dqlite-benchmark wrote (per worker
# and query type: a header, then "TIMESTAMP_NS MILLISECONDS" per operation) and
# "cpu USER SYSTEM": the CPU seconds dqlite-benchmark used (node and driver,
# one process). Exit status 3: dqlite-benchmark is not installed.
set -euo pipefail

if [ $# -ne 5 ]; then
    echo "usage: $0 DIR PORT SECONDS WORKERS VALUE_BYTES" >&2
    exit 2
fi
dir=$1 port=$2 seconds=$3 workers=$4 value=$5

if ! command -v dqlite-benchmark > /dev/null; then
    echo "dqlite-benchmark not found (Debian: apt-get install go-dqlite)" >&2
    exit 3
fi

rm -rf "$dir"
mkdir -p "$dir"
# `times` (run by this shell itself, not in a subshell) prints the CPU of the
# shell and of its finished children; the second line, "XmY.YYYs XmY.YYYs", is the children's.
times > "$dir/times.before"
address=127.0.0.1:$port
dqlite-benchmark --db "$address" --driver --cluster "$address" --dir "$dir" \
    --duration "$seconds" --workers "$workers" --value-size "$value" --workload kvwrite \
    > "$dir/benchmark.log" 2>&1 || {
    echo "dqlite-benchmark failed:" >&2
    tail -20 "$dir/benchmark.log" >&2
    exit 1
}
times > "$dir/times.after"

found=0
while IFS= read -r file; do
    echo "results $file"
    found=1
done < <(find "$dir" -path '*/results/*' -type f | sort)
if [ $found -eq 0 ]; then
    echo "dqlite-benchmark wrote no results under $dir:" >&2
    tail -20 "$dir/benchmark.log" >&2
    exit 1
fi

seconds() { sed -n 2p "$1" | awk '{ for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]); printf "%.3f ", a[1] * 60 + a[2] } }'; }
echo "$(seconds "$dir/times.before") $(seconds "$dir/times.after")" | awk '{ printf "cpu %.3f %.3f\n", $3 - $1, $4 - $2 }'
