import CSQLite
import Foundation
import SyndCapture
import SyndLedger
import SyndProtocol
import SyndSQLite

/// Checks a database's history batch by batch: the seal (signature, hash
/// chain, content hashes), then that the page images and the changesets
/// describe the same database, then the user's rules.
///
/// Every statement on the replicas runs under one `ReplicaGuard`: schema text
/// from a batch only as plain definitions, and each statement within
/// `limits.statementTimeout`.
public final class Validator {
    public let publicKey: [UInt8]
    public let rules: [String]
    public let sentry: ReplicaGuard
    public private(set) var version: UInt64 = 0
    public internal(set) var unauditedTables: Set<String> = []
    private var previousHash = BatchSeal.genesis
    private let physical: PhysicalReplica
    private let logical: LogicalReplica
    /// Functions of the writer's application that its schema calls (see `StandInFunctions`).
    private let standIns = StandInFunctions()
    public let fullCheck: FullCheck
    /// Which rows each page holds, kept across batches; nil until the next full check.
    private var tracker: PageTracker?
    /// How many stand-in functions there were then (more change which columns are compared).
    private var trackedStandIns = 0
    private var lastFullCheck: (end: ContinuousClock.Instant, took: Duration)?
    /// Batches checked by comparing every table, and by comparing only the rows they changed.
    /// The snapshot the replicas were seeded from (0: none, the history from its start).
    public private(set) var snapshotVersion: UInt64 = 0
    /// A snapshot's pages so far, while its parts arrive.
    private var snapshotPages: BatchSeal.SnapshotPages?
    /// The first part of the snapshot arriving: every later part must describe the same snapshot.
    private var snapshotFirst: Batch?
    public private(set) var fullChecks = 0
    /// Signatures checked on a thread of their own (`deferSignatures`), else inline.
    private let signatures: SignatureChecks?
    /// The physical replica's connection, kept while the schema stays, and its statements.
    private var pagesConnection: Connection?
    var pagesStatements: [String: Statement] = [:]
    var logicalStatements: [String: Statement] = [:]
    /// Why whole tables were compared, and how often.
    public private(set) var fullCheckReasons: [String: Int] = [:]
    public private(set) var incrementalChecks = 0

    /// When the validator compares every table instead of the rows a batch changed.
    public enum FullCheck: Sendable, Equatable {
        /// After every batch (the work grows with the database).
        case everyBatch
        /// At the first batch, after schema changes, and otherwise often enough
        /// to spend about this share of the time on it (0.05: 5%).
        case share(Double)
        /// Only when the rows a batch changed cannot be told apart (the first
        /// batch, schema changes, a moved root): for tests and benchmarks of
        /// the incremental check.
        case whenNeeded
    }

    /// - Parameter directory: where the two replicas are kept (created if missing).
    public init(
        directory: String, publicKey: [UInt8], rules: [String] = [], limits: ReplicaLimits = ReplicaLimits(), fullCheck: FullCheck = .share(0.05),
        deferSignatures: Bool = false
    ) throws {
        self.fullCheck = fullCheck
        signatures = deferSignatures ? SignatureChecks(publicKey: publicKey) : nil
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        self.publicKey = publicKey
        self.rules = rules
        sentry = ReplicaGuard(limits: limits)
        physical = try PhysicalReplica(path: directory + "/physical.sqlite")
        logical = try LogicalReplica(path: directory + "/logical.sqlite", sentry: sentry, standIns: standIns)
    }

    /// Checks the next batch; throws the first problem found.
    ///
    /// The first batch is version 1, or a drop batch (page count 0): a dropped
    /// database's history before the drop is deleted, so its chain starts
    /// there, at a database known to be empty. A drop batch later on empties
    /// both replicas (its schema is empty).
    public func process(_ batch: Batch) throws(ValidationFailure) {
        do {
            try take(batch)
        } catch {
            // A signature still being checked that is bad at an earlier version is the first failure.
            if let signatures {
                do throws(ValidationFailure) { try signatures.wait() } catch let bad where bad.version < error.version { throw bad } catch {}
            }
            throw error
        }
    }

    private func take(_ batch: Batch) throws(ValidationFailure) {
        if let failure = signatures?.firstFailure { throw failure }
        if batch.heartbeat {
            // The stream is idle: settle the signatures still being checked.
            try finish()
            return
        }
        if batch.snapshot {
            try seed(batch)
            return
        }
        if snapshotPages != nil {
            throw ValidationFailure(version: batch.version, reason: "the stream left a snapshot unfinished (no last part)")
        }
        var expected = version + 1
        var previousHash = self.previousHash
        if version == 0, batch.version > 1, batch.pageCount == 0 {
            expected = batch.version
            previousHash = batch.previousHash
        }
        if version == 0, batch.version > 1, batch.pageCount != 0 {
            throw ValidationFailure(version: 1, reason: """
                the sequencer keeps this database's batches from version \(batch.version) on: older ones were pruned \
                by its retention window (`synd sequencer --retain`), so its history cannot be validated from the start. \
                Start from a snapshot (`synd validate --from-snapshot`), keep a validator following \
                (`synd validate --follow`), or raise --retain
                """)
        }
        if let signatures {
            if let problem = BatchSeal.problem(with: batch, expectedVersion: expected, previousHash: previousHash, checkingSignature: false) {
                throw ValidationFailure(version: expected, reason: problem)
            }
            signatures.check(version: batch.version, hash: batch.hash, signature: batch.signature)
        } else if let problem = BatchSeal.problem(with: batch, expectedVersion: expected, previousHash: previousHash, publicKey: publicKey) {
            throw ValidationFailure(version: expected, reason: problem)
        }
        let changed: PhysicalReplica.Changed
        do {
            // Old bytes only where the page map needs them: page 1 and the pages it tracks.
            let tracker = self.tracker
            changed = try physical.apply(
                batch, needsOld: tracker.map { t in { $0 == 1 || t.isTracked($0) } }, cut: { range in tracker?.tracked(in: range) ?? [] })
        } catch {
            throw ValidationFailure(version: batch.version, reason: "cannot write the physical replica: \(error)")
        }
        do {
            try logical.apply(batch)
        } catch let conflict as ReplicaConflict {
            throw ValidationFailure(version: batch.version, reason: "the changeset does not apply to the logical replica: \(conflict)", table: conflict.table)
        } catch let refusal as ReplicaRefusal {
            throw ValidationFailure(version: batch.version, reason: refusal.description)
        } catch {
            throw ValidationFailure(version: batch.version, reason: "the batch does not apply to the logical replica: \(error)")
        }
        try compare(batch, changed: changed)
        self.previousHash = batch.hash
        version = batch.version
    }

    /// Waits for the signatures still being checked (`deferSignatures`); throws
    /// the first bad one. Call it before taking the history as verified.
    public func finish() throws(ValidationFailure) {
        try signatures?.wait()
        if let first = snapshotFirst {
            throw ValidationFailure(version: first.version, reason: "the stream ended in the middle of the snapshot at version \(first.version)")
        }
    }

    /// The physical replica's connection, opened anew when `fresh` (a full check reloads the schema).
    private func pagesConnection(fresh: Bool) throws -> Connection {
        if !fresh, let pages = pagesConnection {
            // Pages were written under it: nothing it cached may be read again.
            sqlite3_db_release_memory(pages.handle)
            return pages
        }
        pagesConnection = nil
        pagesStatements = [:]
        logicalStatements = [:]
        let pages = try physical.open()
        sentry.attach(pages)
        try standIns.install(on: pages)
        pagesConnection = pages
        return pages
    }

    private func compare(_ batch: Batch, changed: PhysicalReplica.Changed) throws(ValidationFailure) {
        let version = batch.version
        sentry.reset()
        do {
            let header = try physical.read(1)
            let whole: String? = if tracker == nil { "no page map yet" }
                else if header == nil { "an empty database" }
                else if batch.schemaChanged { "the schema changed" }
                else if isFullCheckDue() { "its turn" }
                else if standIns.names.count != trackedStandIns { "a new stand-in function" }
                else if !Self.headerAgrees(header!, batch) { "page 1's header disagrees with the batch" }
                else if Self.usableSize(header!) != tracker!.usableSize || TextEncoding(rawValue: BTreePage.uint32(header!, 56)) != tracker!.encoding { "the file format changed" }
                else if tracker!.touchesSchema(changed) { "the schema's pages changed" }
                else { nil }
            if let why = whole { fullCheckReasons[why, default: 0] += 1 }
            let pages = try pagesConnection(fresh: whole != nil)
            if whole == nil, let tracker {
                // Rebuilt after any failure: the tracker may have taken in part of the batch.
                self.tracker = nil
                let changes: PageTracker.Changes
                let visible = Self.visiblePages(header!, batch)
                var seen = changed
                if visible < batch.pageCount {
                    for (p, c) in changed where p > visible { seen[p] = (c.old, nil) }
                    for p in tracker.tracked(in: (visible + 1)...batch.pageCount) where seen[p] == nil { seen[p] = (try physical.read(p), nil) }
                }
                do {
                    changes = try tracker.apply(changed: seen, visible: visible, read: physical.read)
                } catch let error as PageFormatError {
                    throw ValidationFailure(version: version, reason: "the page images are not a valid database: \(error)")
                }
                let keys = Self.changesetKeys(batch.changeset)
                // Neither schema changed (the batch says so for the changesets; page 1 and the schema's pages for the images).
                try standIns.run(on: [pages, logical.connection]) {
                    try compareChanged(changes, changeset: keys, tables: tracker.tables, pages, logical.connection, at: version)
                }
                self.tracker = tracker
                incrementalChecks += 1
            } else {
                let start = ContinuousClock.now
                try standIns.run(on: [pages, logical.connection]) { try compare(pages, at: version) }
                try rebuildTracker(pages, at: version)
                fullChecks += 1
                lastFullCheck = (ContinuousClock.now, ContinuousClock.now - start)
            }
            // The user's rules run as written: a function they call is never stood in for.
            for rule in rules {
                let ok = try pages.scalar(rule)
                if ok != .integer(1) {
                    throw ValidationFailure(version: version, reason: "rule failed: \(rule) returned \(ok?.description ?? "no row")")
                }
            }
        } catch let failure as ValidationFailure {
            throw failure
        } catch {
            if let stopped = sentry.stopped { throw ValidationFailure(version: version, reason: stopped.description) }
            throw ValidationFailure(version: version, reason: "comparing the replicas failed: \(error)")
        }
    }

    /// Takes in one part of a snapshot. Only at the start: the replicas are
    /// seeded with the database at the snapshot's version, checked against the
    /// sequencer's signature, and the chain goes on from that batch's hash.
    /// What came before the snapshot is the sequencer's word, as signed.
    private func seed(_ part: Batch) throws(ValidationFailure) {
        guard version == 0, snapshotVersion == 0 else {
            throw ValidationFailure(version: part.version, reason: "a snapshot arrived after batches had been checked")
        }
        if let first = snapshotFirst {
            guard part.database == first.database, part.version == first.version, part.pageSize == first.pageSize, part.pageCount == first.pageCount else {
                throw ValidationFailure(version: part.version, reason: "a part of the snapshot describes another snapshot than its first part")
            }
        } else {
            var first = part
            first.pages = []
            snapshotFirst = first
        }
        if snapshotPages == nil {
            snapshotPages = BatchSeal.SnapshotPages()
            do {
                try physical.start(pageSize: part.pageSize, pageCount: part.pageCount)
            } catch {
                throw ValidationFailure(version: part.version, reason: "cannot start the physical replica from the snapshot: \(error)")
            }
        }
        for page in part.pages {
            guard snapshotPages!.add(page), page.data.count == Int(part.pageSize), page.number <= part.pageCount else {
                throw ValidationFailure(version: part.version, reason: "the snapshot's page \(page.number) is out of order, past its page count, or the wrong size")
            }
        }
        do {
            try physical.write(part.pages)
        } catch {
            throw ValidationFailure(version: part.version, reason: "cannot write the physical replica: \(error)")
        }
        guard part.snapshotLast else { return }
        guard snapshotPages!.next == part.pageCount + 1 else {
            throw ValidationFailure(version: part.version, reason: "the snapshot ended after \(snapshotPages!.next - 1) of its \(part.pageCount) pages")
        }
        let pagesHash = snapshotPages!.finish()
        snapshotPages = nil
        snapshotFirst = nil
        if let problem = BatchSeal.snapshotProblem(with: part, pagesHash: pagesHash, publicKey: publicKey) {
            throw ValidationFailure(version: part.version, reason: problem)
        }
        let start = ContinuousClock.now
        do {
            try logical.copy(from: physical.path)
            let pages = try physical.open()
            sentry.attach(pages)
            try rebuildTracker(pages, at: part.version)
            unauditedTables.formUnion(try logical.schema(of: pages).filter { $0.type == "table" && !$0.isVirtualTable }.map(\.name).filter {
                try pages.query("PRAGMA table_xinfo(\($0.quotedIdentifier))").allSatisfy { ($0[5].int64 ?? 0) == 0 }
            })
        } catch let failure as ValidationFailure {
            throw failure
        } catch {
            throw ValidationFailure(version: part.version, reason: "cannot seed the replicas from the snapshot: \(error)")
        }
        // The two replicas are one file: the first whole comparison can wait its turn.
        lastFullCheck = (ContinuousClock.now, ContinuousClock.now - start)
        snapshotVersion = part.version
        version = part.version
        previousHash = part.hash
    }

    private func isFullCheckDue() -> Bool {
        if fullCheck == .whenNeeded { return false }
        guard case .share(let share) = fullCheck, share > 0, let last = lastFullCheck else { return true }
        return ContinuousClock.now - last.end > last.took * (1 / share)
    }

    /// Page 1's header says what the batch says: its page size, and (where
    /// SQLite would trust it) a page count within the batch's. Otherwise SQLite reads the file
    /// otherwise than the tracker does, and only a full check will do.
    private static func headerAgrees(_ page1: [UInt8], _ batch: Batch) -> Bool {
        let size = Int(page1[16]) << 8 | Int(page1[17])
        guard (size == 1 ? 65536 : size) == Int(batch.pageSize) else { return false }
        let count = BTreePage.uint32(page1, 28)
        let trusted = count != 0 && page1[24..<28] == page1[92..<96]
        return !trusted || count <= batch.pageCount
    }

    /// The pages SQLite reads of the replica: a page count in the header that
    /// it trusts hides the pages after it (an auto_vacuum file keeps a few).
    private static func visiblePages(_ page1: [UInt8], _ batch: Batch) -> UInt32 {
        visiblePages(page1, pageCount: batch.pageCount)
    }

    private static func visiblePages(_ page1: [UInt8], pageCount: UInt32) -> UInt32 {
        let count = BTreePage.uint32(page1, 28)
        return count != 0 && page1[24..<28] == page1[92..<96] ? min(count, pageCount) : pageCount
    }

    private static func usableSize(_ page1: [UInt8]) -> Int {
        (Int(page1[16]) << 8 | Int(page1[17]) == 1 ? 65536 : Int(page1[16]) << 8 | Int(page1[17])) - Int(page1[20])
    }

    /// Learns which rows every page holds, after a full check.
    private func rebuildTracker(_ pages: Connection, at version: UInt64) throws {
        tracker = nil
        guard let header = try physical.read(1), let encoding = TextEncoding(rawValue: BTreePage.uint32(header, 56)) else { return }
        let tables = try TableKeys.all(on: pages) { _, info in comparedColumns(info) }
        trackedStandIns = standIns.names.count
        do {
            // Byte 52: the largest root page, non-zero when the file keeps auto_vacuum's pointer map.
            let autoVacuum = BTreePage.uint32(header, 52) != 0
            tracker = try PageTracker(
                tables: tables, usableSize: Self.usableSize(header), encoding: encoding,
                pointerMap: autoVacuum ? Int(physical.pageSize) : nil, pageCount: Self.visiblePages(header, pageCount: physical.pageCount), read: physical.read)
        } catch let error as PageFormatError {
            throw ValidationFailure(version: version, reason: "the page images are not a valid database: \(error)")
        }
    }

    /// Schemas and tables; repeated from the start when it names a function to stand in for.
    private func compare(_ pages: Connection, at version: UInt64) throws {
        // integrity_check also finds an index that disagrees with its table;
        // it needs the index's real collation, so with an application's
        // collation (a byte-order stand-in here) quick_check does what it can.
        let collations = try pages.scalar("SELECT count(*) FROM sqlite_schema WHERE sql LIKE '%COLLATE%'")?.int64 ?? 1
        let check = collations == 0 && standIns.names.isEmpty ? "integrity_check" : "quick_check"
        if pages.isAutocommit, try pages.scalar("PRAGMA \(check)")?.string != "ok" {
            throw ValidationFailure(version: version, reason: "the page images do not form a valid SQLite database (\(check) failed)")
        }
        try compareSchemas(pages, at: version)
        let physicalSchema = try logical.schema(of: pages)
        // A virtual table's rows are in its shadow tables (compared as tables) or not in the file.
        for table in physicalSchema where table.type == "table" && !table.isVirtualTable {
            try compareTable(table.name, pages, at: version)
        }
    }

    /// Same objects and statements; creation order may differ after rebuilds.
    func compareSchemas(_ pages: Connection, at version: UInt64) throws {
        func ordered(_ s: [SchemaObject]) -> [SchemaObject] { s.sorted { ($0.type, $0.name) < ($1.type, $1.name) } }
        let physicalSchema = ordered(try logical.schema(of: pages))
        let logicalSchema = ordered(try logical.schema())
        if physicalSchema != logicalSchema {
            let p = Set(physicalSchema.map(\.sql)), l = Set(logicalSchema.map(\.sql))
            throw ValidationFailure(
                version: version, reason: "schemas differ",
                expected: p.subtracting(l).sorted().joined(separator: "; "), actual: l.subtracting(p).sorted().joined(separator: "; "))
        }
    }

    /// The columns compared for a table, from its `PRAGMA table_xinfo` rows.
    /// Generated columns (hidden 2 and 3) are in no changeset: the logical
    /// replica computes them. They are compared unless the schema calls a
    /// function the validator only has a stand-in for.
    func comparedColumns(_ xinfo: [[Value]]) -> [String] {
        comparedInfo(xinfo).map { $0[1].string ?? "?" }
    }

    private func comparedInfo(_ xinfo: [[Value]]) -> [[Value]] {
        xinfo.filter { row in
            let hidden = row[6].int64 ?? 0
            return hidden == 0 || (standIns.names.isEmpty && (hidden == 2 || hidden == 3))
        }
    }

    func compareTable(_ table: String, _ pages: Connection, at version: UInt64) throws {
        let quoted = table.quotedIdentifier
        let info = comparedInfo(try pages.query("PRAGMA table_xinfo(\(quoted))"))
        let pk = info.indices.filter { (info[$0][5].int64 ?? 0) > 0 }.sorted { (info[$0][5].int64 ?? 0) < (info[$1][5].int64 ?? 0) }
        let columns = info.map { $0[1].string ?? "?" }
        // Without a primary key (or with NULL in one) rows have no identity a
        // changeset can carry: those rows are reported as unaudited, not compared.
        guard !pk.isEmpty else {
            unauditedTables.insert(table)
            return
        }
        let order = (pk.isEmpty ? Array(0..<columns.count) : pk).map { String($0 + 1) }.joined(separator: ", ")
        let sql = "SELECT \(columns.map(\.quotedIdentifier).joined(separator: ", ")) FROM \(quoted) ORDER BY \(order)"
        let keyed = { (row: [Value]) in pk.allSatisfy { row[$0] != .null } }
        let allExpected = try pages.query(sql), allActual = try logical.connection.query(sql)
        let expected = allExpected.filter(keyed), actual = allActual.filter(keyed)
        // Rows with NULL in their key have no identity a changeset can carry: reported, not compared.
        if expected.count != allExpected.count || actual.count != allActual.count { unauditedTables.insert(table) }
        guard expected != actual else { return }
        func key(_ row: [Value]) -> [Value] { pk.isEmpty ? row : pk.map { row[$0] } }
        let e = Dictionary(expected.map { (key($0), $0) }, uniquingKeysWith: { a, _ in a })
        let a = Dictionary(actual.map { (key($0), $0) }, uniquingKeysWith: { a, _ in a })
        let keys = (expected + actual).map(key)
        for k in keys where e[k] != a[k] {
            func show(_ row: [Value]?) -> String {
                guard let row else { return "no row" }
                return "(" + zip(columns, row).map { "\($0)=\($1)" }.joined(separator: ", ") + ")"
            }
            throw ValidationFailure(
                version: version, reason: "page images and changesets disagree", table: table,
                key: k.map(\.description).joined(separator: ", "), expected: show(e[k]), actual: show(a[k]))
        }
        // Equal by key: the same rows, perhaps in another order (an application's collation), unless a key appears twice.
        guard e.count != expected.count || a.count != actual.count else { return }
        throw ValidationFailure(
            version: version, reason: "one side holds \(expected.count) rows and the other \(actual.count): a key appears twice", table: table,
            expected: "\(expected.count) rows", actual: "\(actual.count) rows")
    }
}

/// Where and why a history failed validation.
public struct ValidationFailure: Error, Sendable, CustomStringConvertible {
    public var version: UInt64
    public var reason: String
    public var table: String?
    public var key: String?
    /// From the page images (the physical replica).
    public var expected: String?
    /// From the changesets (the logical replica).
    public var actual: String?

    public init(version: UInt64, reason: String, table: String? = nil, key: String? = nil, expected: String? = nil, actual: String? = nil) {
        self.version = version
        self.reason = reason
        self.table = table
        self.key = key
        self.expected = expected
        self.actual = actual
    }

    public var description: String {
        var s = "version \(version): \(reason)"
        if let table { s += "\n  table:    \(table)" }
        if let key { s += "\n  key:      \(key)" }
        if let expected { s += "\n  expected: \(expected)  (page images)" }
        if let actual { s += "\n  actual:   \(actual)  (changesets)" }
        return s
    }
}
