import Foundation

/// The dqlite column of `synd bench` (issue 10): go-dqlite's own benchmark,
/// one node on loopback, one worker running `kvwrite`, through
/// scripts/bench-dqlite.sh (Debian's go-dqlite package provides dqlite-benchmark).
enum BenchDqlite {
    struct Result {
        /// Latency of each write, microseconds.
        var latency: BenchCommand.Figures
        var errors: Int
        var seconds: Double
        /// CPU seconds of the dqlite-benchmark process (the node and the driver in one).
        var cpuSeconds: Double
        var perSecond: Double { Double(latency.samples.count) / seconds }
    }

    enum Outcome {
        case measured(Result)
        /// Why there is no dqlite column.
        case skipped(String)
    }

    /// scripts/bench-dqlite.sh: `given`, else in the current folder, else above this executable (.build/.../synd).
    static func script(_ given: String?) -> String? {
        if let given { return given }
        var candidates = [FileManager.default.currentDirectoryPath + "/scripts/bench-dqlite.sh"]
        var folder = URL(fileURLWithPath: BenchWriters.executablePath()).deletingLastPathComponent()
        for _ in 0..<5 {
            candidates.append(folder.appendingPathComponent("scripts/bench-dqlite.sh").path)
            folder = folder.deletingLastPathComponent()
        }
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    static func run(script given: String?, directory: String, seconds: Int, valueBytes: Int) throws -> Outcome {
        guard let script = script(given) else {
            return .skipped("scripts/bench-dqlite.sh not found (run synd bench from the repository, or give --dqlite-script)")
        }
        guard let port = BenchProc.freePort() else { throw BenchWriters.BenchError("no free TCP port for dqlite") }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [script, directory, String(port), String(seconds), "1", String(valueBytes)]
        let output = Pipe(), errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        // The script prints a few lines only, so reading after the exit cannot block it.
        let out = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let err = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        if process.terminationStatus == 3 {
            return .skipped(err.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        guard process.terminationStatus == 0 else {
            throw BenchWriters.BenchError("\(script) exited with status \(process.terminationStatus): \(err.suffix(2000))")
        }
        var samples: [Double] = []
        var failed = 0
        var cpu = Double.nan
        for line in out.split(separator: "\n") {
            if line.hasPrefix("results "), line.contains("-exec-") {
                let file = try parse(path: String(line.dropFirst("results ".count)))
                samples += file.milliseconds.map { $0 * 1000 }
                failed += file.errors
            } else if line.hasPrefix("cpu ") {
                let parts = line.split(separator: " ").dropFirst().compactMap { Double($0) }
                if parts.count == 2 { cpu = parts[0] + parts[1] }
            }
        }
        guard !samples.isEmpty else { throw BenchWriters.BenchError("dqlite-benchmark recorded no writes: \(out) \(err)") }
        return .measured(Result(latency: BenchCommand.Figures(samples: samples), errors: failed, seconds: Double(seconds), cpuSeconds: cpu))
    }

    /// A results file of dqlite-benchmark: "n N", "n_err N", "avg [ms] X", ...,
    /// "measurements [timestamp in ns] [ms]", then one "TIMESTAMP MILLISECONDS"
    /// line per operation, then "errors" and the errors, if any.
    static func parse(path: String) throws -> (milliseconds: [Double], errors: Int) {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        var milliseconds: [Double] = []
        var errors = 0
        var inMeasurements = false
        for line in text.split(separator: "\n") {
            if line.hasPrefix("n_err ") { errors = Int(line.split(separator: " ").last ?? "") ?? 0; continue }
            if line.hasPrefix("measurements") { inMeasurements = true; continue }
            if line.hasPrefix("errors") { inMeasurements = false; continue }
            guard inMeasurements else { continue }
            let parts = line.split(separator: " ")
            if parts.count == 2, let ms = Double(parts[1]) { milliseconds.append(ms) }
        }
        return (milliseconds, errors)
    }
}
