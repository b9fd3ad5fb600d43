import CSQLite
import SyndCapture
import SyndLedger
import SyndProtocol
import SyndSQLite
import SyndValidator

#if canImport(Glibc)
import Glibc
#endif

/// A validator's handling of a batch: its page images, changeset and schema
/// SQL, as `Validator.process` replays them onto fresh replicas, and as
/// `ChangesetText` renders them for `synd log`.
///
/// Input: one flag byte, then up to four batches, each a 2-byte-length chunk
/// decoded as a `Batch` message (chunks that do not decode are skipped). The
/// target numbers and seals each batch with its own key (the seal is checked
/// as usual), unless flag bit 0 asks for the batch exactly as given.
///
/// Promises: `process` accepts a batch or throws a `ValidationFailure` with a
/// reason, never traps; rendering a changeset never traps.
public enum ValidatorBatchTarget {
    public static let name = "validator"

    static let maxBatches = 4
    static let directory = scratchDirectory("validator")
    static let key: SigningKey = {
        let folder = scratchDirectory("validator-key")
        do { return try SigningKey(path: folder + "/sequencer.ed25519") } catch { violated(name, "no signing key: \(error)") }
    }()

    public static func run(_ data: [UInt8]) {
        let key = Self.key
        emptyDirectory(directory)
        defer { emptyDirectory(directory) }
        var input = FuzzInput(data)
        let asGiven = input.byte() & 1 != 0
        let validator: Validator
        let text: ChangesetText
        do {
            // Whole tables only when needed: every later batch goes through the page map (and the same way every run).
            validator = try Validator(directory: directory, publicKey: key.publicKey, limits: ReplicaLimits(statementTimeout: .seconds(2)), fullCheck: .whenNeeded)
            text = try ChangesetText()
        } catch {
            violated(name, "cannot set up a validator: \(error)")
        }
        var previous = BatchSeal.genesis
        var batches = 0
        while !input.isAtEnd, batches < maxBatches {
            guard var batch = try? Batch(serializedBytes: input.chunk()) else { continue }
            batches += 1
            if !asGiven {
                batch.version = validator.version + 1
                do { try BatchSeal.seal(&batch, previousHash: previous, key: key) } catch { violated(name, "cannot seal: \(error)") }
            }
            text.track(batch)
            _ = text.statements(batch.changeset)
            do throws(ValidationFailure) {
                try validator.process(batch)
                previous = batch.hash
            } catch {
                guard !error.reason.isEmpty else { violated(name, "a validation failure without a reason") }
                return
            }
        }
    }

    /// Four batches of a real database (page size 512) with their changesets
    /// from SQLite's session extension, and variants of them.
    public static var seeds: [[UInt8]] {
        let batches = (try? realBatches()) ?? []
        func seed(_ flags: UInt8, _ list: [Batch]) -> [UInt8] {
            var out = [flags]
            for b in list {
                let bytes = b.serializedBytes()
                out += [UInt8(bytes.count >> 8), UInt8(bytes.count & 0xFF)] + bytes
            }
            return out
        }
        var seeds = [seed(0, batches), seed(0, Array(batches.prefix(1)))]
        if batches.count == 4 {
            var conflicting = batches[1]
            conflicting.changeset = batches[0].changeset  // the inserts again: rows already there
            seeds.append(seed(0, [batches[0], conflicting]))
            var hostile = batches[0]
            hostile.schema.append(SchemaObject(type: "table", name: "q", tableName: "q", sql: "CREATE TABLE q AS SELECT 1"))
            seeds.append(seed(0, [hostile]))
            seeds.append(seed(1, [batches[0]]))
        }
        return seeds
    }

    static func realBatches() throws -> [Batch] {
        let folder = scratchDirectory("validator-seed")
        emptyDirectory(folder)
        defer { emptyDirectory(folder) }
        let path = folder + "/app.sqlite"
        let c = try Connection(path: path)
        try c.execute("PRAGMA page_size=512; PRAGMA journal_mode=DELETE")
        let transactions = [
            """
            CREATE TABLE t(id INTEGER PRIMARY KEY, x TEXT, y BLOB, z REAL);
            CREATE INDEX t_x ON t(x);
            CREATE TABLE kv(k TEXT PRIMARY KEY, v) WITHOUT ROWID;
            CREATE TABLE log(line);
            CREATE VIEW big AS SELECT * FROM t WHERE z > 1;
            CREATE TRIGGER t_log AFTER INSERT ON t BEGIN INSERT INTO log VALUES (new.x); END;
            INSERT INTO t VALUES (1, 'one', x'01ff', 1.5), (2, 'two', NULL, -0.0), (3, NULL, x'', 1e308);
            INSERT INTO kv VALUES ('a', 1), ('b', 'text');
            """,
            "UPDATE t SET x = 'uno' WHERE id = 1; DELETE FROM t WHERE id = 2; INSERT INTO kv VALUES ('c', x'00'); DELETE FROM kv WHERE k = 'a';",
            // A session does not follow ADD COLUMN within itself: the schema change gets a batch of its own.
            "ALTER TABLE t ADD COLUMN w INTEGER DEFAULT 7; DROP VIEW big;",
            // Rows of t from before the ADD COLUMN stay as they are: this SQLite's session gives
            // their old w as NULL, not the default (SyndDB's capture reads it as the default).
            "INSERT INTO t(id, x) VALUES (4, 'four'), (5, 'five'); UPDATE t SET w = 9 WHERE id = 4; DELETE FROM t WHERE id = 5; UPDATE kv SET v = 2 WHERE k = 'b';",
        ]
        var batches: [Batch] = []
        var schemaBefore: [SchemaObject] = []
        for sql in transactions {
            var session: OpaquePointer?
            guard sqlite3session_create(c.handle, "main", &session) == SQLITE_OK, let session else { throw ProtocolError("no session") }
            defer { sqlite3session_delete(session) }
            sqlite3session_attach(session, nil)
            try c.execute("BEGIN; \(sql) COMMIT;")
            var n: Int32 = 0
            var p: UnsafeMutableRawPointer?
            guard sqlite3session_changeset(session, &n, &p) == SQLITE_OK else { throw ProtocolError("no changeset") }
            defer { sqlite3_free(p) }
            var batch = Batch()
            batch.database = "app"
            batch.changeset = n > 0 ? Array(UnsafeRawBufferPointer(start: p, count: Int(n))) : []
            let schema = try c.query(SchemaMigration.query(schema: "")).map {
                SchemaObject(type: $0[0].string ?? "", name: $0[1].string ?? "", tableName: $0[2].string ?? "", sql: $0[3].string ?? "")
            }
            batch.schemaChanged = schema != schemaBefore
            if batch.schemaChanged { batch.schema = schema }
            schemaBefore = schema
            batch.unauditedTables = ["log"]
            let file = try readFile(path)
            batch.pageSize = 512
            batch.pageCount = UInt32(file.count / 512)
            for i in 0..<file.count / 512 {
                let start = i * 512
                batch.pages.append(Page(number: UInt32(i + 1), data: Array(file[start..<start + 512])))
            }
            batches.append(batch)
        }
        return batches
    }

    static func readFile(_ path: String) throws -> [UInt8] {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw ProtocolError("cannot open \(path)") }
        defer { close(fd) }
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            guard n > 0 else { break }
            out += buffer[0..<n]
        }
        return out
    }
}
