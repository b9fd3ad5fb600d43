#!/usr/bin/env bash
# The test command: installs what is missing, builds the SQLite tools the tests
# drive (synd-sqlite3, libsyndvfs.so), and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build-sqlite-tools.sh
swift test "$@"
