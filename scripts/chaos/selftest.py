#!/usr/bin/python3
"""Checks the checker: injects each kind of anomaly into a clean run's
history or final state and expects the checker to report it.

    scripts/chaos/selftest.py RUN_DIR     (a run kept with scripts/chaos.sh --keep)
"""
import copy
import json
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check  # noqa: E402


def load(directory):
    with open(directory + "/history.jsonl") as f:
        events = [json.loads(line) for line in f]
    with open(directory + "/final.json") as f:
        saved = json.load(f)
    return events, saved


def kinds(events, saved):
    report = check.check(events, saved["final"], saved["validate"], saved["unexpected"], 8000)
    return {a["kind"] for a in report["anomalies"]}


def main():
    events, saved = load(sys.argv[1])
    ops = {}
    for e in events:
        if e["type"] == "invoke":
            ops[e["op"]] = [e, None]
        elif e["type"] in ("ok", "fail", "info") and e["op"] in ops:
            ops[e["op"]][1] = e
    failures = 0

    def expect(name, wanted, ev, sv):
        nonlocal failures
        found = kinds(ev, sv)
        ok = wanted <= found
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name}: expected {sorted(wanted)}, checker reported {sorted(found)}")

    expect("clean run", set(), events, saved)
    bank = next(n for n, s in saved["final"].items() if s["kind"] == "bank")
    lst = next(n for n, s in saved["final"].items() if s["kind"] == "list")
    acked = [op for op, (i, d) in ops.items() if d and d["type"] == "ok" and i["f"] == "append" and i["db"] == lst]
    refused = [op for op, (i, d) in ops.items() if d and d["type"] == "fail" and i["f"] in ("append", "transfer")]
    reads = [d for op, (i, d) in ops.items() if d and d["type"] == "ok" and i["f"] == "read" and i["db"] == bank and d["count"] > 10]

    if len(acked) < 10 or len(reads) < 10:
        print("selftest: the run is too short to inject anomalies into")
        sys.exit(1)

    # An acknowledged append missing from the final state (the last one: nothing after it shifts).
    sv = copy.deepcopy(saved)
    rows = sv["final"][lst]["rows"]
    victim = max(acked, key=lambda op: ops[op][1]["v"])
    rows[:] = [r for r in rows if r[0] != victim]
    sv["final"][lst]["version"] -= 1
    expect("lost append", {"lost"}, events, sv)

    # An append applied twice.
    sv = copy.deepcopy(saved)
    sv["final"][lst]["rows"].append(list(sv["final"][lst]["rows"][len(sv["final"][lst]["rows"]) // 2]))
    sv["final"][lst]["version"] += 1
    expect("duplicated append", {"duplicate"}, events, sv)

    # A refused write applied after all.
    if refused:
        inv = ops[refused[0]][0]
        sv = copy.deepcopy(saved)
        st = sv["final"][inv["db"]]
        if st["kind"] == "bank":
            st["rows"].append([inv["op"], inv["src"], inv["dst"], inv["amount"]])
            st["balances"][inv["src"] - 1] -= inv["amount"]
            st["balances"][inv["dst"] - 1] += inv["amount"]
        else:
            st["rows"].append([inv["op"], inv["key"]])
        st["version"] += 1
        expect("refused write applied", {"refused-applied"}, events, sv)

    # Two acknowledged appends swapped in the final state.
    sv = copy.deepcopy(saved)
    rows = sv["final"][lst]["rows"]
    pos = {r[0]: i for i, r in enumerate(rows)}
    a = sorted(acked, key=lambda op: ops[op][1]["v"])[len(acked) // 2]
    i = pos[a]
    rows[i], rows[i + 1] = rows[i + 1], rows[i]
    expect("reordered appends", {"wrong-version", "reorder"}, events, sv)

    # A read of a mixed state (one balance off), and one claiming another version.
    ev = copy.deepcopy(events)
    target = next(e for e in ev if e.get("op") == reads[len(reads) // 2]["op"] and e["type"] == "ok")
    target["balances"][0] += 1
    target["balances"][1] -= 1
    expect("mixed read", {"read-mismatch"}, ev, saved)
    ev = copy.deepcopy(events)
    target = next(e for e in ev if e.get("op") == reads[len(reads) // 2]["op"] and e["type"] == "ok")
    target["v"] += 1
    expect("read with the wrong version", {"read-mismatch"}, ev, saved)

    # A stale read: a late read that shows an old committed state, consistently.
    ev = copy.deepcopy(events)
    m = check.Model(bank, saved["final"][bank], 8, 1000)
    late = reads[-1]
    target = next(e for e in ev if e.get("op") == late["op"] and e["type"] == "ok")
    old = late["count"] - 10
    target.update(count=old, v=old + m.const, balances=list(m.states[old]), tail=m.tail_at(old))
    expect("stale read", {"stale-read"}, ev, saved)

    # A lost update: a transfer acknowledged on an old base version.
    ev = copy.deepcopy(events)
    transfer = next(d for op, (i, d) in ops.items() if d and d["type"] == "ok" and i["f"] == "transfer" and d["count"] > 5)
    target = next(e for e in ev if e.get("op") == transfer["op"] and e["type"] == "ok")
    target["base"] -= 1
    expect("lost update (stale base)", {"stale-base"}, ev, saved)

    # Balances that do not add up, and a failed validation.
    sv = copy.deepcopy(saved)
    sv["final"][bank]["balances"][0] += 5
    expect("bank total", {"bank-total", "bank-replay"}, events, sv)
    sv = copy.deepcopy(saved)
    sv["validate"][bank] = {"code": 1, "output": "FAILED at version 7"}
    expect("validate failure", {"validate"}, events, sv)

    print("selftest:", "passed" if failures == 0 else f"{failures} FAILED")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
