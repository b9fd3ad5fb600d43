#!/usr/bin/python3
"""Workload client of the chaos checker, through libsyndvfs.so in Python's sqlite3.

Mirrors `synd chaos-client` (Sources/synd/ChaosClientCommand.swift): roles
bank, append and read, the same schema and the same JSON-lines history
(invoke, then ok / fail (definite: nothing applied) / info (outcome unknown)).

    client.py --role bank --sequencer URL --dbs a,b --history FILE --process NAME
              --extension PATH --stop-file PATH [--seed N] [--lease-ttl-ms N] ...
"""
import argparse
import json
import os
import random
import sqlite3
import sys
import time

SQLITE_IOERR_FSYNC = 1034


def fnv1a(values):
    """FNV-1a 64 over each value and a newline, as 16 hex digits (as the Swift client)."""
    h = 0xCBF29CE484222325
    for value in values:
        for byte in value.encode() + b"\n":
            h ^= byte
            h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


class History:
    def __init__(self, path, process):
        self.f = open(path, "a", buffering=1)
        self.process = process

    def write(self, **fields):
        fields["t"] = time.monotonic_ns()
        fields["p"] = self.process
        self.f.write(json.dumps(fields, sort_keys=True) + "\n")
        self.f.flush()


def version_of(con):
    return int(con.execute("PRAGMA synddb_version").fetchone()[0])


def error_code(e):
    return getattr(e, "sqlite_errorcode", -1)


class Client:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.log = History(args.history, args.process)
        self.counter = 0

    def rollback(self, con):
        if con.in_transaction:
            try:
                con.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    def log_failure(self, e, op, db, phase, con):
        code = error_code(e)
        unknown = phase == "commit" and (code == SQLITE_IOERR_FSYNC or "unknown outcome" in str(e))
        self.log.write(type="info" if unknown else "fail", op=op, db=db, phase=phase, code=code, error=str(e))
        self.rollback(con)

    def think(self):
        if self.args.think_ms > 0:
            time.sleep(self.rng.randint(0, self.args.think_ms) / 1000)

    def transfer(self, con, db, op):
        src = self.rng.randint(1, 8)
        dst = self.rng.randint(1, 7)
        if dst >= src:
            dst += 1
        amount = self.rng.randint(1, 100)
        self.log.write(type="invoke", f="transfer", op=op, db=db, src=src, dst=dst, amount=amount)
        phase = "txn"
        try:
            con.execute("BEGIN IMMEDIATE")
            balances = [r[0] for r in con.execute("SELECT balance FROM accounts ORDER BY id")]
            count = con.execute("SELECT count(*) FROM transfers").fetchone()[0]
            base = version_of(con)
            con.execute("UPDATE accounts SET balance = balance - ? WHERE id = ?", (amount, src))
            con.execute("UPDATE accounts SET balance = balance + ? WHERE id = ?", (amount, dst))
            con.execute("INSERT INTO transfers(tid, src, dst, amount) VALUES (?, ?, ?, ?)", (op, src, dst, amount))
            self.think()
            phase = "commit"
            con.execute("COMMIT")
            v = version_of(con)
            self.log.write(type="ok", op=op, db=db, base=base, v=v, balances=balances, count=count)
            return True
        except sqlite3.Error as e:
            self.log_failure(e, op, db, phase, con)
            return False

    def append(self, con, db, op):
        key = self.rng.randrange(self.args.keys)
        self.log.write(type="invoke", f="append", op=op, db=db, key=key)
        phase = "txn"
        try:
            con.execute("BEGIN IMMEDIATE")
            lst = [r[0] for r in con.execute("SELECT val FROM items WHERE k = ? ORDER BY id", (key,))]
            count = con.execute("SELECT count(*) FROM items").fetchone()[0]
            base = version_of(con)
            con.execute("INSERT INTO items(k, val) VALUES (?, ?)", (key, op))
            self.think()
            phase = "commit"
            con.execute("COMMIT")
            v = version_of(con)
            self.log.write(type="ok", op=op, db=db, base=base, v=v, key=key, count=count,
                           klen=len(lst), khash=fnv1a(lst))
            return True
        except sqlite3.Error as e:
            self.log_failure(e, op, db, phase, con)
            return False

    def read(self, con, db, op):
        key = self.rng.randrange(self.args.keys)
        self.log.write(type="invoke", f="read", op=op, db=db)
        try:
            con.execute("BEGIN")
            fields = {}
            if "bank" in db:
                fields["balances"] = [r[0] for r in con.execute("SELECT balance FROM accounts ORDER BY id")]
                fields["count"] = con.execute("SELECT count(*) FROM transfers").fetchone()[0]
                fields["tail"] = [r[0] for r in con.execute(
                    "SELECT tid FROM (SELECT id, tid FROM transfers ORDER BY id DESC LIMIT 8) ORDER BY id")]
            else:
                fields["count"] = con.execute("SELECT count(*) FROM items").fetchone()[0]
                fields["tail"] = [r[0] for r in con.execute(
                    "SELECT val FROM (SELECT id, val FROM items ORDER BY id DESC LIMIT 8) ORDER BY id")]
                lst = [r[0] for r in con.execute("SELECT val FROM items WHERE k = ? ORDER BY id", (key,))]
                fields.update(key=key, klen=len(lst), khash=fnv1a(lst))
            fields["v"] = version_of(con)
            con.execute("COMMIT")
            self.log.write(type="ok", op=op, db=db, **fields)
            return True
        except sqlite3.Error as e:
            self.log.write(type="fail", op=op, db=db, phase="read", code=error_code(e), error=str(e))
            self.rollback(con)
            return False

    def run(self):
        a = self.args
        dbs = a.dbs.split(",")
        started = time.monotonic()
        ops = 0

        def stopping():
            return os.path.exists(a.stop_file) or (a.max_ops > 0 and ops >= a.max_ops)

        while not stopping():
            db = self.rng.choice(dbs)
            uri = f"file:{db}?vfs=synddb&sequencer={a.sequencer}&timeout_ms={a.timeout_ms}"
            if a.role == "read":
                uri += "&mode=ro"
            else:
                uri += f"&lease_ttl_ms={a.lease_ttl_ms}"
            try:
                # cached_statements=0: PRAGMA synddb_version is answered when SQLite
                # prepares the statement; never let a cached copy repeat an old answer.
                con = sqlite3.connect(uri, uri=True, isolation_level=None, cached_statements=0)
            except sqlite3.Error:
                if a.open_deadline_s > 0 and time.monotonic() - started > a.open_deadline_s:
                    return
                time.sleep(self.rng.randint(0, 150) / 1000)
                continue
            try:
                if a.exclusive and a.role != "read":
                    con.execute("PRAGMA locking_mode=EXCLUSIVE")
                if a.role == "read" and self.rng.random() < 0.5:
                    # A tiny page cache: SQLite re-reads pages in the middle of a read transaction.
                    con.execute("PRAGMA cache_size=2")
            except sqlite3.Error:
                con.close()
                continue
            session = 50 if a.role == "read" else self.rng.randint(3, 30)
            failures = 0
            for _ in range(session):
                if stopping():
                    break
                self.counter += 1
                op = f"{a.process}-{self.counter}"
                fn = {"bank": self.transfer, "append": self.append, "read": self.read}[a.role]
                if a.writer_reads and a.role != "read" and self.rng.random() < 0.25:
                    fn = self.read  # a read-only transaction on the writer's connection
                ok = fn(con, db, op)
                ops += 1
                failures = 0 if ok else failures + 1
                if failures >= 3:
                    break
                if a.pause_ms > 0:
                    time.sleep(self.rng.randint(0, a.pause_ms) / 1000)
            con.close()  # releases the lease: the other writers get their turn


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--role", required=True, choices=["bank", "append", "read"])
    p.add_argument("--sequencer", required=True)
    p.add_argument("--dbs", required=True)
    p.add_argument("--history", required=True)
    p.add_argument("--process", required=True)
    p.add_argument("--extension", required=True)
    p.add_argument("--stop-file", required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--lease-ttl-ms", type=int, default=10000)
    p.add_argument("--timeout-ms", type=int, default=5000)
    p.add_argument("--think-ms", type=int, default=20)
    p.add_argument("--pause-ms", type=int, default=60)
    p.add_argument("--max-ops", type=int, default=0)
    p.add_argument("--open-deadline-s", type=float, default=0)
    p.add_argument("--keys", type=int, default=6)
    p.add_argument("--exclusive", action="store_true", help="writers use PRAGMA locking_mode=EXCLUSIVE")
    p.add_argument("--writer-reads", action="store_true", help="writers also run read-only transactions")
    args = p.parse_args()
    loader = sqlite3.connect(":memory:")
    loader.enable_load_extension(True)
    loader.load_extension(args.extension)
    Client(args).run()


if __name__ == "__main__":
    main()
