import ArgumentParser
import GRPCCore

/// `synd drop DB`: deletes a database on the sequencer.
struct DropCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "drop",
        abstract: "Delete a database: its pages and history are deleted on the sequencer.",
        discussion: """
            Refused while a writer holds the database's lease, unless --force. What remains is one sealed drop batch, \
            so versions and the hash chain go on if the name is used again; until then, opening the \
            database without creating it fails. Deleting a database from SQLite (the VFS's xDelete, \
            e.g. `file delete` in SQLite's TCL tests) does the same.
            """)

    @Option(help: "Sequencer URL (default: $SYNDDB_SEQUENCER).")
    var sequencer: String?

    @Argument(help: "Database name.")
    var db: String

    @Flag(help: "Drop it even while a writer holds its lease: that writer's next commit fails.")
    var force = false

    func run() async throws {
        let url = try sequencerURL(sequencer)
        let version: UInt64
        do {
            version = try await LedgerClient(url: url).drop(database: db, force: force)
        } catch let error as RPCError {
            throw CLIError("cannot drop '\(db)': \(error.message)")
        }
        if version == 0 {
            print("'\(db)' does not exist on \(url); nothing to drop")
        } else {
            print("dropped '\(db)' (drop batch at version \(version))")
        }
    }
}
