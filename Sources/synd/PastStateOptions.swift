import ArgumentParser
import SyndDB
import SyndProtocol

/// `--version V` / `--at TIME`: which past state of a database a command reads.
struct PastStateOptions: ParsableArguments {
    @Option(name: .customLong("version"), help: "Read the database as of this version (`synd log` lists versions).")
    var atVersion: UInt64?

    @Option(name: .customLong("at"), help: "Read the database as of this time: RFC 3339 (2026-11-23T10:15:30Z) or Unix milliseconds.")
    var atTime: String?

    /// The state asked for; nil: the latest.
    func state() throws -> DatabaseOptions.PastState? {
        switch (atVersion, atTime) {
        case (nil, nil): return nil
        case (let v?, nil):
            guard v > 0 else { throw CLIError("--version 0 is invalid: versions start at 1 (`synd log DB` lists them)") }
            return .version(v)
        case (nil, let t?):
            guard let ms = UnixTime.parse(t), ms > 0 else {
                throw CLIError("--at \(t) is not a time: use RFC 3339 with an offset (2026-11-23T10:15:30Z) or Unix milliseconds")
            }
            return .time(unixMilliseconds: ms)
        case (_?, _?): throw CLIError("--version and --at both given: read a past state by version or by time, not both")
        }
    }
}
