import ArgumentParser
import SyndDB
import SyndSQLite

struct SQLCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sql", abstract: "Run SQL statements on a database in a sequencer and print the rows (tab-separated).")

    @Option(help: "Sequencer URL, e.g. http://127.0.0.1:8433 (default: $SYNDDB_SEQUENCER).")
    var sequencer: String?

    @Flag(help: "Open read-only (no writer lease).")
    var readOnly = false

    @OptionGroup var past: PastStateOptions

    @Argument(help: "Database name.")
    var database: String

    @Argument(help: "SQL statements, run one after another.")
    var statements: [String]

    func run() throws {
        let url = try sequencerURL(sequencer)
        var options = DatabaseOptions()
        options.readOnly = readOnly
        options.asOf = try past.state()
        do {
            let db = try Database.open(database, sequencer: url, options: options)
            for sql in statements {
                for row in try db.query(sql) {
                    print(row.map(\.description).joined(separator: "\t"))
                }
            }
        } catch let error as SQLiteError {
            throw CLIError(error.description)
        }
    }
}
