import Foundation

/// A sequencer in its own process (`synd sequencer --data DIR --port 0`, this
/// executable), so that the bench can read its CPU time and memory from /proc
/// and the size of its data folder, apart from the clients'.
final class BenchSequencerProcess {
    let process = Process()
    let dataDirectory: String
    let logPath: String
    private(set) var url = ""

    var pid: Int32 { process.processIdentifier }

    /// Starts the sequencer and waits (up to 60 s) for the URL it prints.
    init(dataDirectory: String, retain: UInt64?, extraArguments: [String] = [], log: String? = nil) throws {
        self.dataDirectory = dataDirectory
        let logPath = log ?? dataDirectory + ".log"
        self.logPath = logPath
        try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        // Its output goes to a file, not a pipe: nobody reads a pipe after the
        // URL, and a full pipe would block the sequencer's logging.
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        process.executableURL = URL(fileURLWithPath: BenchWriters.executablePath())
        process.arguments = ["sequencer", "--data", dataDirectory, "--port", "0"] + (retain.map { ["--retain", String($0)] } ?? []) + extraArguments
        process.standardOutput = log
        process.standardError = log
        try process.run()
        try? log.close()
        let deadline = chaosNow() + 60_000_000_000
        while url.isEmpty {
            let text = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
            // "synd sequencer listening on http://127.0.0.1:PORT (data: DIR)"
            if let line = text.split(separator: "\n").first(where: { $0.contains("listening on ") }),
               let word = line.split(separator: " ").first(where: { $0.hasPrefix("http://") || $0.hasPrefix("https://") }) {
                url = String(word)
            } else if !process.isRunning {
                throw BenchWriters.BenchError("the sequencer (synd sequencer --data \(dataDirectory)) exited with status \(process.terminationStatus): \(text.suffix(2000))")
            } else if chaosNow() > deadline {
                stop()
                throw BenchWriters.BenchError("the sequencer printed no URL in 60 s: \(text.suffix(2000))")
            } else {
                usleep(20_000)
            }
        }
    }

    deinit { stop() }

    /// Its CPU seconds so far (user + system, every thread).
    var cpuSeconds: Double { BenchProc.cpuSeconds(pid: pid) ?? .nan }

    /// SIGTERM, then SIGKILL if it has not exited within 5 s.
    func stop() {
        guard process.isRunning else { return }
        process.terminate()
        let deadline = chaosNow() + 5_000_000_000
        while process.isRunning && chaosNow() < deadline { usleep(10_000) }
        if process.isRunning { kill(pid, SIGKILL) }
        process.waitUntilExit()
    }
}
