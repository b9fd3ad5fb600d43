#!/usr/bin/env bash
# Builds what SQLite users run, with the Swift runtime linked in statically:
#   .build-static/release/synd-sqlite3   SQLite's shell, its main database on the sequencer
#   .build-static/release/libsyndvfs.so  the VFS as a loadable extension
# Neither needs the Swift toolchain where it runs; synd-sqlite3 links SQLite
# statically, libsyndvfs.so links no SQLite at all (it uses its host's).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/fetch-sqlite-shell.sh
touch Sources/CSQLiteShell/shell_wrapper.c   # pick up the generated (and patched) shell.c
for product in synd-sqlite3 syndvfs; do
  swift build -c release --scratch-path .build-static -Xswiftc -static-stdlib --product "$product"
done
ls -la .build-static/release/synd-sqlite3 .build-static/release/libsyndvfs.so
