#!/usr/bin/python3
"""Repro: a writer whose lease connection was cut keeps serving stale reads.

Writer A (python + libsyndvfs, default lease TTL 10 s) reaches the sequencer
through the chaos proxy. The proxy cuts every connection (both sides). The
sequencer sees A's HoldLease connection close and releases A's lease at once;
writer B takes it and commits version N+1. A learns nothing until its next
renewal (a third of the TTL): meanwhile its read transactions are served from
its page cache and return version N, although B's commit was acknowledged
before they began. (A's own commits are fenced: no write is lost.)

    scripts/chaos/repro-writer-stale-read.py [SYND] [LIBSYNDVFS_WITHOUT_.so]

Exit status 1 when a stale read was observed.
"""
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from proxy import Proxy  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
SYND = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, ".build/debug/synd")
EXT = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, ".build-static/release/libsyndvfs")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    seq_port, proxy_port = free_port(), free_port()
    data = tempfile.mkdtemp(prefix="synd-repro-")
    seq = subprocess.Popen([SYND, "sequencer", "--data", data + "/seq", "--port", str(seq_port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stale = 0
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", seq_port)).close()
                break
            except OSError:
                time.sleep(0.05)
        proxy = Proxy(proxy_port, seq_port)
        loader = sqlite3.connect(":memory:")
        loader.enable_load_extension(True)
        loader.load_extension(EXT)
        a = sqlite3.connect(f"file:r?vfs=synddb&sequencer=http://127.0.0.1:{proxy_port}", uri=True,
                            isolation_level=None, cached_statements=0)
        a.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, x INTEGER)")
        a.execute("INSERT INTO t VALUES (1, 1)")
        print("A (through the proxy) wrote x=1 at version", a.execute("PRAGMA synddb_version").fetchone()[0])
        print("proxy: cut", proxy.cut(), "connections")
        cut = time.monotonic()
        b = None
        while b is None:
            try:
                b = sqlite3.connect(f"file:r?vfs=synddb&sequencer=http://127.0.0.1:{seq_port}", uri=True,
                                    isolation_level=None, cached_statements=0)
            except sqlite3.Error:
                time.sleep(0.02)
        b.execute("UPDATE t SET x = 2 WHERE id = 1")
        acked = int(b.execute("PRAGMA synddb_version").fetchone()[0])
        print(f"B (direct) took the lease {time.monotonic() - cut:.2f} s after the cut; its COMMIT of x=2 returned: version {acked}")
        b.close()
        while time.monotonic() - cut < 15:
            a.execute("BEGIN")
            x = a.execute("SELECT x FROM t").fetchone()[0]
            v = int(a.execute("PRAGMA synddb_version").fetchone()[0])
            a.execute("COMMIT")
            if v < acked:
                stale += 1
                if stale == 1:
                    print(f"STALE: A's read transaction {time.monotonic() - cut:.2f} s after the cut saw x={x} at version {v} < {acked}")
            else:
                print(f"A reads x={x} at version {v} from {time.monotonic() - cut:.2f} s after the cut; {stale} stale read transactions before")
                break
            time.sleep(0.1)
        proxy.close()
    finally:
        seq.kill()
        seq.wait()
        subprocess.run(["rm", "-rf", data])
    sys.exit(1 if stale else 0)


if __name__ == "__main__":
    main()
