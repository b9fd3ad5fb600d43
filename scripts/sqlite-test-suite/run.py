#!/usr/bin/env python3
"""Runs SQLite TCL test files with testfixture, each in its own process, its own
temp working directory and (unless --stock) its own `synd sequencer`; prints each
file's result and a summary. Called by scripts/sqlite-test-suite.sh.

Every file gets a fresh sequencer (temp data directory, --port 0: a free
loopback port, ~0.15 s to start), so no file sees another's databases and
parallel files never share a database name (the tests all use "test.db").
Sequencers and testfixtures run in their own process groups and are stopped
at the end of their file, on any failure and on Ctrl-C / SIGTERM.

A file passes only if testfixture prints "0 errors out of N tests" and exits 0.
Logs: .build-sqlite-tests/logs/<synddb|stock>/<file>.log (git-ignored).
"""
import argparse
import concurrent.futures
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

RESULT = re.compile(r"^(\d+) errors out of (\d+) tests", re.M)
FAILURE_LINE = re.compile(r"^! (\S+) (expected: .*)(?:\n! \1 (got: .*))?$", re.M)
FAILURES_LIST = re.compile(r"^!?Failures on these tests: (.*)$", re.M)

live = set()  # process groups of ours still running
live_lock = threading.Lock()
stopping = threading.Event()


def spawn(argv, **kwargs):
    p = subprocess.Popen(argv, start_new_session=True, **kwargs)
    with live_lock:
        live.add(p)
    return p


def stop(p, grace=5.0):
    """Ends process p and its group (only what we started)."""
    try:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        else:
            try:
                os.killpg(p.pid, signal.SIGKILL)  # leftovers in its group
            except ProcessLookupError:
                pass
    except ProcessLookupError:
        pass
    with live_lock:
        live.discard(p)


def read_list(path):
    names = []
    for line in open(path, encoding="utf-8"):
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line.split()[0])
    return names


def read_excluded(path):
    excluded = {}
    for line in open(path, encoding="utf-8"):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, reason = line.strip().partition(" ")
        excluded[name] = reason.strip()
    return excluded


def start_sequencer(synd, data):
    p = spawn([synd, "sequencer", "--data", data, "--port", "0"],
              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 30
    seen = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([p.stdout], [], [], 0.5)
        if ready:
            line = p.stdout.readline()
            if not line:
                break
            seen.append(line)
            m = re.search(r"listening on (https?://\S+)", line)
            if m:
                # Keep draining its output so it never blocks on a full pipe.
                threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
                return p, m.group(1)
        if p.poll() is not None:
            break
    stop(p)
    raise RuntimeError("sequencer did not start: " + "".join(seen[-5:]))


def run_file(name, args, logdir):
    started = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="synd-sqltest-")
    work = os.path.join(tmp, "work")
    os.mkdir(work)
    env = dict(os.environ)
    env.pop("SYNDDB_VFS_LIBRARY", None)
    env.pop("SYNDDB_SEQUENCER", None)
    sequencer = None
    log_path = os.path.join(logdir, name + ".log")
    result = {"name": name, "status": "FAIL", "errors": None, "tests": None, "failures": [], "note": ""}
    try:
        if stopping.is_set():
            result["note"] = "interrupted"
            return result
        if not args.stock:
            sequencer, url = start_sequencer(args.synd, os.path.join(tmp, "sequencer"))
            env["SYNDDB_SEQUENCER"] = url
            env["SYNDDB_VFS_LIBRARY"] = args.library
        with open(log_path, "w", encoding="utf-8", errors="replace") as log:
            p = spawn([args.testfixture, os.path.join(args.testdir, name)], cwd=work, env=env,
                      stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            try:
                rc = p.wait(args.timeout)
            except subprocess.TimeoutExpired:
                rc = None
            finally:
                stop(p, grace=2.0)
        text = open(log_path, encoding="utf-8", errors="replace").read()
        m = None
        for m in RESULT.finditer(text):
            pass
        if m:
            result["errors"], result["tests"] = int(m.group(1)), int(m.group(2))
        listed = FAILURES_LIST.search(text)
        result["failures"] = [f"{n} {expected[:300]} {got[:300]}".rstrip()
                              for n, expected, got in FAILURE_LINE.findall(text)]
        if listed:
            named = listed.group(1).split()
            seen = {f.split()[0] for f in result["failures"]}
            result["failures"] += [n for n in named if n not in seen]
        if rc is None:
            result["status"] = "TIMEOUT"
            result["note"] = f"no result within {args.timeout} s"
        elif rc == 0 and result["errors"] == 0:
            result["status"] = "PASS"
        elif result["errors"] is None:
            aborted = re.search(r"^\S*testfixture: (.*)$", text, re.M)
            if aborted:
                result["note"] = f"exit {rc}, script aborted: {aborted.group(1)[:300]}"
            else:
                tail = [l for l in text.strip().splitlines() if l.strip()][-3:]
                result["note"] = f"exit {rc}, no summary; last output: " + " | ".join(tail)[:400]
        else:
            result["note"] = f"exit {rc}"
    except Exception as e:  # a harness problem is a failure of this file, never a pass
        result["note"] = f"harness: {e}"
    finally:
        if sequencer is not None:
            stop(sequencer)
        if args.keep:
            result["note"] += f" [kept {tmp}]"
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        result["seconds"] = time.monotonic() - started
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--testfixture", required=True)
    ap.add_argument("--testdir", required=True)
    ap.add_argument("--list", required=True)
    ap.add_argument("--excluded", required=True)
    ap.add_argument("--synd")
    ap.add_argument("--library")
    ap.add_argument("--stock", action="store_true")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("files", nargs="*")
    args = ap.parse_args()
    for key in ("testfixture", "testdir", "synd", "library"):
        if getattr(args, key):
            setattr(args, key, os.path.abspath(getattr(args, key)))

    excluded = read_excluded(args.excluded)
    if args.files:
        candidates = args.files
        skipped = {}
    else:
        candidates = read_list(args.list)
        skipped = {n: excluded[n] for n in candidates if n in excluded}
        # Excluded files count once, whether or not the list names them.
        skipped.update(excluded)
        candidates = [n for n in candidates if n not in excluded]
    for n in candidates:
        if not os.path.exists(os.path.join(args.testdir, n)):
            sys.exit(f"sqlite-test-suite: {n} is not in {args.testdir}")

    mode = "stock" if args.stock else "synddb"
    logdir = os.path.join(os.path.dirname(os.path.abspath(args.testfixture)), "logs", mode)
    os.makedirs(logdir, exist_ok=True)

    def on_signal(signum, frame):
        stopping.set()
        with live_lock:
            procs = list(live)
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        print(f"\nsqlite-test-suite: interrupted (signal {signum}); stopped {len(procs)} processes", flush=True)
        os._exit(130)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    print(f"sqlite-test-suite: {len(candidates)} files on {mode} VFS, {args.jobs} at a time, "
          f"timeout {args.timeout:.0f} s, logs in {logdir}", flush=True)
    started = time.monotonic()
    results = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(run_file, n, args, logdir) for n in candidates]
        for f in concurrent.futures.as_completed(futures):
            r = f.result()
            results.append(r)
            counts = f"{r['tests']} tests, {r['errors']} errors" if r["tests"] is not None else "no summary"
            line = f"{r['status']:7} {r['name']} ({r['seconds']:.1f} s, {counts})"
            if r["note"]:
                line += f" {r['note']}"
            print(line, flush=True)
            if r["status"] != "PASS":
                for failure in r["failures"][:10]:
                    print(f"        ! {failure}", flush=True)
                if len(r["failures"]) > 10:
                    print(f"        ... and {len(r['failures']) - 10} more", flush=True)

    passed = [r for r in results if r["status"] == "PASS"]
    failed = sorted((r for r in results if r["status"] != "PASS"), key=lambda r: r["name"])
    elapsed = time.monotonic() - started
    print()
    print(f"sqlite-test-suite: {len(results) + len(skipped)} files, {len(passed)} passed, "
          f"{len(failed)} failed, {len(skipped)} excluded")
    print(f"sqlite-test-suite: {mode} VFS, {elapsed:.0f} s, {args.jobs} jobs")
    if failed:
        print("failing files and tests:")
        for r in failed:
            names = " ".join(f.split()[0] for f in r["failures"]) or r["note"]
            print(f"  {r['name']} [{r['status']}]: {names[:1000]}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
