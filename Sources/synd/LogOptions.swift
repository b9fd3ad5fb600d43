import ArgumentParser
import Logging

/// `--log-level` and `--log-format` of the commands that run a while (the sequencer).
struct LogOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "trace, debug, info, notice, warning, error or critical. notice shows start-up, drops, snapshots and failures; info adds one line per refused request and per lease change; debug one per commit.",
        valueName: "level"))
    var logLevel: Logger.Level = .notice

    @Option(help: ArgumentHelp("text, or json: one JSON object per line (time, level, logger, message and each metadata key).", valueName: "format"))
    var logFormat: LogFormat = .text

    enum LogFormat: String, ExpressibleByArgument, CaseIterable {
        case text, json
    }

    /// A logger writing to standard error in the chosen format and level.
    func logger(_ label: String) -> Logger {
        let level = logLevel
        switch logFormat {
        case .text:
            return Logger(label: label) { label in
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = level
                return handler
            }
        case .json:
            return Logger(label: label) { label in JSONLogHandler(label: label, logLevel: level) }
        }
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}
