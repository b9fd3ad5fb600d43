#!/usr/bin/env bash
# Runs SQLite's own TCL test suite (test/*.test from Debian's sqlite3 source
# package, the version of the installed libsqlite3-dev) with synddb as the
# DEFAULT VFS: every database the tests open by name lives in a sequencer.
#
#   scripts/sqlite-test-suite.sh [--quick|--full] [--stock] [--jobs N]
#                                [--timeout S] [--no-build] [--keep] [FILE.test ...]
#
#   --quick      scripts/sqlite-test-suite/quick.txt (the default; CI)
#   --full       scripts/sqlite-test-suite/full.txt
#   --stock      the same files on SQLite's stock unix VFS (no sequencer), to
#                tell a SyndDB defect from a test that fails on stock too
#   --jobs N     test files run in parallel (default 2)
#   --timeout S  per test file (default 300 s)
#   --no-build   use the existing synd, libsyndvfs.so and testfixture
#   --keep       keep the temp directories (working dirs, sequencer data, logs)
#   FILE.test    run just these files (names as in the lists)
#
# What it does:
#  1. Builds testfixture into .build-sqlite-tests/ (git-ignored; rebuilt only
#     when the SQLite version or our hook files change): fetches the sqlite3
#     source package with apt (adds a deb-src entry when missing, as
#     fetch-sqlite-shell.sh does), applies Debian's source fixes, patches the
#     build copy (scripts/sqlite-test-suite/patch_sources.py), and links
#     scripts/sqlite-test-suite/synd_testfixture.c in with
#     -DSQLITE_EXTRA_INIT=synd_testfixture_init, session + preupdate hook, and
#     -rdynamic (the extension finds the preupdate functions in the executable).
#  2. Builds `synd` (swift build --product synd) and libsyndvfs.so
#     (scripts/build-sqlite-tools.sh), under the shared build lock.
#  3. Runs each test file as its own testfixture process, in a fresh temp
#     working directory, against a fresh `synd sequencer` (temp data dir, a free
#     loopback port; SYNDDB_SEQUENCER points at it), with a timeout; stops every
#     sequencer at the end, on failure and on Ctrl-C (run.py).
#  4. Prints each file's result, then
#     "sqlite-test-suite: N files, P passed, F failed, E excluded" and the failing
#     tests; exits non-zero if any file failed. Files listed in excluded.txt are
#     skipped (and counted as excluded) with their reason.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
here=scripts/sqlite-test-suite
build=.build-sqlite-tests
lock=/tmp/synd-swift-build.lock

list=quick
stock=0
jobs=2
timeout=300
nobuild=0
keep=0
files=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) list=quick ;;
    --full) list=full ;;
    --stock) stock=1 ;;
    --jobs) jobs=$2; shift ;;
    --timeout) timeout=$2; shift ;;
    --no-build) nobuild=1 ;;
    --keep) keep=1 ;;
    -h|--help) sed -n '2,40p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) files+=("$1") ;;
  esac
  shift
done

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

# ---------------------------------------------------------------- testfixture
build_testfixture() {
  local version want have
  for tool in tclsh python3 make cc xz; do
    command -v "$tool" >/dev/null || missing_tools=1
  done
  if [ ! -f /usr/lib/tcl8.6/tclConfig.sh ] || [ -n "${missing_tools:-}" ]; then
    $sudo apt-get install -y -qq tcl tcl-dev python3 make gcc xz-utils libsqlite3-dev
  fi
  version=$(dpkg-query -W -f='${source:Version}' libsqlite3-dev)
  want="sqlite3 $version; $(cat "$here/synd_testfixture.c" "$here/patch_sources.py" | sha256sum | cut -c1-16); build 1"
  have=$(cat "$build/stamp" 2>/dev/null || true)
  if [ -x "$build/testfixture" ] && [ "$have" = "$want" ]; then return 0; fi

  echo "sqlite-test-suite: building testfixture from Debian's sqlite3 $version into $build/"
  if [ -z "$(apt-cache showsrc sqlite3 2>/dev/null)" ]; then
    echo "adding a deb-src entry for Debian bookworm (to fetch SQLite's test suite)"
    $sudo tee /etc/apt/sources.list.d/synddb-deb-src.sources >/dev/null <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    $sudo apt-get update -qq
  fi
  rm -rf "$build/src" "$build/download" "$build/testfixture" "$build/stamp"
  mkdir -p "$build/download" "$build/src"
  (cd "$build/download" && { apt-get source --download-only "sqlite3=$version" >/dev/null 2>&1 \
    || apt-get source --download-only sqlite3 >/dev/null; })
  tar -xf "$(ls "$build"/download/sqlite3_*.orig.tar.* | grep -v -- -www | head -1)" -C "$build/src" --strip-components=1
  # Debian's fixes to SQLite's own code (not its build-system patches).
  local debian
  debian=$(ls "$build"/download/sqlite3_*.debian.tar.* | head -1)
  mkdir -p "$build/download/debian"
  tar -xf "$debian" -C "$build/download"
  while read -r p; do
    [ -n "$p" ] || continue
    local f="$build/download/debian/patches/$p"
    if grep '^+++ ' "$f" | awk '{print $2}' | sed 's|^[^/]*/||' | grep -qvE '^(src|ext|test)/'; then continue; fi
    patch -d "$build/src" -p1 -s --forward < "$f" || { echo "Debian patch $p does not apply" >&2; exit 1; }
  done < "$build/download/debian/patches/series"
  python3 "$here/patch_sources.py" "$build/src"

  (cd "$build/src" && ./configure --enable-session --with-tcl=/usr/lib/tcl8.6 LDFLAGS=-rdynamic >configure.log 2>&1) \
    || { tail -20 "$build/src/configure.log"; exit 1; }
  flock "$lock" make -C "$build/src" -j2 sqlite3.h >/dev/null
  cc -O2 -fPIC -I"$build/src" -I/usr/include/tcl8.6 -c "$here/synd_testfixture.c" -o "$build/synd_testfixture.o"
  flock "$lock" make -C "$build/src" -j2 testfixture \
    OPTS="-DSQLITE_EXTRA_INIT=synd_testfixture_init" LIBS="$root/$build/synd_testfixture.o" >"$build/make.log" 2>&1 \
    || { tail -30 "$build/make.log"; exit 1; }
  cp "$build/src/testfixture" "$build/testfixture"
  echo "$want" > "$build/stamp"
}

if [ "$nobuild" -eq 0 ] || [ ! -x "$build/testfixture" ]; then build_testfixture; fi

# ------------------------------------------------------------ synd, extension
synd=""
lib=""
if [ "$stock" -eq 0 ]; then
  if [ "$nobuild" -eq 0 ]; then
    flock "$lock" swift build --product synd >/dev/null
    flock "$lock" ./scripts/build-sqlite-tools.sh >/dev/null
  fi
  synd="$(swift build --show-bin-path)/synd"
  lib="$root/.build-static/release/libsyndvfs.so"
  for f in "$synd" "$lib"; do
    [ -e "$f" ] || { echo "sqlite-test-suite: $f is missing (run without --no-build)" >&2; exit 1; }
  done
  # Private copies: other work in this tree may rebuild them while tests run.
  mkdir -p "$build/bin"
  cp "$synd" "$build/bin/synd.tmp" && mv "$build/bin/synd.tmp" "$build/bin/synd"
  cp "$lib" "$build/bin/libsyndvfs.so.tmp" && mv "$build/bin/libsyndvfs.so.tmp" "$build/bin/libsyndvfs.so"
  synd="$root/$build/bin/synd"
  lib="$root/$build/bin/libsyndvfs.so"
fi

args=(--testfixture "$root/$build/testfixture" --testdir "$root/$build/src/test"
      --list "$here/$list.txt" --excluded "$here/excluded.txt"
      --jobs "$jobs" --timeout "$timeout")
if [ "$stock" -eq 1 ]; then args+=(--stock); else args+=(--synd "$synd" --library "$lib"); fi
if [ "$keep" -eq 1 ]; then args+=(--keep); fi
exec /usr/bin/python3 "$here/run.py" "${args[@]}" "${files[@]}"
