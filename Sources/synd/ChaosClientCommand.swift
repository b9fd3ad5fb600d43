import ArgumentParser
import CSQLite
import Foundation
import SyndDB
import SyndSQLite

/// A workload client of the chaos checker (scripts/chaos.sh), through the
/// Swift API. It mirrors scripts/chaos/client.py (the same roles, schema and
/// history format), so the checker treats both alike.
///
/// Roles:
/// - `bank`: transfers between accounts; each transfer also inserts its id into
///   `transfers` in the same transaction.
/// - `append`: appends a unique value to one of a few lists (`items`, ordered by id).
/// - `read`: read-only (`mode=ro`) read transactions that record the version
///   they saw (`PRAGMA synddb_version`) and a fingerprint of the state.
///
/// Every operation is logged as JSON lines: `invoke`, then `ok`, `fail` (a
/// definite failure: nothing applied) or `info` (outcome unknown). A process
/// killed mid-operation leaves only its `invoke`.
struct ChaosClientCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chaos-client",
        abstract: "Workload client for scripts/chaos.sh (bank, append or read), logging a JSON-lines history.",
        shouldDisplay: false)

    @Option(help: "bank, append or read.")
    var role: String

    @Option(help: "Sequencer URL (normally the chaos proxy).")
    var sequencer: String

    @Option(help: "Comma-separated database names.")
    var dbs: String

    @Option(help: "History file (JSON lines, appended).")
    var history: String

    @Option(help: "This process's name in the history.")
    var process: String

    @Option(help: "Random seed.")
    var seed: UInt64 = 1

    @Option(help: "Writer lease TTL.")
    var leaseTtlMs: Int = 10_000

    @Option(help: "Per-request deadline.")
    var timeoutMs: Int = 5_000

    @Option(help: "Longest think time inside a write transaction, before COMMIT.")
    var thinkMs: Int = 20

    @Option(help: "Longest pause between operations.")
    var pauseMs: Int = 60

    @Option(help: "Stop after this many operations (0: no limit).")
    var maxOps: Int = 0

    @Option(help: "Give up opening after this many seconds (0: keep trying).")
    var openDeadlineS: Double = 0

    @Option(help: "Stop when this file exists.")
    var stopFile: String

    @Option(help: "Number of lists (append role).")
    var keys: Int = 6

    @Flag(help: "Writers use PRAGMA locking_mode=EXCLUSIVE.")
    var exclusive = false

    func run() throws {
        var rng = SplitMix64(seed: seed)
        let log = try ChaosHistory(path: history, process: process)
        let names = dbs.split(separator: ",").map(String.init)
        guard !names.isEmpty, ["bank", "append", "read"].contains(role) else {
            throw ValidationError("--role bank|append|read and at least one database")
        }
        var ops = 0
        var counter = 0
        let started = chaosNow()
        func stopping() -> Bool {
            FileManager.default.fileExists(atPath: stopFile) || (maxOps > 0 && ops >= maxOps)
        }
        func pause(_ maxMs: Int) { if maxMs > 0 { usleep(UInt32(Int.random(in: 0...maxMs, using: &rng)) * 1000) } }

        while !stopping() {
            let name = names[Int.random(in: 0..<names.count, using: &rng)]
            var options = DatabaseOptions()
            options.leaseTTLMs = leaseTtlMs
            options.timeoutMs = timeoutMs
            options.readOnly = role == "read"
            let db: Database
            do {
                db = try Database.open(name, sequencer: sequencer, options: options)
            } catch {
                if openDeadlineS > 0, Double(chaosNow() - started) / 1e9 > openDeadlineS { return }
                pause(150)
                continue
            }
            do {
                if exclusive && role != "read" { try db.execute("PRAGMA locking_mode=EXCLUSIVE") }
                // A tiny page cache: SQLite re-reads pages in the middle of a read transaction.
                if role == "read" && Bool.random(using: &rng) { try db.execute("PRAGMA cache_size=2") }
            } catch {
                continue
            }
            let session = role == "read" ? 50 : Int.random(in: 3...30, using: &rng)
            var failures = 0
            for _ in 0..<session {
                if stopping() { break }
                counter += 1
                let op = "\(process)-\(counter)"
                let ok: Bool
                switch role {
                case "bank": ok = transfer(db, op: op, log: log, rng: &rng)
                case "append": ok = append(db, op: op, log: log, rng: &rng)
                default: ok = read(db, op: op, log: log, rng: &rng)
                }
                ops += 1
                failures = ok ? 0 : failures + 1
                if failures >= 3 { break }
                pause(pauseMs)
            }
            // Closing releases the lease: the other writers get their turn.
        }
    }

    private func versionOf(_ db: Database) throws -> Int64 {
        guard let text = try db.scalar("PRAGMA synddb_version")?.string, let v = Int64(text) else {
            throw SQLiteError(code: SQLITE_ERROR, message: "PRAGMA synddb_version gave no version")
        }
        return v
    }

    /// Logs the failure of a write operation: `info` when COMMIT's outcome is
    /// unknown (SQLITE_IOERR_FSYNC), else `fail` (README: COMMIT reports a
    /// rollback only on a definitive answer; earlier statements send nothing).
    private func logFailure(_ error: any Error, op: String, name: String, phase: String, db: Database, log: ChaosHistory) {
        let sqlite = error as? SQLiteError
        let code = Int(sqlite?.extendedCode ?? -1)
        let unknown = phase == "commit" && (code == 1034 || "\(error)".contains("unknown outcome"))
        log.write(["type": unknown ? "info" : "fail", "op": op, "db": name, "phase": phase, "code": code, "error": "\(error)"])
        if !db.connection.isAutocommit { try? db.execute("ROLLBACK") }
    }

    private func transfer(_ db: Database, op: String, log: ChaosHistory, rng: inout SplitMix64) -> Bool {
        let accounts = 8
        let src = Int.random(in: 1...accounts, using: &rng)
        var dst = Int.random(in: 1...(accounts - 1), using: &rng)
        if dst >= src { dst += 1 }
        let amount = Int.random(in: 1...100, using: &rng)
        log.write(["type": "invoke", "f": "transfer", "op": op, "db": db.name, "src": src, "dst": dst, "amount": amount])
        var phase = "txn"
        do {
            try db.execute("BEGIN IMMEDIATE")
            let balances = try db.query("SELECT balance FROM accounts ORDER BY id").map { $0[0].int64 ?? -1 }
            let count = try db.scalar("SELECT count(*) FROM transfers")?.int64 ?? -1
            let base = try versionOf(db)
            try db.query("UPDATE accounts SET balance = balance - ? WHERE id = ?", [amount, src])
            try db.query("UPDATE accounts SET balance = balance + ? WHERE id = ?", [amount, dst])
            try db.query("INSERT INTO transfers(tid, src, dst, amount) VALUES (?, ?, ?, ?)", [op, src, dst, amount])
            if thinkMs > 0 { usleep(UInt32(Int.random(in: 0...thinkMs, using: &rng)) * 1000) }
            phase = "commit"
            try db.execute("COMMIT")
            let v = try versionOf(db)
            log.write(["type": "ok", "op": op, "db": db.name, "base": base, "v": v, "balances": balances, "count": count])
            return true
        } catch {
            logFailure(error, op: op, name: db.name, phase: phase, db: db, log: log)
            return false
        }
    }

    private func append(_ db: Database, op: String, log: ChaosHistory, rng: inout SplitMix64) -> Bool {
        let key = Int.random(in: 0..<keys, using: &rng)
        log.write(["type": "invoke", "f": "append", "op": op, "db": db.name, "key": key])
        var phase = "txn"
        do {
            try db.execute("BEGIN IMMEDIATE")
            let list = try db.query("SELECT val FROM items WHERE k = ? ORDER BY id", [key]).map { $0[0].string ?? "" }
            let count = try db.scalar("SELECT count(*) FROM items")?.int64 ?? -1
            let base = try versionOf(db)
            try db.query("INSERT INTO items(k, val) VALUES (?, ?)", [key, op])
            if thinkMs > 0 { usleep(UInt32(Int.random(in: 0...thinkMs, using: &rng)) * 1000) }
            phase = "commit"
            try db.execute("COMMIT")
            let v = try versionOf(db)
            log.write(["type": "ok", "op": op, "db": db.name, "base": base, "v": v, "key": key, "count": count,
                       "klen": list.count, "khash": fnv1a(list)])
            return true
        } catch {
            logFailure(error, op: op, name: db.name, phase: phase, db: db, log: log)
            return false
        }
    }

    private func read(_ db: Database, op: String, log: ChaosHistory, rng: inout SplitMix64) -> Bool {
        let bank = db.name.contains("bank")
        let key = Int.random(in: 0..<keys, using: &rng)
        log.write(["type": "invoke", "f": "read", "op": op, "db": db.name])
        do {
            try db.execute("BEGIN")
            var fields: [String: Any] = ["type": "ok", "op": op, "db": db.name]
            if bank {
                fields["balances"] = try db.query("SELECT balance FROM accounts ORDER BY id").map { $0[0].int64 ?? -1 }
                fields["count"] = try db.scalar("SELECT count(*) FROM transfers")?.int64 ?? -1
                fields["tail"] = try db.query("SELECT tid FROM (SELECT id, tid FROM transfers ORDER BY id DESC LIMIT 8) ORDER BY id").map { $0[0].string ?? "" }
            } else {
                fields["count"] = try db.scalar("SELECT count(*) FROM items")?.int64 ?? -1
                fields["tail"] = try db.query("SELECT val FROM (SELECT id, val FROM items ORDER BY id DESC LIMIT 8) ORDER BY id").map { $0[0].string ?? "" }
                let list = try db.query("SELECT val FROM items WHERE k = ? ORDER BY id", [key]).map { $0[0].string ?? "" }
                fields["key"] = key
                fields["klen"] = list.count
                fields["khash"] = fnv1a(list)
            }
            fields["v"] = try versionOf(db)
            try db.execute("COMMIT")
            log.write(fields)
            return true
        } catch {
            log.write(["type": "fail", "op": op, "db": db.name, "phase": "read", "error": "\(error)"])
            if !db.connection.isAutocommit { try? db.execute("ROLLBACK") }
            return false
        }
    }
}

/// FNV-1a (64 bit) over each value followed by a newline, as 16 hex digits
/// (the same as client.py's and the checker's).
func fnv1a(_ values: [String]) -> String {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for value in values {
        for byte in value.utf8 + [0x0A] {
            h ^= UInt64(byte)
            h = h &* 0x0000_0100_0000_01b3
        }
    }
    let hex = String(h, radix: 16)
    return String(repeating: "0", count: 16 - hex.count) + hex
}

/// CLOCK_MONOTONIC in nanoseconds: the clock python's time.monotonic_ns() reads.
func chaosNow() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}

/// One JSON object per line, flushed at once (a kill -9 loses at most a partial last line).
final class ChaosHistory {
    let file: UnsafeMutablePointer<FILE>
    let process: String

    init(path: String, process: String) throws {
        guard let file = fopen(path, "a") else { throw ValidationError("cannot open \(path)") }
        self.file = file
        self.process = process
    }

    func write(_ fields: [String: Any]) {
        var object = fields
        object["t"] = chaosNow()
        object["p"] = process
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { return }
        var line = data
        line.append(0x0A)
        line.withUnsafeBytes { _ = fwrite($0.baseAddress, 1, $0.count, file) }
        fflush(file)
    }
}

/// A small seeded generator, so a seed repeats a client's choices.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
