import Dispatch
import Foundation
import SyndDB
import SyndSQLite
import SyndSequencer
import SyndPostgres
import SyndProtocol
import SyndStorage
import Synchronization

/// Starts `process`, one launch at a time in this test process.
///
/// Foundation's `Process.run()` lists /proc/self/fd to close inherited
/// descriptors and copies each entry's whole 256-byte `d_name` out of
/// readdir's buffer (swift-corelibs-foundation, `findMaximumOpenFromProcSelfFD`).
/// With over ~1,300 descriptors open (a full parallel run: sequencers, lease
/// keepers, followers) the last entries sit at the end of that 32 KiB buffer,
/// and when the buffer ends a malloc arena the copy reads an unmapped page:
/// the crash inside a memcpy seen in full runs on 2026-11-22 and 11-23.
/// Buffers of 32 KiB and more are therefore mmapped (whole pages, so the
/// overread stays inside the mapping), set once before the first launch.
func startProcess(_ process: Process) throws {
    try launches.withLock { ready in
        if !ready {
            // mallopt(M_MMAP_THRESHOLD, 32 KiB); malloc.h is not in Swift's Glibc module.
            if let symbol = dlsym(nil, "mallopt") {
                typealias MallOpt = @convention(c) (Int32, Int32) -> Int32
                _ = unsafeBitCast(symbol, to: MallOpt.self)(-3, 32 << 10)
            }
            ready = true
        }
        try process.run()
    }
}

private let launches = Mutex(false)

/// A fresh temporary folder, removed when the value is released.
final class TemporaryDirectory: @unchecked Sendable {
    // Safe: `path` is immutable.
    let path: String

    init() {
        var template = Array((NSTemporaryDirectory() + "synddb-test-XXXXXX").utf8CString)
        let p = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        path = String(cString: p!)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// Where the package's executables are: next to the test bundle.
enum Products {
    static var directory: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    }

    static var synd: String {
        let candidates = [
            directory.appendingPathComponent("synd").path,
            directory.deletingLastPathComponent().appendingPathComponent("synd").path,
        ]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates[0]
    }
}

/// A real `synd sequencer` process on a free loopback port.
final class SequencerProcess: @unchecked Sendable {
    // Safe: mutated only by the test that owns it, from one thread at a time.
    let directory: String
    private(set) var port: Int
    private(set) var process: Process
    private var output: Pipe

    var url: String { "http://127.0.0.1:\(port)" }
    /// The line it printed when it started ("synd sequencer listening on ... key ed25519:HEX)").
    private(set) var announcement = ""
    /// Its key as it printed it, to pin.
    var key: String? {
        guard let range = announcement.range(of: "key ed25519:") else { return nil }
        return "ed25519:" + announcement[range.upperBound...].prefix(while: \.isHexDigit)
    }

    private let extraArguments: [String]
    /// Where its standard error goes (nil: this process's).
    private let errorLog: String?
    /// Its PostgreSQL database under SYNDDB_TEST_STORE=postgres (kept across restarts).
    private let postgres: PostgresTestDatabase?

    init(directory: String, port: Int = 0, extraArguments: [String] = [], errorLog: String? = nil) throws {
        self.directory = directory
        self.errorLog = errorLog
        var extraArguments = extraArguments
        if PostgresTest.storeForAllTests, !extraArguments.contains("--store") {
            let database = try PostgresTestDatabase()
            postgres = database
            extraArguments += ["--store", database.url]
        } else {
            postgres = nil
        }
        self.extraArguments = extraArguments
        (process, output, self.port, announcement) = try Self.launch(directory: directory, port: port, extraArguments: extraArguments, errorLog: errorLog)
    }

    private static func launch(directory: String, port: Int, extraArguments: [String] = [], errorLog: String? = nil) throws -> (Process, Pipe, Int, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Products.synd)
        process.arguments = ["sequencer", "--data", directory, "--port", String(port)] + extraArguments
        let pipe = Pipe()
        process.standardOutput = pipe
        if let errorLog {
            FileManager.default.createFile(atPath: errorLog, contents: nil)
            process.standardError = FileHandle(forWritingAtPath: errorLog)
        }
        try startProcess(process)
        // First line: "synd sequencer listening on http://127.0.0.1:PORT ..."
        var line = Data()
        let handle = pipe.fileHandleForReading
        while !line.contains(UInt8(ascii: "\n")) {
            let chunk = handle.availableData
            if chunk.isEmpty { break }
            line.append(chunk)
        }
        let text = String(decoding: line, as: UTF8.self)
        guard let range = text.range(of: "://127.0.0.1:"),
            let bound = Int(text[range.upperBound...].prefix(while: \.isNumber))
        else {
            process.terminate()
            throw TestFailure("sequencer did not start: \(text)")
        }
        return (process, pipe, bound, text)
    }

    /// kill -9: no chance to flush or close anything.
    func kill9() {
        kill(process.processIdentifier, SIGKILL)
        process.waitForExit()
    }

    /// Starts again on the same port and data.
    func restart() throws {
        var lastError: (any Error)?
        for _ in 0..<50 {
            do {
                (process, output, port, announcement) = try Self.launch(directory: directory, port: port, extraArguments: extraArguments, errorLog: errorLog)
                return
            } catch {
                lastError = error
                usleep(100_000)
            }
        }
        throw lastError!
    }

    deinit {
        // Often on a cooperative thread (a test's last reference): see waitForExit.
        kill(process.processIdentifier, SIGKILL)
        process.waitForExit()
    }
}

/// A sequencer in this process, for tests that need its counters or a fault hook.
func withEmbeddedSequencer<T: Sendable>(
    configure: (inout StoreConfiguration) -> Void = { _ in },
    _ body: @Sendable @escaping (SequencerServer) throws -> T
) async throws -> T {
    let dir = TemporaryDirectory()
    var configuration = StoreConfiguration(directory: dir.path)
    configure(&configuration)
    // SYNDDB_TEST_STORE=postgres: the same tests on the PostgreSQL store (scripts/test.sh runs the core suites so).
    var postgres: PostgresTestDatabase?
    let server: SequencerServer
    if PostgresTest.storeForAllTests {
        let database = try PostgresTestDatabase()
        postgres = database
        let store = try await PostgresStore(PostgresLocation(url: database.url), configuration: configuration)
        server = try await SequencerServer.start(store: store, maxBatchBytes: configuration.maxBatchBytes)
    } else {
        server = try await SequencerServer.start(store: configuration)
    }
    let result = await blocking { try body(server) }
    await server.stop()
    _ = dir
    _ = postgres
    return try result.get()
}

/// Runs blocking VFS work on a thread of its own, off Swift's cooperative pool,
/// so an in-process sequencer's handlers always have threads. The body stays in
/// the calling task (a task executor preference), so `#expect` failures inside
/// it are reported against the right test.
func blocking<T: Sendable>(_ body: @Sendable @escaping () throws -> T) async -> Result<T, any Error> {
    let executor = ThreadExecutor()
    defer { executor.stop() }
    return await withTaskExecutorPreference(executor) { Result { try body() } }
}

/// A task executor with one dedicated thread.
final class ThreadExecutor: TaskExecutor, @unchecked Sendable {
    // Safe: `jobs` and `stopped` are only touched with `condition` locked.
    private let condition = NSCondition()
    private var jobs: [UnownedJob] = []
    private var stopped = false

    init() {
        Thread.detachNewThread { [self] in run() }
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        condition.lock()
        jobs.append(job)
        condition.signal()
        condition.unlock()
    }

    func stop() {
        condition.lock()
        stopped = true
        condition.signal()
        condition.unlock()
    }

    private func run() {
        while true {
            condition.lock()
            while jobs.isEmpty && !stopped { condition.wait() }
            if jobs.isEmpty {
                condition.unlock()
                return
            }
            let job = jobs.removeFirst()
            condition.unlock()
            job.runSynchronously(on: asUnownedTaskExecutor())
        }
    }
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Unique database names, so tests can share a sequencer and run in parallel.
func uniqueName(_ prefix: String) -> String {
    "\(prefix)-\(UInt32.random(in: 0...UInt32.max))"
}

/// Runs `synd` with arguments and returns its standard output.
func runSynd(_ arguments: [String], environment: [String: String] = [:]) throws -> (status: Int32, output: String, error: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: Products.synd)
    process.arguments = arguments
    process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try startProcess(process)
    let data = out.fileHandleForReading.readDataToEndOfFile()
    let errData = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self), String(decoding: errData, as: UTF8.self))
}

/// `blocking`, rethrowing: for test bodies that make blocking SQLite calls.
func offPool<T: Sendable>(_ body: @Sendable @escaping () throws -> T) async throws -> T {
    try await blocking(body).get()
}

extension Process {
    /// Waits for the process to end without Foundation's run loop.
    ///
    /// `waitUntilExit` spins a run loop until Foundation's child monitor says
    /// the process ended; from a deinit on one of Swift's two cooperative
    /// threads (this machine has two cores) two such waits can starve that
    /// monitor and spin forever. This polls the process's state instead.
    func waitForExit(timeout: Duration = .seconds(10)) {
        let pid = processIdentifier
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            // Gone, or a zombie waiting to be reaped: it ended.
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { return }
            let state = stat[stat.index(after: close)...].drop(while: { $0 == " " }).first
            if state == "Z" || state == "X" { return }
            usleep(5_000)
        }
    }
}

/// Runs a program with `input` on its standard input; returns its status and output.
func runProgram(
    _ path: String, _ arguments: [String], input: String = "", directory: String? = nil,
    environment: [String: String] = [:], removing: [String] = []
) throws -> (status: Int32, output: String, error: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = arguments
    if let directory { p.currentDirectoryURL = URL(fileURLWithPath: directory) }
    p.environment = ProcessInfo.processInfo.environment.filter { !removing.contains($0.key) }.merging(environment) { $1 }
    let stdin = Pipe(), stdout = Pipe(), stderr = Pipe()
    p.standardInput = stdin
    p.standardOutput = stdout
    p.standardError = stderr
    try startProcess(p)
    stdin.fileHandleForWriting.write(Data(input.utf8))
    try stdin.fileHandleForWriting.close()
    let out = stdout.fileHandleForReading.readDataToEndOfFile()
    let err = stderr.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: out, as: UTF8.self), String(decoding: err, as: UTF8.self))
}

/// A commit of page 1 alone (a 4 KiB page with SQLite's page-size bytes set),
/// sent by hand under `lease`: what tests of the sequencer's answers send.
func onePageCommit(_ database: String, lease: Lease, holder: String, txn: [UInt8], base: UInt64 = 0) -> CommitRequest {
    var r = CommitRequest()
    r.database = database
    r.leaseEpoch = lease.epoch
    r.holder = holder
    r.txnID = txn
    r.baseVersion = base
    r.pageSize = 4096
    r.pageCount = 1
    var header = [UInt8](repeating: 0, count: 4096)
    header[16] = 0x10
    r.pages = [Page(number: 1, data: header)]
    return r
}
