import ArgumentParser
import Foundation
import SyndProtocol
import SyndValidator

struct LogCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "log", abstract: "Print a database's batch history, each changeset as SQL-like statements.")

    @Option(help: "Sequencer URL (default: $SYNDDB_SEQUENCER).")
    var sequencer: String?

    @Argument(help: "Database name.")
    var db: String

    @Option(help: "First version to print.")
    var from: UInt64 = 1

    func run() async throws {
        let url = try sequencerURL(sequencer)
        let printer = PrinterBox(try ChangesetText())
        let first = from
        // Column names need the schema from the oldest batch on (version 1, or the last drop).
        try await LedgerClient(url: url).batches(database: db, from: 0) { batch in
            printer.text.track(batch)
            guard batch.version >= first else { return true }
            // Milliseconds, as `at=` takes them: the time printed opens this version.
            let time = UnixTime.format(batch.committedAtMs)
            let bytes = batch.pages.reduce(0) { $0 + $1.data.count }
            let hash = batch.hash.prefix(8).map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
            if batch.pageCount == 0 {
                print("version \(batch.version)  \(time)  dropped: the database was emptied and its earlier history deleted  hash \(hash)")
                return true
            }
            print("version \(batch.version)  \(time)  \(batch.pages.count) pages  \(bytes) bytes  page_count \(batch.pageCount)  hash \(hash)")
            if batch.schemaChanged {
                print("  -- schema is now: \(batch.schema.filter { $0.type == "table" }.map(\.name).joined(separator: ", "))")
            }
            for statement in printer.text.statements(batch.changeset) { print("  " + statement) }
            if !batch.unauditedTables.isEmpty {
                print("  -- changed without a PRIMARY KEY (not in the changeset): \(batch.unauditedTables.joined(separator: ", "))")
            }
            return true
        }
    }
}

final class PrinterBox: @unchecked Sendable {
    // Safe: used by the stream handler, one message at a time.
    let text: ChangesetText
    init(_ text: ChangesetText) { self.text = text }
}
