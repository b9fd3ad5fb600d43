#!/usr/bin/python3
"""Chaos run: a sequencer, a proxy, workload clients (python3 + the extension,
and `synd chaos-client`), randomly scheduled nemeses, then the checker.

Started by scripts/chaos.sh; see there and /tmp/testing-chaos.md. Stdlib only.
"""
import argparse
import glob
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check  # noqa: E402
from proxy import Proxy  # noqa: E402

BANK_DBS = ["chaos-bank-0", "chaos-bank-1"]
LIST_DBS = ["chaos-list-0", "chaos-list-1"]
ACCOUNTS = 8
INITIAL = 1000
KEYS = 6


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def now_ns():
    return time.monotonic_ns()


class Run:
    def __init__(self, args):
        self.args = args
        self.dir = args.out
        self.rng = random.Random(args.seed)
        os.makedirs(self.dir + "/history", exist_ok=True)
        os.makedirs(self.dir + "/logs", exist_ok=True)
        self.stop_file = self.dir + "/stop"
        self.seq_port = free_port()
        self.proxy_port = free_port()
        self.seq = None
        self.seq_starts = 0
        self.clients = {}  # name -> dict(spec, proc, incarnation, down)
        self.oneshots = []
        self.nemesis_log = open(self.dir + "/history/nemesis.jsonl", "a", buffering=1)
        self.counts = {}
        self.unexpected = []  # client or sequencer exits nobody caused

    # ---- events ----------------------------------------------------------
    def nemesis(self, kind, **fields):
        fields.update(t=now_ns(), p="nemesis", type="nemesis", kind=kind)
        self.nemesis_log.write(json.dumps(fields, sort_keys=True) + "\n")
        if fields.get("phase", "start") == "start" and fields.get("effective", True):
            self.counts[kind] = self.counts.get(kind, 0) + 1
        if self.args.verbose:
            print("nemesis", json.dumps(fields, sort_keys=True), flush=True)

    # ---- sequencer --------------------------------------------------------
    def seq_url(self):
        return f"http://127.0.0.1:{self.seq_port}"

    def start_sequencer(self):
        for attempt in range(100):
            log = open(self.dir + "/logs/sequencer.log", "a")
            log.write(f"--- start #{self.seq_starts + 1} (attempt {attempt + 1}) at {now_ns()}\n")
            log.flush()
            # --retain: the end-of-run `synd validate` replays every batch from version 1, and a
            # 20-minute run commits more than the default window (10 000 versions) per database.
            proc = subprocess.Popen([self.args.synd, "sequencer", "--data", self.dir + "/seq", "--port", str(self.seq_port),
                                     "--retain", "100000000"],
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            log.close()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", self.seq_port), timeout=0.5).close()
                    self.seq = proc
                    self.seq_starts += 1
                    return
                except OSError:
                    time.sleep(0.05)
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            time.sleep(0.2)
        raise SystemExit("the sequencer does not start: see " + self.dir + "/logs/sequencer.log")

    def check_sequencer(self):
        if self.seq is not None and self.seq.poll() is not None:
            self.unexpected.append({"kind": "sequencer-exit", "detail": f"sequencer exited with {self.seq.returncode} unprovoked"})
            self.nemesis("sequencer-exit", phase="note", effective=False, code=self.seq.returncode)
            self.start_sequencer()

    # ---- clients -----------------------------------------------------------
    def client_specs(self):
        url = f"http://127.0.0.1:{self.proxy_port}"
        ext = self.args.extension
        py = ["/usr/bin/python3", os.path.dirname(os.path.abspath(__file__)) + "/client.py", "--extension", ext]
        sw = [self.args.synd, "chaos-client"]
        bank, lists, alldbs = ",".join(BANK_DBS), ",".join(LIST_DBS), ",".join(BANK_DBS + LIST_DBS)
        # (name, command prefix, role, dbs, lease ttl, timeout, pausable: short TTL)
        return [
            ("py-bank", py, "bank", bank, 1500, 2000, True),
            ("sw-bank", sw, "bank", bank, 10000, 5000, False),
            ("py-append", py, "append", lists, 10000, 5000, False),
            ("sw-append", sw, "append", lists, 1500, 2000, True),
            ("py-read", py, "read", alldbs, 10000, 3000, False),
            ("sw-read", sw, "read", alldbs, 10000, 3000, False),
        ][: self.args.clients]

    def command(self, prefix, role, dbs, ttl, timeout, process, seed, extra=()):
        return prefix + ["--role", role, "--sequencer", f"http://127.0.0.1:{self.proxy_port}", "--dbs", dbs,
                         "--history", f"{self.dir}/history/{process}.jsonl", "--process", process,
                         "--stop-file", self.stop_file, "--seed", str(seed), "--lease-ttl-ms", str(ttl),
                         "--timeout-ms", str(timeout), "--keys", str(KEYS)] + list(extra)

    def spawn(self, name):
        c = self.clients[name]
        c["incarnation"] += 1
        prefix, role, dbs, ttl, timeout = c["spec"][1:6]
        process = f"{name}.{c['incarnation']}"
        err = open(f"{self.dir}/logs/{process}.stderr", "w")
        # Short-TTL writers (the ones writer-pause stops) think longer inside
        # their transactions, so a pause often lands before COMMIT.
        extra = ["--think-ms", "150"] if c["spec"][6] else []
        if self.args.writer_reads and prefix[0].endswith("python3"):
            extra.append("--writer-reads")
        # Exclusive locking mode, except with --writer-reads: there a connection
        # reading its last snapshot is documented behaviour, not a stale read.
        if name in ("py-append", "sw-bank") and not self.args.writer_reads:
            extra.append("--exclusive")  # exclusive locking mode: the lease is checked at COMMIT only
        c["proc"] = subprocess.Popen(self.command(prefix, role, dbs, ttl, timeout, process, self.rng.randrange(1 << 62), extra),
                                     stdout=err, stderr=subprocess.STDOUT, start_new_session=True)
        err.close()
        c["process"] = process
        c["down"] = False

    def start_clients(self):
        for spec in self.client_specs():
            self.clients[spec[0]] = {"spec": spec, "incarnation": 0, "proc": None, "down": False}
            self.spawn(spec[0])

    def check_clients(self):
        for name, c in self.clients.items():
            if c["down"] or c["proc"] is None or c["proc"].poll() is None:
                continue
            code = c["proc"].returncode
            tail = ""
            try:
                with open(f"{self.dir}/logs/{c['process']}.stderr", errors="replace") as f:
                    tail = f.read()[-1500:]
            except OSError:
                pass
            self.unexpected.append({"kind": "client-exit", "detail": f"{c['process']} exited with {code} unprovoked: {tail}"})
            self.nemesis("client-exit", phase="note", effective=False, process=c["process"], code=code)
            self.spawn(name)

    def wait(self, seconds):
        """Sleeps, restarting whatever died that no nemesis killed."""
        end = time.monotonic() + seconds
        while True:
            self.check_sequencer()
            self.check_clients()
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(0.1, left))

    def in_flight(self, process):
        """The process's operation in flight (its last event is an invoke), or None."""
        try:
            with open(f"{self.dir}/history/{process}.jsonl", "rb") as f:
                f.seek(0, 2)
                f.seek(max(0, f.tell() - 4096))
                lines = f.read().decode(errors="replace").splitlines()
            e = json.loads(lines[-1])
        except (OSError, ValueError, IndexError):
            return None
        return e["op"] if e.get("type") == "invoke" else None

    def current_db(self, process):
        """The database of the process's last invoked operation."""
        try:
            with open(f"{self.dir}/history/{process}.jsonl", "rb") as f:
                f.seek(0, 2)
                f.seek(max(0, f.tell() - 8192))
                lines = f.read().decode(errors="replace").splitlines()
        except OSError:
            return None
        for line in reversed(lines):
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if e.get("type") == "invoke":
                return e.get("db")
        return None

    # ---- setup -------------------------------------------------------------
    def setup(self):
        loader = sqlite3.connect(":memory:")
        loader.enable_load_extension(True)
        loader.load_extension(self.args.extension)
        for name in BANK_DBS + LIST_DBS:
            con = sqlite3.connect(f"file:{name}?vfs=synddb&sequencer={self.seq_url()}", uri=True, isolation_level=None)
            if name in BANK_DBS:
                con.execute("PRAGMA page_size=4096")
                # ~1.5 KiB per account: two accounts a page, so a transfer touches several pages.
                con.execute("CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL, pad BLOB)")
                con.execute("CREATE TABLE transfers(id INTEGER PRIMARY KEY, tid TEXT NOT NULL, src INTEGER NOT NULL, "
                            "dst INTEGER NOT NULL, amount INTEGER NOT NULL)")
                con.execute("BEGIN")
                for i in range(1, ACCOUNTS + 1):
                    con.execute("INSERT INTO accounts VALUES (?, ?, zeroblob(1500))", (i, INITIAL))
                con.execute("COMMIT")
            else:
                con.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, k INTEGER NOT NULL, val TEXT NOT NULL)")
                con.execute("CREATE INDEX items_k ON items(k, id)")
            con.close()
        with open(self.dir + "/bank-rules.sql", "w") as f:
            # Every version: before setup inserted the accounts, or with the total intact.
            f.write(f"SELECT (SELECT count(*) FROM accounts) IN (0, {ACCOUNTS})\n")
            f.write(f"SELECT (SELECT count(*) FROM accounts) = 0 OR (SELECT sum(balance) FROM accounts) = {ACCOUNTS * INITIAL}\n")

    # ---- nemeses -------------------------------------------------------------
    def nem_seq_kill(self):
        down = self.rng.uniform(0.2, 2.0)
        pid = self.seq.pid
        self.seq.kill()
        self.seq.wait()
        self.nemesis("seq-kill", pid=pid, down_s=round(down, 2), code=self.seq.returncode)
        self.seq = None
        self.wait(down)
        self.start_sequencer()
        self.nemesis("seq-kill", phase="end", pid=self.seq.pid)

    def nem_seq_pause(self):
        d = self.rng.choice([self.rng.uniform(0.3, 1.5), self.rng.uniform(1.5, 7.0)])
        os.kill(self.seq.pid, signal.SIGSTOP)
        self.nemesis("seq-pause", seconds=round(d, 2), pid=self.seq.pid)
        time.sleep(d)  # no restarts meanwhile: the sequencer is alive, only stopped
        os.kill(self.seq.pid, signal.SIGCONT)
        self.nemesis("seq-pause", phase="end")

    def pick_writer(self, pausable_only=False):
        names = [n for n, c in self.clients.items() if c["spec"][2] != "read" and (c["spec"][6] or not pausable_only)
                 and c["proc"] is not None and c["proc"].poll() is None]
        return self.rng.choice(names) if names else None

    def nem_client_kill(self):
        name = self.pick_writer()
        if self.rng.random() < 0.25:  # readers die too
            name = self.rng.choice(list(self.clients))
        c = self.clients[name]
        if c["proc"].poll() is not None:
            return
        deadline = time.monotonic() + 1.0
        while self.in_flight(c["process"]) is None and time.monotonic() < deadline:
            time.sleep(0.003)
        # Land inside a transaction as often as possible: writers spend most time there.
        c["down"] = True
        c["proc"].kill()
        c["proc"].wait()
        self.nemesis("client-kill", process=c["process"], db=self.current_db(c["process"]),
                     in_flight=self.in_flight(c["process"]))
        self.wait(self.rng.uniform(0.1, 1.0))
        self.spawn(name)

    def nem_writer_pause(self):
        name = self.pick_writer(pausable_only=True)
        if name is None:
            return
        c = self.clients[name]
        _, prefix, role, dbs, ttl, timeout, _ = c["spec"]
        # Stop it inside a transaction when possible (its last event an invoke).
        deadline = time.monotonic() + 1.5
        while self.in_flight(c["process"]) is None and time.monotonic() < deadline:
            time.sleep(0.003)
        os.kill(c["proc"].pid, signal.SIGSTOP)
        c["down"] = True
        db = self.current_db(c["process"])
        op = self.in_flight(c["process"])
        pause = ttl / 1000 + self.rng.uniform(0.8, 3.0)
        takeover = None
        tk = None
        if db:
            # Another writer on the same database, so the paused one's lease is
            # taken over and the database moves on while it sleeps.
            tk, takeover = self.launch_takeover(role, db, pause)
        self.nemesis("writer-pause", process=c["process"], db=db, seconds=round(pause, 2), takeover=tk, in_flight=op)
        time.sleep(pause)
        if takeover is not None:
            try:
                takeover.wait(timeout=8)
            except subprocess.TimeoutExpired:
                takeover.kill()
                takeover.wait()
        os.kill(c["proc"].pid, signal.SIGCONT)
        c["down"] = False
        self.nemesis("writer-pause", phase="end", process=c["process"])

    def launch_takeover(self, role, db, deadline_s):
        """A one-shot writer (python or Swift) that takes the lease of db and commits, directly."""
        tk = f"tk-{len(self.oneshots) + 1}"
        err = open(f"{self.dir}/logs/{tk}.stderr", "w")
        sw = [self.args.synd, "chaos-client"]
        py = ["/usr/bin/python3", os.path.dirname(os.path.abspath(__file__)) + "/client.py", "--extension", self.args.extension]
        cmd = self.command(sw if self.rng.random() < 0.5 else py, role, db, 10000, 3000, tk, self.rng.randrange(1 << 62),
                           ["--max-ops", "3", "--open-deadline-s", str(round(deadline_s, 1)), "--pause-ms", "0"])
        proc = subprocess.Popen(cmd, stdout=err, stderr=subprocess.STDOUT, start_new_session=True)
        err.close()
        self.oneshots.append((tk, proc))
        return tk, proc

    def nem_net_cut(self):
        n = self.proxy.cut()
        tk = None
        if self.args.writer_reads:
            # The sequencer releases a cut writer's lease at once; a writer that
            # takes it right away makes the cut writer's cached reads stale.
            name = self.pick_writer()
            if name is not None:
                db = self.current_db(self.clients[name]["process"])
                if db:
                    tk, _ = self.launch_takeover(self.clients[name]["spec"][2], db, 3.0)
        self.nemesis("net-cut", connections=n, effective=n > 0, takeover=tk)

    def nem_net_stall(self):
        d = self.rng.choice([self.rng.uniform(0.3, 1.5), self.rng.uniform(1.5, 6.0)])
        n = self.proxy.stall(True)
        self.nemesis("net-stall", seconds=round(d, 2), connections=n)
        self.wait(d)
        self.proxy.stall(False)
        self.nemesis("net-stall", phase="end")

    def nem_net_delay(self):
        d = self.rng.uniform(2.0, 8.0)
        lag = self.rng.uniform(0.02, 0.25)
        n = self.proxy.delay(lag)
        self.nemesis("net-delay", seconds=round(d, 2), delay_s=round(lag, 3), connections=n)
        self.wait(d)
        self.proxy.heal()
        self.nemesis("net-delay", phase="end")

    def nem_net_blackhole(self):
        d = self.rng.uniform(0.2, 1.5)
        n = self.proxy.blackhole()
        self.nemesis("net-blackhole", seconds=round(d, 2), connections=n)
        self.wait(d)
        dropped = self.proxy.heal()
        self.nemesis("net-blackhole", phase="end", dropped_bytes=dropped)

    NEMESES = [("seq-kill", 2), ("seq-pause", 2), ("client-kill", 2), ("writer-pause", 2),
               ("net-cut", 1.5), ("net-stall", 1.5), ("net-delay", 1), ("net-blackhole", 1.5)]

    def heal_all(self):
        self.proxy.heal()
        if self.seq is not None:
            try:
                os.kill(self.seq.pid, signal.SIGCONT)
            except OSError:
                pass
        for c in self.clients.values():
            if c["proc"] is not None and c["proc"].poll() is None:
                os.kill(c["proc"].pid, signal.SIGCONT)

    # ---- the run -------------------------------------------------------------
    def main(self):
        a = self.args
        self.start_sequencer()
        self.setup()
        self.proxy = Proxy(self.proxy_port, self.seq_port)
        self.start_clients()
        start = time.monotonic()
        end = start + a.minutes * 60
        kinds = [k for k, _ in self.NEMESES]
        weights = [w for _, w in self.NEMESES]
        print(f"chaos: {a.minutes} min, seed {a.seed}, {len(self.clients)} clients, run directory {self.dir}", flush=True)
        self.wait(min(3.0, a.minutes * 60))
        last_report = time.monotonic()
        while time.monotonic() < end - 2:
            kind = self.rng.choices(kinds, weights)[0]
            getattr(self, "nem_" + kind.replace("-", "_"))()
            self.wait(self.rng.uniform(1.5, 4.0))
            if time.monotonic() - last_report > 60:
                last_report = time.monotonic()
                print(f"chaos: {int(time.monotonic() - start)} s, {sum(self.counts.values())} nemesis events", flush=True)
        self.heal_all()
        self.wait(max(0.0, end - time.monotonic()))
        self.finish()

    def finish(self):
        # Stop clients: the stop file, then kill -9 whatever still runs.
        open(self.stop_file, "w").close()
        deadline = time.monotonic() + 20
        procs = [c["proc"] for c in self.clients.values() if c["proc"] is not None] + [p for _, p in self.oneshots]
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.proxy.close()
        self.check_sequencer()
        final = self.final_state()
        validations = {}
        names = BANK_DBS + LIST_DBS
        for pair in (names[i:i + 2] for i in range(0, len(names), 2)):  # two at a time: two cores
            running = {}
            for name in pair:
                cmd = [self.args.synd, "validate", "--sequencer", self.seq_url(), "--db", name]
                if name in BANK_DBS:
                    cmd += ["--rules", self.dir + "/bank-rules.sql"]
                running[name] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for name, proc in running.items():
                try:
                    output, _ = proc.communicate(timeout=1200)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    output, _ = proc.communicate()
                validations[name] = {"code": proc.returncode, "output": output.strip()[-2000:]}
        self.seq.terminate()
        try:
            self.seq.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.seq.kill()
            self.seq.wait()
        self.seq = None
        with open(self.dir + "/final.json", "w") as f:
            json.dump({"final": final, "validate": validations, "unexpected": self.unexpected,
                       "nemeses": self.counts}, f)
        events = merge_history(self.dir)
        report = check.check(events, final, validations, self.unexpected, ACCOUNTS * INITIAL)
        code = check.print_report(report, self.counts, self.dir)
        sys.exit(code)

    def final_state(self):
        """Every database as the sequencer has it now, read directly (no proxy)."""
        final = {}
        for name in BANK_DBS + LIST_DBS:
            con = sqlite3.connect(f"file:{name}?vfs=synddb&sequencer={self.seq_url()}&mode=ro", uri=True,
                                  isolation_level=None, cached_statements=0)
            con.execute("BEGIN")
            if name in BANK_DBS:
                rows = [list(r) for r in con.execute("SELECT tid, src, dst, amount FROM transfers ORDER BY id")]
                balances = [r[0] for r in con.execute("SELECT balance FROM accounts ORDER BY id")]
                state = {"kind": "bank", "rows": rows, "balances": balances}
            else:
                rows = [list(r) for r in con.execute("SELECT val, k FROM items ORDER BY id")]
                state = {"kind": "list", "rows": rows}
            state["version"] = int(con.execute("PRAGMA synddb_version").fetchone()[0])
            state["integrity"] = con.execute("PRAGMA integrity_check").fetchone()[0]
            con.execute("COMMIT")
            con.close()
            final[name] = state
        return final

    def cleanup(self):
        """On any way out: nothing we started keeps running."""
        open(self.stop_file, "w").close()
        procs = [c["proc"] for c in self.clients.values() if c["proc"] is not None] + [p for _, p in self.oneshots]
        if self.seq is not None:
            procs.append(self.seq)
        for p in procs:
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGCONT)
                    p.kill()
                    p.wait(timeout=5)
                except (OSError, subprocess.TimeoutExpired):
                    pass


def merge_history(directory):
    events = []
    for path in glob.glob(directory + "/history/*.jsonl"):
        with open(path, errors="replace") as f:
            for line in f:
                try:
                    events.append(json.loads(line))
                except ValueError:
                    pass  # a partial last line of a killed client
    events.sort(key=lambda e: e["t"])
    with open(directory + "/history.jsonl", "w") as f:
        for e in events:
            f.write(json.dumps(e, sort_keys=True) + "\n")
    return events


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--minutes", type=float, default=2)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", required=True)
    p.add_argument("--synd", required=True)
    p.add_argument("--extension", required=True)
    p.add_argument("--clients", type=int, default=6)
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--writer-reads", action="store_true",
                   help="python writers also run read-only transactions (exposes the stale-read window after a lease connection cut)")
    a = p.parse_args()
    if a.seed is None:
        a.seed = random.randrange(1 << 31)
    run = Run(a)

    def on_signal(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)
    try:
        run.main()
    except KeyboardInterrupt:
        print("chaos: interrupted; history kept in " + run.dir, flush=True)
        run.cleanup()
        sys.exit(130)
    finally:
        run.cleanup()


if __name__ == "__main__":
    main()
