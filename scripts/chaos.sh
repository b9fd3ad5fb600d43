#!/usr/bin/env bash
# Jepsen-style chaos checker for SyndDB.
#
#   scripts/chaos.sh [--minutes N] [--seed S] [--clients N] [--out DIR] [--keep] [--no-build] [--verbose]
#                    [--writer-reads]
#
# Runs a real `synd sequencer` behind a TCP proxy, workload clients in python3
# (libsyndvfs.so) and through the Swift API (`synd chaos-client`) on several
# databases (bank transfers, list appends, read-only readers), and randomly
# scheduled nemeses (sequencer kill -9/restart and SIGSTOP, client kill -9,
# writer SIGSTOP with a lease takeover, connection cuts, stalls, delays and lost
# answers). Then it checks the recorded history against the final state and runs
# `synd validate` on every database. Prints one summary table; exits non-zero on
# any anomaly and keeps the run directory (history, sequencer log) of a failing
# run. Details: scripts/chaos/check.py (the checks) and scripts/chaos/run.py.
# --writer-reads (opt-in) adds read-only transactions on writer connections and
# a takeover after each cut: aimed at the stale-read window that
# scripts/chaos/repro-writer-stale-read.py shows.
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=2
seed=""
clients=6
out=""
keep=0
build=1
verbose=""
writer_reads=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --clients) clients="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    --no-build) build=0; shift ;;
    --verbose) verbose="--verbose"; shift ;;
    --writer-reads) writer_reads="--writer-reads"; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

if [[ $build -eq 1 ]]; then
  # Two cores shared with other work: one Swift build at a time.
  flock /tmp/synd-swift-build.lock swift build --product synd >&2
  # The extension as scripts/build-sqlite-tools.sh builds it (only this product: no shell relink).
  flock /tmp/synd-swift-build.lock swift build -c release --scratch-path .build-static -Xswiftc -static-stdlib --product syndvfs >&2
fi
[[ -x .build/debug/synd ]] || { echo "missing .build/debug/synd (run without --no-build)" >&2; exit 2; }
[[ -f .build-static/release/libsyndvfs.so ]] || { echo "missing .build-static/release/libsyndvfs.so: run scripts/build-sqlite-tools.sh" >&2; exit 2; }

if [[ -z "$out" ]]; then
  out=$(mktemp -d /tmp/synd-chaos-XXXXXX)
else
  mkdir -p "$out"
fi
# Private copies: a rebuild by someone else during the run cannot swap binaries under it.
mkdir -p "$out/bin"
cp .build/debug/synd "$out/bin/synd"
cp .build-static/release/libsyndvfs.so "$out/bin/libsyndvfs.so"

seed_args=()
[[ -n "$seed" ]] && seed_args=(--seed "$seed")
status=0
# In the background, so an interrupt reaches the trap, which asks the runner to
# stop every process it started (it handles SIGTERM) and waits for it.
/usr/bin/python3 scripts/chaos/run.py --minutes "$minutes" --clients "$clients" --out "$out" \
  --synd "$out/bin/synd" --extension "$out/bin/libsyndvfs" ${seed_args[@]+"${seed_args[@]}"} $verbose $writer_reads &
runner=$!
trap 'kill -TERM "$runner" 2>/dev/null || true' INT TERM
wait "$runner" || status=$?
if kill -0 "$runner" 2>/dev/null; then wait "$runner" || true; fi
trap - INT TERM

rm -rf "$out/bin" "$out/stop"
if [[ $status -gt 128 ]]; then
  echo "chaos: interrupted; run directory kept: $out" >&2
  exit "$status"
fi
if [[ $status -ne 0 ]]; then
  echo "chaos: FAILED (exit $status); history: $out/history.jsonl, anomalies: $out/anomalies.json, sequencer log: $out/logs/sequencer.log, data: $out/seq" >&2
  exit "$status"
fi
# The checker must be able to fail: inject each anomaly kind into this run and expect it reported.
if ! /usr/bin/python3 scripts/chaos/selftest.py "$out" > "$out/selftest.txt"; then
  cat "$out/selftest.txt" >&2
  echo "chaos: the checker's self-test FAILED; run directory kept: $out" >&2
  exit 3
fi
echo "checker self-test: $(grep -c '^ok' "$out/selftest.txt") injected anomalies detected"
if [[ $keep -eq 1 ]]; then
  echo "chaos: passed; run directory kept: $out"
else
  rm -rf "$out"
  echo "chaos: passed"
fi
