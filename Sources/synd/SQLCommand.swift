import ArgumentParser
import SyndDB
import SyndProtocol
import SyndSQLite

struct SQLCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sql", abstract: "Run SQL statements on a database in a sequencer and print the rows (tab-separated).")

    @Option(help: "Sequencer URL, e.g. http://127.0.0.1:8433 (default: $SYNDDB_SEQUENCER).")
    var sequencer: String?

    @Flag(help: "Open read-only (no writer lease).")
    var readOnly = false

    @Option(name: .customLong("version"), help: "Read the database as of this version (read-only; `synd log` lists versions).")
    var atVersion: UInt64?

    @Option(name: .customLong("at"), help: "Read the database as of this time: RFC 3339 (2026-11-23T10:15:30Z) or Unix milliseconds (read-only).")
    var atTime: String?

    @Argument(help: "Database name.")
    var database: String

    @Argument(help: "SQL statements, run one after another.")
    var statements: [String]

    func run() throws {
        let url = try sequencerURL(sequencer)
        var options = DatabaseOptions()
        options.readOnly = readOnly
        switch (atVersion, atTime) {
        case (let v?, nil): options.asOf = .version(v)
        case (nil, let t?):
            guard let ms = UnixTime.parse(t) else {
                throw CLIError("--at \(t) is not a time: use RFC 3339 with an offset (2026-11-23T10:15:30Z) or Unix milliseconds")
            }
            options.asOf = .time(unixMilliseconds: ms)
        case (nil, nil): break
        case (_?, _?): throw CLIError("--version and --at both given: read a past state by version or by time, not both")
        }
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
