#!/usr/bin/python3
"""Followers, read-your-writes and time travel from Python's sqlite3 module.

    swift run synd sequencer --data /tmp/synd --port 8433 &
    ./scripts/build-sqlite-tools.sh
    /usr/bin/python3 examples/python/replicas.py http://127.0.0.1:8433 .build-static/release/libsyndvfs

A writer and a reader in separate processes (here, one script plays both):
the writer passes its version along (PRAGMA synddb_version after COMMIT);
the follower waits for it (PRAGMA synddb_min_version) and then reads without
asking the sequencer. Any kept version opens read-only with version=N.
"""
import os
import sqlite3
import sys

url = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("SYNDDB_SEQUENCER", "http://127.0.0.1:8433")
extension = sys.argv[2] if len(sys.argv) > 2 else ".build-static/release/libsyndvfs"
name = sys.argv[3] if len(sys.argv) > 3 else "examples/replicas"

loader = sqlite3.connect(":memory:")
loader.enable_load_extension(True)
loader.load_extension(extension)

writer = sqlite3.connect(f"file:{name}?vfs=synddb&sequencer={url}", uri=True, isolation_level=None)
writer.execute("CREATE TABLE IF NOT EXISTS prices(item TEXT PRIMARY KEY, cents INTEGER NOT NULL)")
writer.execute("INSERT OR REPLACE INTO prices VALUES ('tea', 250)")
before = int(writer.execute("PRAGMA synddb_version").fetchone()[0])
writer.execute("INSERT OR REPLACE INTO prices VALUES ('tea', 275)")
after = int(writer.execute("PRAGMA synddb_version").fetchone()[0])

# A follower: checks every batch it receives, reads from its cache.
follower = sqlite3.connect(f"file:{name}?vfs=synddb&sequencer={url}&mode=ro&follow=1", uri=True, isolation_level=None)
follower.execute(f"PRAGMA synddb_min_version = {after}")  # the writer's version: read-your-writes
print("follower sees tea at", follower.execute("SELECT cents FROM prices WHERE item = 'tea'").fetchone()[0])

# The past, read-only: the version before the price change.
past = sqlite3.connect(f"file:{name}?vfs=synddb&sequencer={url}&version={before}", uri=True)
print(f"at version {before} tea was", past.execute("SELECT cents FROM prices WHERE item = 'tea'").fetchone()[0])
try:
    past.execute("UPDATE prices SET cents = 0")
except sqlite3.OperationalError as e:
    print("the past is read-only:", e)
