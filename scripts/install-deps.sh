#!/usr/bin/env bash
# Installs the Debian packages SyndDB builds against, if any is missing.
# (The Swift toolchain itself is expected to be installed already.)
set -euo pipefail
# sqlite3, python3, tcl, xz-utils, openssl: the shells the tests drive, the shell build, test certificates.
# tcl-dev, make, gcc: SQLite's testfixture, for scripts/sqlite-test-suite.sh (TESTING.md).
packages=(libsqlite3-dev libnghttp2-dev libssl-dev pkg-config sqlite3 python3 tcl xz-utils openssl tcl-dev make gcc)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing: ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq "${missing[@]}"
