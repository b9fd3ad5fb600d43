import Dispatch
import Synchronization
import SyndProtocol
import SyndSQLite

#if canImport(Glibc)
import Glibc
#endif

/// Stores written before the log: one SQLite file, `store.sqlite`, with a row
/// per page version and per batch. Imported into a new log once, the first
/// time a sequencer of this version opens the folder.
enum LegacyStoreImport {
    /// Copies every database, epoch ceiling and kept batch (with its seal, so
    /// chains go on unchanged) from `path` into a log in `logDirectory`. The
    /// log is built aside and renamed into place when complete, so a crash
    /// during the import only means it runs again. Returns what it did.
    static func run(from path: String, into logDirectory: String) throws -> [String] {
        let staging = logDirectory + ".importing"
        if let leftovers = try? LogReplay.segmentNumbers(in: staging) {
            for n in leftovers { unlink(staging + "/" + LogSegment.fileName(n)) }
            rmdir(staging)
        }
        let legacy = try Connection(path: path)
        try legacy.execute("PRAGMA busy_timeout=5000")
        var options = LogStoreOptions()
        options.compactAutomatically = false  // the folder is renamed once complete
        let log = try LogStore(directory: staging, options: options)
        let outstanding = AppendsInFlight()
        var batches = 0
        func append(_ record: StoreRecord) throws {
            outstanding.enter()
            log.append(record) { outstanding.leave($0) }
            // Bounded memory: wait for what is on its way now and then.
            if outstanding.count >= 256 { try outstanding.waitAll() }
        }
        let databases = try legacy.query("SELECT id, name, version, oldest_version, lease_epoch FROM databases ORDER BY id")
        for d in databases {
            guard let id = d[0].int64, let name = d[1].string, let head = d[2].int64 else { continue }
            try append(.create(database: id, name: name))
            try append(.epochCeiling(database: id, ceiling: UInt64(d[4].int64 ?? 0)))
            guard head > 0, let first = try legacy.scalar("SELECT min(version) FROM commits WHERE db=?", [id])?.int64 else { continue }
            for version in first...head {
                let rows = try legacy.query("""
                    SELECT txn_id, page_size, page_count, committed_at_ms, changeset, schema_changed, schema, unaudited,
                           previous_hash, pages_hash, changeset_hash, schema_hash, hash, signature
                    FROM commits WHERE db=? AND version=?
                    """, [id, version])
                guard let r = rows.first else {
                    throw SequencerError(.dataLoss, "cannot import \(path): batch \(version) of '\(name)' is missing")
                }
                func blob(_ v: Value) -> [UInt8] { if case .blob(let b) = v { b } else { [] } }
                var b = Batch()
                b.database = name
                b.version = UInt64(version)
                b.pageSize = UInt32(r[1].int64 ?? 0)
                b.pageCount = UInt32(r[2].int64 ?? 0)
                b.committedAtMs = UInt64(r[3].int64 ?? 0)
                b.changeset = blob(r[4])
                b.schemaChanged = (r[5].int64 ?? 0) != 0
                b.schema = decodeSchema(blob(r[6]))
                b.unauditedTables = decodeNames(r[7])
                b.previousHash = blob(r[8])
                b.pagesHash = blob(r[9])
                b.changesetHash = blob(r[10])
                b.schemaHash = blob(r[11])
                b.hash = blob(r[12])
                b.signature = blob(r[13])
                // Versions below the retention window lost some page rows; they are kept as the index had them.
                b.pages = try legacy.query(
                    "SELECT pgno, data, checksum FROM pages WHERE db=? AND version=? AND length(data) > 0 ORDER BY pgno", [id, version]
                ).map { p in
                    var page = Page()
                    page.number = UInt32(p[0].int64 ?? 0)
                    page.data = blob(p[1])
                    page.checksum = UInt32(truncatingIfNeeded: p[2].int64 ?? 0)
                    return page
                }
                let txnID = blob(r[0])
                let isDrop = b.pageCount == 0 && txnID.starts(with: Array("synddb-drop-".utf8))
                try append(isDrop ? .drop(database: id, txnID: txnID, batch: b) : .batch(database: id, txnID: txnID, batch: b))
                batches += 1
            }
            if let oldest = d[3].int64, oldest > first { try append(.prune(database: id, keepFrom: UInt64(oldest))) }
        }
        try outstanding.waitAll()
        guard rename(staging, logDirectory) == 0 else {
            throw SequencerError(.unavailable, "cannot move the imported log \(staging) to \(logDirectory): \(String(cString: strerror(errno)))")
        }
        let parent = String(logDirectory[..<(logDirectory.lastIndex(of: "/") ?? logDirectory.startIndex)])
        try syncDirectory(parent.isEmpty ? "." : parent)
        return ["imported \(databases.count) database(s) and \(batches) batch(es) from \(path), written by an earlier version, into \(logDirectory); the old file is no longer read and can be removed"]
    }

    /// The schema column: repeated SchemaObject messages (field 1).
    static func decodeSchema(_ bytes: [UInt8]) -> [SchemaObject] {
        var r = ProtoReader(bytes)
        var out: [SchemaObject] = []
        while let (_, _) = try? r.nextField(), let o = try? r.message(SchemaObject.self) { out.append(o) }
        return out
    }

    /// The unaudited column: repeated strings (field 1) in a BLOB, or, from
    /// older stores, names joined by U+001F in TEXT.
    static func decodeNames(_ value: Value) -> [String] {
        switch value {
        case .blob(let bytes):
            var r = ProtoReader(bytes)
            var names: [String] = []
            while let (field, wire) = try? r.nextField() {
                if field == 1, wire == .lengthDelimited, let name = try? r.string() {
                    names.append(name)
                } else if (try? r.skip(wire)) == nil {
                    break
                }
            }
            return names
        case .text(let joined):
            return joined.split(separator: "\u{1F}").map(String.init)
        default:
            return []
        }
    }
}

/// Counts appends on their way and waits for them, keeping the first failure.
private final class AppendsInFlight: Sendable {
    private let state = Mutex<(pending: Int, failure: SequencerError?)>((0, nil))
    private let done = DispatchSemaphore(value: 0)

    var count: Int { state.withLock { $0.pending } }

    func enter() { state.withLock { $0.pending += 1 } }

    func leave(_ result: Result<Void, SequencerError>) {
        state.withLock { s in
            s.pending -= 1
            if case .failure(let e) = result, s.failure == nil { s.failure = e }
        }
        done.signal()
    }

    func waitAll() throws(SequencerError) {
        while state.withLock({ $0.pending }) > 0 { done.wait() }
        if let failure = state.withLock({ $0.failure }) { throw failure }
    }
}
