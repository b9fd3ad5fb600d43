import ArgumentParser
import Foundation
import SyndDB

/// `synd import FILE DB`: a local SQLite file as a new database.
struct ImportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Upload a local SQLite file as a new database.",
        discussion: """
            Goes through SQL, so the sealed history records it: the schema in one commit, each table's rows \
            (rowids, types and bytes as stored) in commits of about --batch-mb, then indexes, triggers and \
            views. Rows of tables with a primary key are in the changesets, and `synd validate` checks them. \
            DB must be new (or empty). Virtual tables are not copied.
            """)

    @Option(help: "Sequencer URL (default: $SYNDDB_SEQUENCER).")
    var sequencer: String?

    @Option(help: "Megabytes of rows per commit.")
    var batchMb = 8

    @Argument(help: "The SQLite file to read.")
    var file: String

    @Argument(help: "Name of the new database.")
    var db: String

    func run() throws {
        let url = try sequencerURL(sequencer)
        guard (1...1024).contains(batchMb) else { throw CLIError("--batch-mb \(batchMb) is invalid: use 1...1024") }
        let progress = TransferProgress("importing \(file)", unit: "rows")
        let started = ContinuousClock.now
        do {
            let s = try DatabaseTransfer.importFile(file, as: db, sequencer: url, batchBytes: batchMb << 20, progress: progress.callback)
            progress.finish()
            let seconds = (ContinuousClock.now - started).seconds
            print("imported \(file) as '\(db)': \(s.tables) tables, \(s.rows) rows in \(s.commits) commits (now version \(s.version)) in \(String(format: "%.2f", seconds)) s")
        } catch {
            progress.finish()
            throw CLIError("cannot import \(file): \(error)")
        }
    }
}
