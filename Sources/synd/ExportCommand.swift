import ArgumentParser
import Foundation
import SyndDB
import SyndProtocol
import SyndSQLite

/// `synd export DB FILE`: a database (or a past version of it) as a plain SQLite file.
struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write a database, or a past version of it, to a plain SQLite file that any SQLite opens.",
        discussion: """
            Copies every page of one version (the latest, or --version / --at) into FILE, which must not \
            exist. The copy is written beside FILE, checked with PRAGMA integrity_check, then renamed: a \
            failed export leaves no file. Writers may go on committing meanwhile; the file is the one version.
            """)

    @Option(help: "Sequencer URL (default: $SYNDDB_SEQUENCER).")
    var sequencer: String?

    @OptionGroup var past: PastStateOptions

    @Argument(help: "Database name.")
    var db: String

    @Argument(help: "The SQLite file to write.")
    var file: String

    func run() throws {
        let url = try sequencerURL(sequencer)
        let progress = TransferProgress("exporting \(db)", unit: "pages")
        let started = ContinuousClock.now
        do {
            let summary = try DatabaseTransfer.export(db, sequencer: url, to: file, asOf: try past.state(), progress: progress.callback)
            progress.finish()
            let seconds = (ContinuousClock.now - started).seconds
            print("exported '\(db)' version \(summary.version) to \(file): \(summary.pages) pages, \(megabytes(summary.bytes)) in \(String(format: "%.2f", seconds)) s; integrity_check ok")
        } catch {
            progress.finish()
            throw CLIError("cannot export '\(db)': \(error)")
        }
    }
}

func megabytes(_ bytes: Int) -> String { String(format: "%.1f MB", Double(bytes) / 1_000_000) }

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
