import ArgumentParser
import CSQLite
import Dispatch
import SyndCapture
import SyndDB
import SyndProtocol
import SyndValidator

struct RevertCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "revert",
        abstract: "Undo one batch by committing the inverse of its changeset as a new transaction.",
        discussion: "History stays append-only: the revert is a new, normal, sealed batch. It stops if a row the batch changed has changed since.")

    @Option(help: "Sequencer URL (default: $SYNDDB_SEQUENCER).")
    var sequencer: String?

    @Argument(help: "Database name.")
    var db: String

    @Option(help: "The version to undo.")
    var version: UInt64

    func run() async throws {
        let url = try sequencerURL(sequencer)
        let target = version
        let found = BatchBox()
        try await LedgerClient(url: url).batches(database: db, from: target) { batch in
            if batch.version == target { found.batch = batch }
            return false
        }
        guard let batch = found.batch else { throw CLIError("'\(db)' has no version \(target)") }
        guard !batch.schemaChanged else {
            throw CLIError("version \(target) changed the schema; a changeset cannot undo DDL, so revert it by hand")
        }
        let name = db
        let result: Result<UInt64, any Error> = await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(returning: Result { try Self.revert(batch.changeset, database: name, url: url) })
            }
        }
        let newVersion = try result.get()
        print("reverted version \(target) of '\(db)' as version \(newVersion)")
    }

    static func revert(_ changeset: [UInt8], database: String, url: String) throws -> UInt64 {
        if let problem = ChangesetFormat.problem(in: changeset) { throw CLIError("cannot invert the changeset: \(problem)") }
        var input = changeset
        var n: Int32 = 0
        var p: UnsafeMutableRawPointer?
        let rc = input.withUnsafeMutableBytes { sqlite3changeset_invert(Int32($0.count), $0.baseAddress, &n, &p) }
        guard rc == SQLITE_OK else { throw CLIError("cannot invert the changeset (\(rc))") }
        defer { sqlite3_free(p) }
        let inverse = p.map { Array(UnsafeRawBufferPointer(start: $0, count: Int(n))) } ?? []
        let db = try Database.open(database, sequencer: url)
        // The inverse already holds what triggers and cascades did.
        try db.execute("PRAGMA foreign_keys=OFF")
        _ = synd_linked_enable_triggers(db.connection.handle, 0)
        do {
            try db.transaction { try LogicalReplica.apply(inverse, to: db.connection) }
        } catch let conflict as ReplicaConflict {
            throw CLIError("cannot revert: \(conflict.description); the rows changed after that version")
        }
        return db.statistics.version
    }
}

final class BatchBox: @unchecked Sendable {
    // Safe: written by the stream handler, read after the stream has ended.
    var batch: Batch?
}
