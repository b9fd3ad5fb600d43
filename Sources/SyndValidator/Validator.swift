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
    public private(set) var unauditedTables: Set<String> = []
    private var previousHash = BatchSeal.genesis
    private let physical: PhysicalReplica
    private let logical: LogicalReplica
    /// Functions of the writer's application that its schema calls (see `StandInFunctions`).
    private let standIns = StandInFunctions()

    /// - Parameter directory: where the two replicas are kept (created if missing).
    public init(directory: String, publicKey: [UInt8], rules: [String] = [], limits: ReplicaLimits = ReplicaLimits()) throws {
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
                Keep a validator following (`synd validate --follow`), or raise --retain
                """)
        }
        if let problem = BatchSeal.problem(with: batch, expectedVersion: expected, previousHash: previousHash, publicKey: publicKey) {
            throw ValidationFailure(version: expected, reason: problem)
        }
        do {
            try physical.apply(batch)
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
        try compare(at: batch.version)
        self.previousHash = batch.hash
        version = batch.version
    }

    private func compare(at version: UInt64) throws(ValidationFailure) {
        sentry.reset()
        do {
            let pages = try physical.open()
            sentry.attach(pages)
            try standIns.install(on: pages)
            try standIns.run(on: [pages, logical.connection]) { try compare(pages, at: version) }
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

    /// Schemas and tables; repeated from the start when it names a function to stand in for.
    private func compare(_ pages: Connection, at version: UInt64) throws {
        if pages.isAutocommit, try pages.scalar("PRAGMA quick_check")?.string != "ok" {
            throw ValidationFailure(version: version, reason: "the page images do not form a valid SQLite database (quick_check failed)")
        }
        // Same objects and statements; creation order may differ after rebuilds.
        func ordered(_ s: [SchemaObject]) -> [SchemaObject] { s.sorted { ($0.type, $0.name) < ($1.type, $1.name) } }
        let physicalSchema = ordered(try logical.schema(of: pages))
        let logicalSchema = ordered(try logical.schema())
        if physicalSchema != logicalSchema {
            let p = Set(physicalSchema.map(\.sql)), l = Set(logicalSchema.map(\.sql))
            throw ValidationFailure(
                version: version, reason: "schemas differ",
                expected: p.subtracting(l).sorted().joined(separator: "; "), actual: l.subtracting(p).sorted().joined(separator: "; "))
        }
        // A virtual table's rows are in its shadow tables (compared as tables) or not in the file.
        for table in physicalSchema where table.type == "table" && !table.isVirtualTable {
            try compareTable(table.name, pages, at: version)
        }
    }

    private func compareTable(_ table: String, _ pages: Connection, at version: UInt64) throws {
        let quoted = table.quotedIdentifier
        // Generated columns (hidden 2 and 3) are in no changeset: the logical
        // replica computes them. They are compared unless the schema calls a
        // function the validator only has a stand-in for.
        let info = try pages.query("PRAGMA table_xinfo(\(quoted))").filter { row in
            let hidden = row[6].int64 ?? 0
            return hidden == 0 || (standIns.names.isEmpty && (hidden == 2 || hidden == 3))
        }
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
        let expected = try pages.query(sql).filter(keyed)
        let actual = try logical.connection.query(sql).filter(keyed)
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
    }
}

/// Where and why a history failed validation.
public struct ValidationFailure: Error, CustomStringConvertible {
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
