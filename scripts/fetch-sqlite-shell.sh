#!/usr/bin/env bash
# Fetches SQLite's shell source from Debian's sqlite3 source package (matching
# the installed libsqlite3), generates shell.c and patches it for synd-sqlite3
# into .build-shell/. SQLite's source is never committed to this repository.
#
# The patch (see Sources/CSQLiteShell/shell_wrapper.c for the other half):
#   - open_db(), which opens the shell's main database (command line, .open),
#     calls synd_shell_open_main() instead of sqlite3_open_v2(): the main
#     database is the only name the shell opens remotely;
#   - .restore opens its source with synd_shell_open_restore_source() (read-only,
#     so a missing file is an error instead of an empty database restored over main).
# A shell.c without the current patch marker is generated again; a pattern not
# found the expected number of times fails the build.
set -euo pipefail
cd "$(dirname "$0")/.."
out=.build-shell
marker='#define SYND_SHELL_PATCH 1'
mkdir -p "$out"
if [ -f "$out/shell.c" ] && grep -qxF "$marker" "$out/shell.c"; then exit 0; fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
if ! command -v tclsh >/dev/null; then $sudo apt-get install -y -qq tcl; fi
if ! command -v python3 >/dev/null; then $sudo apt-get install -y -qq python3; fi
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
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get source --download-only "sqlite3=$version" >/dev/null 2>&1 || apt-get source --download-only sqlite3 >/dev/null)
orig=$(ls "$work"/sqlite3_*.orig.tar.* | head -1)
mkdir -p "$work/src"
tar -xf "$orig" -C "$work/src" --strip-components=1
(cd "$work/src" && tclsh tool/mkshellc.tcl) > "$work/shell.c"

python3 - "$work/shell.c" "$out/shell.c.tmp" "$marker" <<'PATCH'
import sys

source, target, marker = sys.argv[1], sys.argv[2], sys.argv[3]
text = open(source, encoding="utf-8", errors="surrogateescape").read()

def fail(message):
    sys.exit(f"fetch-sqlite-shell.sh: cannot patch shell.c: {message}")

# 1. Inside open_db() only: its sqlite3_open_v2 calls (append VFS, read-only,
#    normal) become synd_shell_open_main, which routes the main database to synddb.
head = "static void open_db(ShellState *p, int openFlags){\n"
if text.count(head) != 1:
    fail("open_db() not found exactly once")
start = text.index(head)
end = text.find("\n}\n", start)
if end < 0:
    fail("end of open_db() not found")
body = text[start:end]
calls = body.count("sqlite3_open_v2(")
if calls != 3:
    fail(f"expected 3 sqlite3_open_v2 calls in open_db(), found {calls}")
if "synd_shell_open_main(" in text:
    fail("already patched")
text = text[:start] + body.replace("sqlite3_open_v2(", "synd_shell_open_main(") + text[end:]

# 2. .restore's source is opened read-only: a missing file is an error.
restore = "rc = sqlite3_open(zSrcFile, &pSrc);"
if text.count(restore) != 1:
    fail(f"expected .restore's '{restore}' once, found {text.count(restore)}")
at = text.index(restore)
if 'cli_strncmp(azArg[0], "restore", n)==0' not in text[max(0, at - 1500):at]:
    fail(".restore's source open is not inside .restore")
text = text.replace(restore, "rc = synd_shell_open_restore_source(zSrcFile, &pSrc);")

header = (
    "/* Patched for synd-sqlite3 by scripts/fetch-sqlite-shell.sh: open_db() calls\n"
    "** synd_shell_open_main, .restore calls synd_shell_open_restore_source\n"
    "** (Sources/CSQLiteShell/shell_wrapper.c). */\n"
    + marker + "\n"
)
with open(target, "w", encoding="utf-8", errors="surrogateescape") as f:
    f.write(header + text)
PATCH
mv "$out/shell.c.tmp" "$out/shell.c"
echo "generated and patched $out/shell.c from Debian's sqlite3 $version"
