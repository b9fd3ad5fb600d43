import ArgumentParser
import Foundation
import SyndDB

/// `synd fork SRC DST`: a new database from a version of another.
struct ForkCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fork",
        abstract: "Create a new database from a version of another (default: its latest).",
        discussion: """
            Reads SRC at one version (--version, --at, or the latest when the fork starts) and copies it into \
            DST as `synd import` does: DST gets a history of its own, sealed and validated like any other.
            """)

    @Option(help: "Sequencer URL (default: $SYNDDB_SEQUENCER).")
    var sequencer: String?

    @OptionGroup var past: PastStateOptions

    @Option(help: "Megabytes of rows per commit.")
    var batchMb = 8

    @Argument(help: "Database to copy.")
    var source: String

    @Argument(help: "Name of the new database.")
    var target: String

    func run() throws {
        let url = try sequencerURL(sequencer)
        guard (1...1024).contains(batchMb) else { throw CLIError("--batch-mb \(batchMb) is invalid: use 1...1024") }
        let progress = TransferProgress("forking \(source)", unit: "rows")
        do {
            let s = try DatabaseTransfer.fork(source, to: target, sequencer: url, asOf: try past.state(), batchBytes: batchMb << 20,
                                              progress: progress.callback)
            progress.finish()
            print("forked '\(source)' version \(s.sourceVersion) into '\(target)': \(s.tables) tables, \(s.rows) rows in \(s.commits) commits (now version \(s.version))")
        } catch {
            progress.finish()
            throw CLIError("cannot fork '\(source)': \(error)")
        }
    }
}
