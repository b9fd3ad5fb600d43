#!/usr/bin/env bash
# The test command: installs what is missing, builds the SQLite tools the tests
# drive (synd-sqlite3, libsyndvfs.so), and runs every test. Then the short
# versions of the reliability harness (TESTING.md): SQLite's own test suite with
# synddb as the default VFS, the Jepsen-style chaos checker, and the fuzzers.
#
#   scripts/test.sh                 everything (what .ci/run calls)
#   scripts/test.sh ARGS...         only `swift test ARGS...` (e.g. --filter X)
#   SYNDDB_HARNESS=0 scripts/test.sh   only the Swift tests
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build-sqlite-tools.sh
# Every test run has a real PostgreSQL (the PostgreSQL store's tests need one):
# a throw-away cluster, removed afterwards.
if [ -z "${SYNDDB_TEST_POSTGRES:-}" ]; then exec ./scripts/with-postgres.sh "$0" "$@"; fi
if [ $# -gt 0 ]; then exec swift test "$@"; fi
# Two groups, one after the other. The tests that time lease hand-overs,
# renewals and TTLs (a holder must answer within lock_wait_ms, a paused writer
# is fenced after its TTL) measure the machine, not SyndDB, when 150 other
# tests (big commits, process storms, kill -9 loops) share its two cores, so
# they run on their own first; everything else runs in parallel after them.
# EdgeCaseLedgerTests is among them: it times how soon a validator's statement
# timeout stops a definition that would run for minutes (30.2 s against its 30 s
# bound once, with the first half's tests sharing the cores).
timing_tests='ManyWritersTests|CommitPathTests|WriterDeathTests|CommitOutcomeTests|ReadConsistencyTests|DatabaseIndependenceTests|EdgeCaseLedgerTests|ResourceLimitTests'
# The rest runs in two halves (suites A-L, then M-Z): all of it at once held
# 1,300-1,500 file descriptors early on (an event loop group and connections per
# embedded sequencer, pipes per child), past the count at which Foundation's
# Process.run() on Linux over-reads /proc/self/fd's directory buffer and
# crashes the test process (swiftlang/swift-corelibs-foundation#5472).
first_half='^SyndDBTests\.[A-L]'
swift build --build-tests
swift test --skip-build --filter "$timing_tests"
swift test --skip-build --skip "$timing_tests" --filter "$first_half"
swift test --skip-build --skip "$timing_tests" --skip "$first_half"
# The core suites again with every sequencer on the PostgreSQL store (durability
# under kill -9, exactly-once outcomes, fencing, streaming, validation, time
# travel, drop), one test at a time: they time lease hand-overs too.
postgres_core='^SyndDBTests\.(GroupCommitCrashTests|CommitOutcomeTests|FollowerTests|LedgerTests|TimeTravelTests|DropDatabaseTests|SQLiteThroughVFSTests|ManyWritersTests|WriterDeathTests|ReadConsistencyTests)/'
# Left out there: aLateArrivalAfterTheWriterReadAgainIsFencedOff, whose proxy
# delivers a late request together with the client's own reset of it. The
# embedded store answers before it reads the reset; PostgreSQL's answer comes
# after it, on a stream the client already reset, so the proxy sees no answer
# although the sequencer refused the request. Late arrivals on PostgreSQL are
# checked by aLateArrivalAfterAnUnknownOutcomeIsSeenAndWritesGoOn, and fencing
# of old epochs by SequencerStoreConformanceTests.
SYNDDB_TEST_STORE=postgres swift test --skip-build --no-parallel --filter "$postgres_core" --skip 'aLateArrivalAfterTheWriterReadAgainIsFencedOff'
if [ "${SYNDDB_HARNESS:-1}" = 0 ]; then exit 0; fi

step() { echo; echo "== $1 ($(date -u +%H:%M:%S))"; }
step "SQLite's own test suite, quick list"
./scripts/sqlite-test-suite.sh --quick
step "chaos checker, 2 minutes"
./scripts/chaos.sh --minutes 2
step "fuzzing, 30 s per target"
./scripts/fuzz.sh --seconds 30
step "all passed"
