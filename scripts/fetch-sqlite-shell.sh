#!/usr/bin/env bash
# Fetches SQLite's shell source from Debian's sqlite3 source package (matching
# the installed libsqlite3) and generates shell.c into .build-shell/.
# SQLite's source is never committed to this repository.
set -euo pipefail
cd "$(dirname "$0")/.."
out=.build-shell
mkdir -p "$out"
if [ -f "$out/shell.c" ]; then exit 0; fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
if ! command -v tclsh >/dev/null; then $sudo apt-get install -y -qq tcl; fi
if ! apt-cache showsrc sqlite3 >/dev/null 2>&1 || [ -z "$(apt-cache showsrc sqlite3 2>/dev/null)" ]; then
  echo "adding a deb-src entry for Debian bookworm (to fetch SQLite's shell source)"
  $sudo tee /etc/apt/sources.list.d/synddb-deb-src.sources >/dev/null <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  $sudo apt-get update -qq
fi
version=$(dpkg-query -W -f='${source:Version}' libsqlite3-dev)
work=$(mktemp -d)
(cd "$work" && apt-get source --download-only "sqlite3=$version" >/dev/null 2>&1 || apt-get source --download-only sqlite3 >/dev/null)
orig=$(ls "$work"/sqlite3_*.orig.tar.* | head -1)
mkdir -p "$work/src"
tar -xf "$orig" -C "$work/src" --strip-components=1
(cd "$work/src" && tclsh tool/mkshellc.tcl) > "$out/shell.c.tmp"
mv "$out/shell.c.tmp" "$out/shell.c"
rm -rf "$work"
echo "generated $out/shell.c from Debian's sqlite3 $version"
