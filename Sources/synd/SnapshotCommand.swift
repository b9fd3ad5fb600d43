import ArgumentParser
import GRPCCore

/// `synd snapshot DB`: seals a snapshot of a database now.
struct SnapshotCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot",
        abstract: "Seal a snapshot of a database at its latest version.",
        discussion: """
            The sequencer writes every page of the database as of its latest version, anchored on that \
            batch's hash and signed, and keeps the newest few (`synd sequencer --snapshots-kept`; \
            `--snapshot-every` makes them as the database grows). `synd validate --from-snapshot` starts \
            from the newest one, even past the retention window.
            """)

    @Option(help: "Sequencer URL (default: $SYNDDB_SEQUENCER).")
    var sequencer: String?

    @Argument(help: "Database name.")
    var db: String

    func run() async throws {
        let url = try sequencerURL(sequencer)
        do {
            let info = try await LedgerClient(url: url).createSnapshot(database: db)
            let mb = Double(info.pageCount) * Double(info.pageSize) / 1e6
            print("snapshot of '\(db)' at version \(info.version): \(info.pageCount) pages (\(String(format: "%.1f", mb)) MB), committed at \(info.committedAtMs) ms")
        } catch let error as RPCError {
            throw CLIError("cannot snapshot '\(db)': \(error.message)")
        }
    }
}
