"""The chaos checker: the recorded history against the final state.

Model. Every batch after a database's setup is exactly one workload
transaction, and each inserts one row into the database's log table
(`transfers` for bank, `items` for list-append) whose ids grow in commit
order. So the committed state at version `const + k` is the setup state plus
the first k log rows, where `const = final version - final row count`; and
every observed (version, state) pair can be checked exactly.

Checks (each failure is an anomaly of the named kind):
- lost:                an acknowledged write is not in the final state
- duplicate:           a write appears more than once
- refused-applied:     a write reported as refused (a definite failure) is in the final state
- phantom:             a row nobody invoked
- wrong-version:       an acknowledged write's row is not at the version its COMMIT reported
- stale-base:          an acknowledged write did not commit on the version before it (lost update)
- txn-read:            what a committed transaction read is not the state at its base version
- corrupt-write:       a row differs from what its transaction wrote
- read-mismatch:       a read's (version, state) is not a committed version's state
- version-regress:     a process saw a database's version go backwards
- stale-read:          an operation saw a version older than one acknowledged before it began
- reorder:             a write acknowledged before another began sits after it
- bank-total / bank-replay: balances do not add up, or differ from replaying the transfers
- integrity / validate: PRAGMA integrity_check or `synd validate` fails at the end, or
                       validates another number of batches than the final read's version
- client-exit / sequencer-exit: a process died that no nemesis killed
"""
import bisect
import json

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
MASK = 0xFFFFFFFFFFFFFFFF


def fnv_extend(h, value):
    for byte in value.encode() + b"\n":
        h ^= byte
        h = (h * FNV_PRIME) & MASK
    return h


class Model:
    """The committed states of one database, from its final state."""

    def __init__(self, name, st, accounts, initial):
        self.name = name
        self.kind = st["kind"]
        self.rows = st["rows"]
        self.ids = [r[0] for r in self.rows]
        self.n = len(self.rows)
        self.const = st["version"] - self.n
        self.pos = {}
        for i, op in enumerate(self.ids, start=1):
            self.pos.setdefault(op, []).append(i)
        if self.kind == "bank":
            b = [initial] * accounts
            self.states = [tuple(b)]
            for _, src, dst, amount in self.rows:
                b[src - 1] -= amount
                b[dst - 1] += amount
                self.states.append(tuple(b))
        else:
            # Per key: positions of its items and the hash of each prefix of its list.
            self.key_pos = {}
            self.key_hash = {}
            for i, (val, k) in enumerate(self.rows, start=1):
                self.key_pos.setdefault(k, []).append(i)
                hs = self.key_hash.setdefault(k, [FNV_OFFSET])
                hs.append(fnv_extend(hs[-1], val))

    def key_list_at(self, key, count):
        """(length, hash) of list `key` in the state with `count` rows."""
        positions = self.key_pos.get(key, [])
        j = bisect.bisect_right(positions, count)
        return j, "%016x" % self.key_hash.get(key, [FNV_OFFSET])[j]

    def tail_at(self, count):
        return self.ids[max(0, count - 8):count]


def check(events, final, validations, unexpected, bank_total, accounts=8):
    anomalies = []
    initial = bank_total // accounts
    models = {name: Model(name, st, accounts, initial) for name, st in final.items()}

    def anomaly(kind, db, detail, *evs):
        anomalies.append({"kind": kind, "db": db, "detail": detail, "events": [e for e in evs if e]})

    ops = {}
    for e in events:
        t = e.get("type")
        if t == "invoke":
            ops[e["op"]] = {"invoke": e, "done": None}
        elif t in ("ok", "fail", "info") and e.get("op") in ops:
            ops[e["op"]]["done"] = e

    stats = {"operations": 0, "writes": 0, "acknowledged": 0, "refused": 0, "refused_at_commit": 0,
             "fenced_at_commit": 0, "unknown": 0, "unknown_info": 0, "unknown_killed": 0,
             "unknown_applied": 0, "unknown_not_applied": 0, "reads": 0, "reads_ok": 0, "reads_failed": 0,
             "reads_killed": 0}
    refusal_codes = {}

    for op, rec in ops.items():
        inv, done = rec["invoke"], rec["done"]
        m = models.get(inv["db"])
        stats["operations"] += 1
        if m is None:
            continue
        if inv["f"] in ("transfer", "append"):
            stats["writes"] += 1
            positions = m.pos.get(op, [])
            if len(positions) > 1:
                anomaly("duplicate", m.name, f"{op} is in the final state {len(positions)} times, at rows {positions}", inv, done)
            kind = done["type"] if done else None
            if kind == "ok":
                stats["acknowledged"] += 1
                if not positions:
                    anomaly("lost", m.name, f"{op} was acknowledged at version {done['v']} but is not in the final state", inv, done)
                    continue
                p = positions[0]
                if done["v"] - m.const != p:
                    anomaly("wrong-version", m.name, f"{op} acknowledged at version {done['v']} but its row is that of version {p + m.const}", inv, done)
                if done["base"] != done["v"] - 1:
                    anomaly("stale-base", m.name, f"{op} read version {done['base']} and committed as version {done['v']}", inv, done)
                count = done["count"]
                if count != done["base"] - m.const:
                    anomaly("txn-read", m.name, f"{op} read {count} log rows at version {done['base']}, which has {done['base'] - m.const}", inv, done)
                elif m.kind == "bank":
                    if 0 <= count <= m.n and list(m.states[count]) != done["balances"]:
                        anomaly("txn-read", m.name, f"{op} read balances {done['balances']} at version {done['base']}, which has {list(m.states[count])}", inv, done)
                    row = m.rows[p - 1]
                    if row[1:] != [inv["src"], inv["dst"], inv["amount"]]:
                        anomaly("corrupt-write", m.name, f"{op}'s row is {row}, it wrote {[inv['src'], inv['dst'], inv['amount']]}", inv, done)
                else:
                    if 0 <= count <= m.n and m.key_list_at(done["key"], count) != (done["klen"], done["khash"]):
                        anomaly("txn-read", m.name, f"{op} read list {done['key']} as {done['klen']} items ({done['khash']}) at version {done['base']}, which has {m.key_list_at(done['key'], count)}", inv, done)
                    if m.rows[p - 1][1] != inv["key"]:
                        anomaly("corrupt-write", m.name, f"{op}'s row has key {m.rows[p - 1][1]}, it appended to {inv['key']}", inv, done)
            elif kind == "fail":
                stats["refused"] += 1
                code = done.get("code")
                refusal_codes[code] = refusal_codes.get(code, 0) + 1
                if done.get("phase") == "commit":
                    stats["refused_at_commit"] += 1
                    if code == 517:
                        stats["fenced_at_commit"] += 1
                if positions:
                    anomaly("refused-applied", m.name, f"{op} was refused ({done.get('error')}) but is in the final state at row {positions[0]}", inv, done)
            else:
                stats["unknown"] += 1
                stats["unknown_info" if kind == "info" else "unknown_killed"] += 1
                stats["unknown_applied" if positions else "unknown_not_applied"] += 1
        elif inv["f"] == "read":
            stats["reads"] += 1
            if done is None:
                stats["reads_killed"] += 1
            elif done["type"] != "ok":
                stats["reads_failed"] += 1
            else:
                stats["reads_ok"] += 1
                check_read(m, op, inv, done, anomaly, bank_total)

    # What the targeted nemeses did (they must take effect to mean anything).
    effects = {"writer-pause: takeover wrote": 0, "writer-pause: paused mid-operation": 0,
               "writer-pause: that operation refused": 0, "writer-pause: that operation committed": 0,
               "writer-pause: that operation unknown": 0, "writer-pause: refused after a takeover wrote": 0,
               "client-kill: killed mid-operation": 0}
    acked_by = {}
    for rec in ops.values():
        if rec["done"] and rec["done"]["type"] == "ok" and rec["invoke"]["f"] != "read":
            acked_by[rec["invoke"]["p"]] = acked_by.get(rec["invoke"]["p"], 0) + 1
    for e in events:
        if e.get("type") != "nemesis" or e.get("phase", "start") != "start":
            continue
        if e["kind"] == "writer-pause":
            wrote = acked_by.get(e.get("takeover"), 0) > 0
            effects["writer-pause: takeover wrote"] += wrote
            rec = ops.get(e.get("in_flight"))
            if rec:
                effects["writer-pause: paused mid-operation"] += 1
                outcome = rec["done"]["type"] if rec["done"] else "info"
                key = {"ok": "committed", "fail": "refused", "info": "unknown"}[outcome]
                effects[f"writer-pause: that operation {key}"] += 1
                effects["writer-pause: refused after a takeover wrote"] += wrote and outcome == "fail"
        elif e["kind"] == "client-kill" and e.get("in_flight") in ops:
            effects["client-kill: killed mid-operation"] += 1

    invoked = set(ops)
    for m in models.values():
        for op in m.pos:
            if op not in invoked:
                anomaly("phantom", m.name, f"row {op} at {m.pos[op]} was never invoked")

    # Versions a process sees never go backwards; nothing older than an acknowledgement before the start.
    last = {}
    acks = {}
    for e in events:
        if e.get("type") == "ok" and e.get("op") in ops and "v" in e:
            inv = ops[e["op"]]["invoke"]
            if inv["f"] != "read":
                acks.setdefault(e["db"], []).append((e["t"], e["v"], e["op"]))
    for db in acks:
        acks[db].sort()
    ack_prefix_max = {}
    for db, lst in acks.items():
        best, out = (-1, None), []
        for t, v, op in lst:
            if v > best[0]:
                best = (v, op)
            out.append(best)
        ack_prefix_max[db] = ([t for t, _, _ in lst], out)
    for e in events:
        if e.get("type") != "ok" or e.get("op") not in ops or "v" not in e:
            continue
        inv = ops[e["op"]]["invoke"]
        seen = [e["base"], e["v"]] if inv["f"] != "read" else [e["v"]]
        key = (e["p"], e["db"])
        prev = last.get(key)
        if prev is not None and seen[0] < prev[0]:
            anomaly("version-regress", e["db"], f"{e['p']} saw version {seen[0]} ({e['op']}) after {prev[0]} ({prev[1]})", inv, e)
        last[key] = (seen[-1], e["op"])
        if e["db"] in ack_prefix_max:
            times, best = ack_prefix_max[e["db"]]
            i = bisect.bisect_left(times, inv["t"])
            if i > 0 and best[i - 1][0] > seen[0]:
                anomaly("stale-read", e["db"], f"{e['op']} began after version {best[i - 1][0]} ({best[i - 1][1]}) was acknowledged, but saw version {seen[0]}", inv, e)

    # Real-time order of acknowledged writes against their rows.
    for db, m in models.items():
        oks = []
        for op, rec in ops.items():
            inv, done = rec["invoke"], rec["done"]
            if inv["db"] == db and inv["f"] != "read" and done and done["type"] == "ok" and m.pos.get(op):
                oks.append((inv["t"], done["t"], m.pos[op][0], op))
        by_ack = sorted(oks, key=lambda x: x[1])
        ack_times = [x[1] for x in by_ack]
        max_pos = []
        best = (0, None)
        for x in by_ack:
            if x[2] > best[0]:
                best = (x[2], x[3])
            max_pos.append(best)
        for t_inv, _, p, op in oks:
            i = bisect.bisect_left(ack_times, t_inv)
            if i > 0 and max_pos[i - 1][0] > p:
                anomaly("reorder", db, f"{op} (row {p}) began after {max_pos[i - 1][1]} (row {max_pos[i - 1][0]}) was acknowledged, yet comes before it")

    for name, st in final.items():
        if st.get("integrity") != "ok":
            anomaly("integrity", name, f"PRAGMA integrity_check: {st.get('integrity')}")
        if st["kind"] == "bank":
            if sum(st["balances"]) != bank_total:
                anomaly("bank-total", name, f"final balances {st['balances']} add up to {sum(st['balances'])}")
            if list(models[name].states[-1]) != st["balances"]:
                anomaly("bank-replay", name, f"final balances {st['balances']} differ from replaying the transfers: {list(models[name].states[-1])}")
    for name, r in validations.items():
        if r["code"] != 0:
            anomaly("validate", name, f"synd validate exited {r['code']}: {r['output']}")
        elif name in final and not r["output"].startswith(f"ok: {final[name]['version']} batch{'' if final[name]['version'] == 1 else 'es'} "):
            # The final state was read through the VFS; the validator streams the batches itself.
            anomaly("validate", name, f"the final read saw version {final[name]['version']}, synd validate: {r['output']}")
    for u in unexpected:
        anomaly(u["kind"], None, u["detail"])
    return {"anomalies": anomalies, "stats": stats, "effects": effects, "refusal_codes": refusal_codes,
            "databases": {n: {"version": st["version"], "rows": len(st["rows"])} for n, st in final.items()},
            "validate": {n: r["output"].splitlines()[0] if r["output"] else "" for n, r in validations.items()}}


def check_read(m, op, inv, done, anomaly, bank_total):
    v, count = done["v"], done["count"]
    if count > m.n or count < 0:
        anomaly("read-mismatch", m.name, f"{op} read {count} log rows; the final state has only {m.n}", inv, done)
        return
    if v - m.const != count:
        anomaly("read-mismatch", m.name, f"{op} read version {v} with {count} log rows; that version has {v - m.const}", inv, done)
        return
    if done["tail"] != m.tail_at(count):
        anomaly("read-mismatch", m.name, f"{op} read last rows {done['tail']} at version {v}, which has {m.tail_at(count)}", inv, done)
    if m.kind == "bank":
        if sum(done["balances"]) != bank_total:
            anomaly("bank-total", m.name, f"{op} read balances adding up to {sum(done['balances'])} at version {v}", inv, done)
        if list(m.states[count]) != done["balances"]:
            anomaly("read-mismatch", m.name, f"{op} read balances {done['balances']} at version {v}, which has {list(m.states[count])}", inv, done)
    else:
        if m.key_list_at(done["key"], count) != (done["klen"], done["khash"]):
            anomaly("read-mismatch", m.name, f"{op} read list {done['key']} as {done['klen']} items ({done['khash']}) at version {v}, which has {m.key_list_at(done['key'], count)}", inv, done)


def print_report(report, nemeses, directory):
    s = report["stats"]
    anomalies = report["anomalies"]
    kinds = {}
    for a in anomalies:
        kinds[a["kind"]] = kinds.get(a["kind"], 0) + 1
    rows = [
        ("operations (writes + reads)", s["operations"]),
        ("writes", s["writes"]),
        ("  acknowledged", s["acknowledged"]),
        ("  refused (definite)", s["refused"]),
        ("    at COMMIT", s["refused_at_commit"]),
        ("    fenced at COMMIT (BUSY_SNAPSHOT)", s["fenced_at_commit"]),
        ("  unknown", s["unknown"]),
        ("    outcome unknown (IOERR_FSYNC)", s["unknown_info"]),
        ("    client killed mid-operation", s["unknown_killed"]),
        ("    resolved: applied", s["unknown_applied"]),
        ("    resolved: not applied", s["unknown_not_applied"]),
        ("reads", s["reads"]),
        ("  ok", s["reads_ok"]),
        ("  failed", s["reads_failed"]),
        ("  client killed mid-read", s["reads_killed"]),
    ]
    rows.append(("nemesis events", sum(nemeses.values())))
    for k in sorted(nemeses):
        rows.append((f"  {k}", nemeses[k]))
    for k, v in report["effects"].items():
        rows.append((f"  {k}", v))
    rows.append(("anomalies", len(anomalies)))
    for k in sorted(kinds):
        rows.append((f"  {k}", kinds[k]))
    width = max(len(r[0]) for r in rows) + 2
    print("=" * (width + 10))
    for label, value in rows:
        print(f"{label:<{width}}{value:>10}")
    print("=" * (width + 10))
    for name, d in sorted(report["databases"].items()):
        print(f"{name}: version {d['version']}, {d['rows']} rows; validate: {report['validate'].get(name, '')}")
    codes = ", ".join(f"{k}: {v}" for k, v in sorted(report["refusal_codes"].items(), key=lambda x: -x[1]))
    print(f"refusals by SQLite result code: {codes}")
    with open(directory + "/anomalies.json", "w") as f:
        json.dump(anomalies, f, indent=1)
    with open(directory + "/summary.json", "w") as f:
        json.dump({"stats": s, "nemeses": nemeses, "anomalies": kinds, "refusal_codes": report["refusal_codes"],
                   "effects": report["effects"], "databases": report["databases"]}, f, indent=1)
    if anomalies:
        for a in anomalies[:20]:
            print(f"ANOMALY {a['kind']} [{a['db']}]: {a['detail']}")
        if len(anomalies) > 20:
            print(f"... {len(anomalies) - 20} more in {directory}/anomalies.json")
        return 1
    return 0
