import Dispatch
import Foundation
import SyndDB
import SyndProtocol
import SyndSQLite
import SyndStorage
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Edges of the sealed record: the sequencer's signing key, schema text a
/// validator must not execute, table names with separator characters, and
/// batches larger than gRPC's default message size.
@Suite struct EdgeCaseLedgerTests {
    // MARK: - The signing key

    @Test func anUnreadableOrMalformedKeyFileStopsTheSequencerAndIsLeftAsItIs() async throws {
        let dir = TemporaryDirectory()
        let data = dir.path + "/seq"
        try await offPool {
            try Self.history(in: data, rows: 3)
            let key = data + "/sequencer.ed25519"
            let original = try Self.bytes(key)
            try FileManager.default.moveItem(atPath: key, toPath: dir.path + "/saved-key")

            // A directory where the key should be.
            try FileManager.default.createDirectory(atPath: key, withIntermediateDirectories: false)
            try Self.expectRefusal(data, key, "never replaces")
            var isDirectory: ObjCBool = false
            #expect(FileManager.default.fileExists(atPath: key, isDirectory: &isDirectory) && isDirectory.boolValue)
            try FileManager.default.removeItem(atPath: key)

            // A file of the wrong length.
            let short = Array(original.prefix(31))
            try Data(short).write(to: URL(fileURLWithPath: key))
            try Self.expectRefusal(data, key, "not a 32-byte Ed25519")
            #expect(try Self.bytes(key) == short)
            try FileManager.default.removeItem(atPath: key)

            // A key that cannot be read at all (a link to a volume that is not mounted).
            let target = dir.path + "/unmounted/sequencer.ed25519"
            try FileManager.default.createSymbolicLink(atPath: key, withDestinationPath: target)
            try Self.expectRefusal(data, key, "never replaces")
            #expect(try FileManager.default.destinationOfSymbolicLink(atPath: key) == target)
            try FileManager.default.removeItem(atPath: key)

            // The original key back: the sequencer starts and the history verifies.
            try FileManager.default.moveItem(atPath: dir.path + "/saved-key", toPath: key)
            let sequencer = try SequencerProcess(directory: data)
            let validate = try Self.synd(["validate", "--sequencer", sequencer.url, "--db", "keyed"], timeout: .seconds(60))
            #expect(validate.status == 0, "\(validate.output) \(validate.error)")
        }
    }

    @Test func aKeyThatDoesNotMatchTheStoredHistoryStopsTheSequencer() async throws {
        let dir = TemporaryDirectory()
        let data = dir.path + "/seq"
        try await offPool {
            try Self.history(in: data, rows: 3)
            let key = data + "/sequencer.ed25519"
            let original = try Self.bytes(key)

            // Another valid key in its place.
            let other = (0..<32).map { _ in UInt8.random(in: 0...255) }
            try Data(other).write(to: URL(fileURLWithPath: key))
            try Self.expectRefusal(data, key, "does not match the stored history")
            #expect(try Self.bytes(key) == other)

            // No key at all over a store with history: refused, and no new key is made.
            try FileManager.default.removeItem(atPath: key)
            try Self.expectRefusal(data, key, "restore")
            #expect(!FileManager.default.fileExists(atPath: key))

            // The right key: it starts, earlier batches still verify, and new ones chain on.
            try Data(original).write(to: URL(fileURLWithPath: key))
            let sequencer = try SequencerProcess(directory: data)
            let db = try Database.open("keyed", sequencer: sequencer.url)
            try db.execute("INSERT INTO t(v) VALUES ('after restart')")
            let validate = try Self.synd(["validate", "--sequencer", sequencer.url, "--db", "keyed"], timeout: .seconds(60))
            #expect(validate.status == 0, "\(validate.output) \(validate.error)")
            #expect(validate.output.hasPrefix("ok: 5 batches"), "\(validate.output)")
            #expect(try Self.bytes(key) == original)
        }
    }

    @Test func aFreshStoreWritesItsKeyInPlaceWithMode0600AndKeepsIt() throws {
        let dir = TemporaryDirectory()
        let data = dir.path + "/seq"
        #expect(mkdir(data, 0o755) == 0)
        let watch = inotify_init1(Int32(IN_NONBLOCK))
        #expect(watch >= 0)
        defer { close(watch) }
        #expect(inotify_add_watch(watch, data, UInt32(IN_CREATE | IN_MOVED_TO | IN_ATTRIB | IN_CLOSE_WRITE)) >= 0)

        let key = data + "/sequencer.ed25519"
        let first = try PageStore(StoreConfiguration(directory: data)).signingKey.publicKey

        var info = stat()
        #expect(lstat(key, &info) == 0)
        #expect(info.st_mode & S_IFMT == S_IFREG)
        #expect(info.st_mode & 0o7777 == 0o600, "mode \(String(info.st_mode & 0o7777, radix: 8))")
        #expect(info.st_size == 32)
        // Created in place with its final mode: no rename over it, no chmod after.
        let events = Self.events(watch).filter { $0.name == "sequencer.ed25519" }
        #expect(events.contains { $0.mask & UInt32(IN_CREATE) != 0 }, "\(events)")
        #expect(!events.contains { $0.mask & UInt32(IN_MOVED_TO | IN_ATTRIB) != 0 }, "\(events)")

        // Opening the store again uses the same key and leaves the file alone.
        let saved = try Self.bytes(key)
        let again = try PageStore(StoreConfiguration(directory: data)).signingKey.publicKey
        #expect(again == first)
        #expect(try Self.bytes(key) == saved)
        #expect(Self.events(watch).filter { $0.name == "sequencer.ed25519" }.isEmpty)
    }

    // MARK: - Schema text from a batch

    @Test func validateReportsASchemaEntryThatRunsAQueryAtItsVersionInsteadOfRunningIt() async throws {
        try await withEmbeddedSequencer { server in
            let name = uniqueName("hostile")
            // Plain definitions, all of which a validator must still apply.
            do {
                let db = try Database.open(name, sequencer: server.url)
                try db.execute("""
                    CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, q INT CHECK (q IS NULL OR q >= 0));
                    CREATE TABLE log(id INTEGER PRIMARY KEY, what TEXT);
                    """)
                try db.transaction {
                    for i in 1...50 { try db.query("INSERT INTO t(v, q) VALUES (?, ?)", ["v\(i)", i]) }
                }
                for sql in [
                    "CREATE INDEX t_v ON t(v)",
                    "CREATE UNIQUE INDEX t_lower ON t(lower(v)) WHERE q > 0",
                    "CREATE VIEW above AS SELECT id, v FROM t WHERE q > (SELECT avg(q) FROM t)",
                    "CREATE TRIGGER t_log AFTER UPDATE ON t BEGIN INSERT INTO log(what) VALUES ('updated ' || NEW.id); END",
                    "ALTER TABLE t ADD COLUMN w INT DEFAULT 3 CHECK (w > 0)",
                    "CREATE TABLE seq(id INTEGER PRIMARY KEY AUTOINCREMENT, x)",
                    "INSERT INTO seq(x) VALUES (1), (2)",
                    "CREATE TABLE kv(k TEXT PRIMARY KEY, v) WITHOUT ROWID",
                    "INSERT INTO kv VALUES ('a', 1)",
                    "UPDATE t SET v = v || '!' WHERE id < 5",
                    "CREATE INDEX log_what ON log(what)",
                    "ALTER TABLE log RENAME TO journal",
                    "UPDATE t SET q = q + 1 WHERE id = 7",
                ] {
                    try db.execute(sql)
                }
            }
            let store = server.service.pageStore
            let honest = try store.headVersion(of: name)
            let hostile = try Self.commitByHand(store, name, adding: SchemaObject(
                type: "table", name: "boom", tableName: "boom",
                sql: "CREATE TABLE boom AS WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT x FROM c"))
            #expect(hostile == honest + 1)

            let validate = try Self.synd(["validate", "--sequencer", server.url, "--db", name], timeout: .seconds(30))
            #expect(validate.status == 1, "timed out: \(validate.status == nil) \(validate.output) \(validate.error)")
            #expect(validate.output.contains("FAILED at version \(hostile): "), "\(validate.output) \(validate.error)")
            #expect(validate.output.contains("boom") && validate.output.contains("plain definition"), "\(validate.output)")

            let log = try Self.synd(["log", "--sequencer", server.url, name], timeout: .seconds(30))
            #expect(log.status == 0, "timed out: \(log.status == nil) \(log.error)")
            #expect(log.output.contains("version \(hostile) "), "\(log.output)")
        }
    }

    @Test func validateStopsPlainDefinitionsThatWouldRunForMinutesOrExhaustMemory() async throws {
        try await withEmbeddedSequencer { server in
            let name = uniqueName("heavy")
            do {
                let db = try Database.open(name, sequencer: server.url)
                try db.execute("CREATE TABLE h(id INTEGER PRIMARY KEY)")
                try db.transaction {
                    for i in 1...300 { try db.query("INSERT INTO h VALUES (?)", [i]) }
                }
            }
            // A plain CREATE INDEX, but each row's key costs ~0.4 s and ~150 MB: minutes in all.
            let heavy = try Self.commitByHand(server.service.pageStore, name, adding: SchemaObject(
                type: "index", name: "heavy", tableName: "h",
                sql: "CREATE INDEX heavy ON h(length(replace(replace(printf('%.*c', 20000000 + id, 'x'), 'x', 'yy'), 'y', 'zz')))"))

            let started = ContinuousClock.now
            let slow = try Self.synd(
                ["validate", "--sequencer", server.url, "--db", name, "--statement-timeout", "2"], timeout: .seconds(60))
            #expect(slow.status == 1, "timed out: \(slow.status == nil) \(slow.output) \(slow.error)")
            #expect(slow.output.contains("FAILED at version \(heavy): "), "\(slow.output) \(slow.error)")
            #expect(slow.output.contains("longer than 2 s"), "\(slow.output)")
            #expect(ContinuousClock.now - started < .seconds(30))

            // The same limit holds for the validator's own work, here a rule that never ends.
            let rules = FileManager.default.temporaryDirectory.appendingPathComponent("\(name).rules").path
            try "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) > 0 FROM c\n"
                .write(toFile: rules, atomically: true, encoding: .utf8)
            defer { try? FileManager.default.removeItem(atPath: rules) }
            let endless = try Self.synd(
                ["validate", "--sequencer", server.url, "--db", name, "--rules", rules, "--statement-timeout", "1"], timeout: .seconds(60))
            #expect(endless.status == 1, "timed out: \(endless.status == nil) \(endless.output) \(endless.error)")
            #expect(endless.output.contains("FAILED at version 1: a statement ran longer than 1 s"), "\(endless.output)")

            let hungry = try Self.synd(
                ["validate", "--sequencer", server.url, "--db", name, "--memory-limit-mb", "64"], timeout: .seconds(60))
            #expect(hungry.status == 1, "timed out: \(hungry.status == nil) \(hungry.output) \(hungry.error)")
            #expect(hungry.output.contains("FAILED at version \(heavy): "), "\(hungry.output) \(hungry.error)")
            #expect(hungry.output.contains("out of memory"), "\(hungry.output)")
        }
    }

    // MARK: - Unaudited table names

    @Test func tableNamesWithSeparatorCharactersKeepTheirSealAndShowInTheLog() async throws {
        let dir = TemporaryDirectory()
        let path = dir.path
        try await offPool {
            let sequencer = try SequencerProcess(directory: path + "/seq")
            let unit = "unit\u{1F}sep", comma = "a, b"
            let db = try Database.open("names", sequencer: sequencer.url)
            try db.execute("""
                BEGIN;
                CREATE TABLE \(Self.quoted(unit))(x, y);
                CREATE TABLE \(Self.quoted(comma))(x);
                CREATE TABLE keyed(id INTEGER PRIMARY KEY, x);
                COMMIT;
                """)
            try db.execute("""
                BEGIN;
                INSERT INTO \(Self.quoted(unit)) VALUES (1, 2), (3, 4);
                INSERT INTO \(Self.quoted(comma)) VALUES ('z');
                INSERT INTO keyed(x) VALUES ('k');
                COMMIT;
                """)
            let validate = try Self.synd(["validate", "--sequencer", sequencer.url, "--db", "names"], timeout: .seconds(60))
            #expect(validate.status == 0, "\(validate.output) \(validate.error)")
            #expect(validate.output.contains(unit) && validate.output.contains(comma), "\(validate.output)")
            let log = try Self.synd(["log", "--sequencer", sequencer.url, "names"], timeout: .seconds(60))
            #expect(log.status == 0, "\(log.error)")
            let line = log.output.split(separator: "\n").first { $0.contains("changed without a PRIMARY KEY") }.map(String.init) ?? ""
            #expect(line.contains(unit) && line.contains(comma), "\(log.output)")
        }
    }

    // MARK: - Large batches

    @Test func batchesLargerThanFourMebibytesCanBeValidatedAndLogged() async throws {
        let dir = TemporaryDirectory()
        let path = dir.path
        try await offPool {
            let sequencer = try SequencerProcess(directory: path + "/seq")
            let db = try Database.open("large", sequencer: sequencer.url)
            try db.execute("CREATE TABLE big(id INTEGER PRIMARY KEY, payload TEXT)")
            let payload = String(repeating: "0123456789", count: 30)
            try db.transaction {
                for i in 1...20_000 { try db.query("INSERT INTO big(payload) VALUES (?)", ["\(i) \(payload)"]) }
            }
            let validate = try Self.synd(["validate", "--sequencer", sequencer.url, "--db", "large"], timeout: .seconds(120))
            #expect(validate.status == 0, "\(validate.output) \(validate.error)")
            #expect(validate.output.hasPrefix("ok: 2 batches"), "\(validate.output)")
            let log = try Self.synd(["log", "--sequencer", sequencer.url, "large", "--from", "2"], timeout: .seconds(120))
            #expect(log.status == 0, "\(log.error)")
            let header = log.output.split(separator: "\n").first.map(String.init) ?? ""
            let bytes = header.split(separator: " ").firstIndex(of: "bytes").flatMap { i in
                Int(header.split(separator: " ")[header.split(separator: " ").index(before: i)])
            }
            #expect(header.hasPrefix("version 2 ") && (bytes ?? 0) > 4 << 20, "\(header)")
            #expect(log.output.contains("INSERT INTO \"big\"(id, payload) VALUES (20000, '20000 0123456789"), "\(log.output.suffix(400))")
        }
    }

    // MARK: - Helpers

    /// A database "keyed" with a few committed batches, on a sequencer that is stopped again.
    static func history(in data: String, rows: Int) throws {
        let sequencer = try SequencerProcess(directory: data)
        do {
            let db = try Database.open("keyed", sequencer: sequencer.url)
            try db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
            for i in 1...rows { try db.query("INSERT INTO t(v) VALUES (?)", ["row \(i)"]) }
        }
        sequencer.kill9()
    }

    /// `synd sequencer` on `data` must exit non-zero, naming the key file and `reason`.
    static func expectRefusal(_ data: String, _ key: String, _ reason: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let run = try synd(["sequencer", "--data", data, "--port", "0"], timeout: .seconds(30))
        let text = run.output + run.error
        #expect(run.status != nil && run.status != 0, "still running (or exit 0): \(text)", sourceLocation: sourceLocation)
        #expect(text.contains(key), "\(text)", sourceLocation: sourceLocation)
        #expect(text.contains(reason), "\(text)", sourceLocation: sourceLocation)
    }

    static func quoted(_ identifier: String) -> String {
        "\"" + identifier.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    static func bytes(_ path: String) throws -> [UInt8] {
        Array(try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    /// Commits, on top of the head of `name`, a batch built by hand as a writer
    /// with its own client could: page 1 unchanged, and the current schema plus `object`.
    static func commitByHand(_ store: PageStore, _ name: String, adding object: SchemaObject) throws -> UInt64 {
        var acquire = AcquireLeaseRequest()
        acquire.database = name
        acquire.holder = "hand-built"
        let lease = try store.acquireLease(acquire)
        let head = try store.headVersion(of: name)
        var schema: [SchemaObject] = []
        for version in stride(from: head, through: 1, by: -1) {
            if let batch = try store.batch(database: name, version: version), batch.schemaChanged {
                schema = batch.schema
                break
            }
        }
        var read = ReadPagesRequest()
        read.database = name
        read.version = head
        read.pageNumbers = [1]
        let current = try store.readPages(read)
        var request = CommitRequest()
        request.database = name
        request.baseVersion = head
        request.leaseEpoch = lease.epoch
        request.holder = lease.holder
        request.txnID = (0..<16).map { _ in UInt8.random(in: 0...255) }
        request.pageSize = current.pageSize
        request.pageCount = current.pageCount
        request.pages = [Page(number: 1, data: current.pages[0].data)]
        request.schemaChanged = true
        request.schema = schema + [object]
        return try store.commit(request).version
    }

    /// Runs `synd`; kills it after `timeout` (then `status` is nil).
    ///
    /// Neither the pipes nor the exit depend on Dispatch's global threads or
    /// Foundation's child monitor (which runs on them): with the whole suite
    /// blocking those threads, `isRunning` stayed true for 30 s after the child
    /// had exited. The pipes are read on threads of their own, and the exit
    /// status is read from /proc while the child is a zombie.
    static func synd(_ arguments: [String], timeout: Duration) throws -> (status: Int32?, output: String, error: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Products.synd)
        process.arguments = arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try startProcess(process)
        let collected = Collected()
        let readers = [out, err].enumerated().map { index, pipe in
            Thread { collected.set(index, pipe.fileHandleForReading.readDataToEndOfFile()) }
        }
        for r in readers { r.start() }
        let pid = process.processIdentifier
        let deadline = ContinuousClock.now + timeout
        var status: Int32?
        while true {
            if let ended = Self.exitStatus(of: pid) {
                status = ended ?? process.terminationStatus
                break
            }
            if ContinuousClock.now > deadline {
                kill(pid, SIGKILL)
                break
            }
            usleep(20_000)
        }
        while readers.contains(where: { !$0.isFinished }) { usleep(5_000) }
        return (status, collected.text(0), collected.text(1))
    }

    /// nil while `pid` runs; once it ended, its exit status if it is a zombie
    /// (the last field of /proc/PID/stat), or .some(nil) if it was reaped already.
    static func exitStatus(of pid: Int32) -> Int32?? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return .some(nil) }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.first == "Z" || fields.first == "X" else { return nil }
        guard let code = fields.last.flatMap({ Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }) else { return .some(nil) }
        // A wait status: the exit code in bits 8-15, or the signal in the low bits.
        return .some(code & 0x7F == 0 ? (code >> 8) & 0xFF : 128 + (code & 0x7F))
    }

    struct Event: CustomStringConvertible {
        var mask: UInt32
        var name: String
        var description: String { "\(name): 0x\(String(mask, radix: 16))" }
    }

    /// The inotify events queued on `fd` so far.
    static func events(_ fd: Int32) -> [Event] {
        var out: [Event] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            guard n > 0 else { return out }
            var offset = 0
            while offset + 16 <= n {
                func u32(_ at: Int) -> UInt32 {
                    UInt32(buffer[at]) | UInt32(buffer[at + 1]) << 8 | UInt32(buffer[at + 2]) << 16 | UInt32(buffer[at + 3]) << 24
                }
                let mask = u32(offset + 4), length = Int(u32(offset + 12))
                let raw = buffer[(offset + 16)..<(offset + 16 + length)].prefix { $0 != 0 }
                out.append(Event(mask: mask, name: String(decoding: raw, as: UTF8.self)))
                offset += 16 + length
            }
        }
    }
}

/// Output of a child process, gathered from two reader threads.
private final class Collected: @unchecked Sendable {
    // Safe: every access holds `lock`.
    private let lock = NSLock()
    private var data: [Data] = [Data(), Data()]

    func set(_ index: Int, _ value: Data) {
        lock.lock()
        data[index] = value
        lock.unlock()
    }

    func text(_ index: Int) -> String {
        lock.lock()
        defer { lock.unlock() }
        return String(decoding: data[index], as: UTF8.self)
    }
}
