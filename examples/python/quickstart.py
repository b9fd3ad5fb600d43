#!/usr/bin/python3
"""SyndDB from Python's built-in sqlite3 module.

Use Debian's /usr/bin/python3 (it allows extensions; pyenv builds often do not):

    swift run synd sequencer --data /tmp/synd --port 8433 &
    ./scripts/build-sqlite-tools.sh
    /usr/bin/python3 examples/python/quickstart.py http://127.0.0.1:8433 .build-static/release/libsyndvfs 100
"""
import os
import sqlite3
import sys

url = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("SYNDDB_SEQUENCER", "http://127.0.0.1:8433")
extension = sys.argv[2] if len(sys.argv) > 2 else ".build-static/release/libsyndvfs"
transactions = int(sys.argv[3]) if len(sys.argv) > 3 else 10

# Loading the extension once registers the "synddb" VFS for the whole process.
loader = sqlite3.connect(":memory:")
loader.enable_load_extension(True)
loader.load_extension(extension)

# isolation_level=None: we write BEGIN/COMMIT ourselves; each COMMIT is one
# atomic batch, durable in the sequencer when it returns.
db = sqlite3.connect(f"file:examples/python?vfs=synddb&sequencer={url}", uri=True, isolation_level=None)
db.execute("CREATE TABLE IF NOT EXISTS events(id INTEGER PRIMARY KEY, kind TEXT NOT NULL, amount INTEGER NOT NULL)")
for i in range(transactions):
    db.execute("BEGIN")
    db.execute("INSERT INTO events(kind, amount) VALUES (?, ?)", ("deposit", i))
    db.execute("UPDATE events SET amount = amount + 1 WHERE id = 1")
    db.execute("COMMIT")

count, total = db.execute("SELECT count(*), sum(amount) FROM events").fetchone()
print(f"events: {count}, total: {total}")
print("integrity:", db.execute("PRAGMA integrity_check").fetchone()[0])
db.close()
