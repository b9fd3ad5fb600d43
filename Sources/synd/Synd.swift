import ArgumentParser

@main
struct Synd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "synd",
        abstract: "SyndDB: SQLite whose storage is a remote, auditable sequencer.",
        subcommands: [SequencerCommand.self, DemoCommand.self, SQLCommand.self, LogCommand.self, ValidateCommand.self, RevertCommand.self, StatusCommand.self, DropCommand.self, SnapshotCommand.self, ExportCommand.self, ImportCommand.self, ForkCommand.self, BenchCommand.self, ChaosClientCommand.self])
}
