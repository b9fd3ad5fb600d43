#!/usr/bin/env bash
# Fuzzes SyndDB with libFuzzer: builds Fuzz/ (synd-fuzz, -sanitize=fuzzer,address,
# scratch path .build-fuzz) and runs each target for N seconds, one at a time.
#
#   scripts/fuzz.sh [--seconds N] [--no-build] [target...]   targets: sequencer client framing validator
#
# Seeds come from Fuzz/corpus/<target> and Fuzz/regressions/<target>; what the
# fuzzer finds new is kept in .fuzz/corpus/<target> (git-ignored) for the next
# run. A crash (or timeout, out-of-memory, leak) stops its target; the input is
# copied into Fuzz/regressions/<target>/, which FuzzRegressionTests replays,
# and the script exits non-zero. Builds run under the shared build lock.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=30
build=1
targets=()
all=(sequencer client framing validator)
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --seconds=*) seconds="${1#--seconds=}"; shift ;;
        --no-build) build=0; shift ;;
        -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
for t in "${targets[@]}"; do
    case " ${all[*]} " in *" $t "*) ;; *) echo "fuzz.sh: no target '$t' (have: ${all[*]})" >&2; exit 2 ;; esac
done

binary=.build-fuzz/debug/synd-fuzz
if [ "$build" = 1 ]; then
    start=$(date +%s)
    # SwiftPM keeps its build plan for Fuzz/ although a source file was added to
    # SyndDB (its path dependency): the build then fails "cannot find X in
    # scope". Dropping the plan makes it look again (a few seconds).
    rm -f .build-fuzz/debug.yaml .build-fuzz/debug/description.json
    flock /tmp/synd-swift-build.lock \
        swift build --package-path Fuzz --scratch-path .build-fuzz -Xswiftc -sanitize=fuzzer,address
    echo "fuzz: sanitizer build took $(( $(date +%s) - start )) s"
fi
[ -x "$binary" ] || { echo "fuzz.sh: $binary is missing (run without --no-build)" >&2; exit 2; }

# Swift's own backtracer would symbolicate a 200 MB binary at every crash;
# libFuzzer and ASan print the stack. Leaks: the Swift runtime's caches and
# task allocations live for the process, so LeakSanitizer would only report those.
export SWIFT_BACKTRACE=enable=no
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=0:allocator_may_return_null=1}"

total_execs=0
total_crashes=0
summary=()
for t in "${targets[@]}"; do
    corpus=.fuzz/corpus/$t
    artifacts=.fuzz/artifacts/$t
    log=.fuzz/logs/$t.log
    mkdir -p "$corpus" "$artifacts" .fuzz/logs Fuzz/regressions/$t
    rm -f "$artifacts"/*
    echo "fuzz: $t for $seconds s (log: $log)"
    began=$(date +%s)
    set +e
    SYND_FUZZ_TARGET=$t "$binary" \
        -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=30 -max_len=65536 \
        -print_final_stats=1 -artifact_prefix="$artifacts/" \
        "$corpus" "Fuzz/corpus/$t" "Fuzz/regressions/$t" >"$log" 2>&1
    status=$?
    set -e
    elapsed=$(( $(date +%s) - began ))
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)
    [ -n "$execs" ] || execs=$(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d '#' || true)
    execs=${execs:-0}
    crashes=0
    for f in "$artifacts"/*; do
        [ -f "$f" ] || continue
        crashes=$((crashes + 1))
        cp "$f" "Fuzz/regressions/$t/"
        echo "fuzz: $t: $(basename "$f") -> Fuzz/regressions/$t/ (reproduce: SYND_FUZZ_TARGET=$t $binary Fuzz/regressions/$t/$(basename "$f"))"
    done
    if [ "$crashes" = 0 ] && [ "$status" != 0 ]; then
        crashes=1
        echo "fuzz: $t: libFuzzer exited with status $status and left no input; see $log"
    fi
    [ "$crashes" = 0 ] || grep -m3 -E 'Fatal error|ERROR: (AddressSanitizer|libFuzzer)|SUMMARY' "$log" | sed "s/^/fuzz: $t: /" || true
    echo "fuzz: $t: $elapsed s, $execs executions, $crashes crashes"
    summary+=("$t: $elapsed s, $execs executions, $crashes crashes")
    total_execs=$((total_execs + execs))
    total_crashes=$((total_crashes + crashes))
done
for line in "${summary[@]}"; do echo "  $line"; done
echo "fuzz: ${#targets[@]} targets, $total_execs executions, $total_crashes crashes"
[ "$total_crashes" = 0 ]
