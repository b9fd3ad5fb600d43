import Dispatch
import Logging
import NIOCore
import NIOPosix
import PostgresNIO
import Synchronization
import SyndLedger
import SyndProtocol
import SyndStorage

#if canImport(Glibc)
import Glibc
#endif

/// The sequencer's state and logic in PostgreSQL, so that any number of
/// sequencer processes serve the same databases (`synd sequencer --store postgresql://...`).
///
/// Every decision is made by PostgreSQL, on the database's row:
/// - a commit is one transaction that locks the row (`FOR UPDATE`), answers a
///   repeated transaction id with its first outcome (a batch, or a recorded
///   refusal), checks lease holder, epoch and expiry (by PostgreSQL's clock)
///   and the base version, stores the sealed batch and its pages, advances the
///   head and notifies the other sequencers; COMMIT makes it durable (with
///   PostgreSQL's `synchronous_commit`, on a standby too if configured);
/// - lease acquire, renew and release are single `UPDATE`s of the row.
///
/// What stays in this process: the key (shared by configuration, checked
/// against the one registered in PostgreSQL), the queue of writers waiting
/// for a lease here, and the signals of open HoldLease and follow streams,
/// which LISTEN/NOTIFY wakes across sequencers.
///
/// Calls block their thread while PostgreSQL answers (`callsMayBlock`), so the
/// service runs them on lanes of their own, never on an event loop; a call
/// that gets no answer within `timeout` fails with UNAVAILABLE.
public final class PostgresStore: SequencerStore {
    public let configuration: StoreConfiguration
    public let postgres: PostgresLocation
    public let signingKey: SigningKey
    public let recoveryNotes: [String]
    let client: PostgresClient
    let logger: Logger
    /// How long one call may wait for PostgreSQL.
    let timeout: Duration
    /// postgres-nio's own threads: the server's event loops may block waiting
    /// for PostgreSQL, so its answers must never need one of them.
    private let eventLoops: MultiThreadedEventLoopGroup
    /// Where this store's tasks run (never Swift's cooperative pool).
    let executor: PostgresExecutor
    private let background: Mutex<[Task<Void, Never>]>
    let board = LocalBoard()

    public var callsMayBlock: Bool { true }
    public var location: String { postgres.description }
    public var capabilities: Capabilities {
        var c = PageStore.capabilities(configuration)
        c.features.removeAll { $0 == "snapshots" }
        return c
    }

    public var sequencerKey: SequencerKey {
        var k = SequencerKey()
        k.algorithm = "ed25519"
        k.publicKey = signingKey.publicKey
        return k
    }

    /// Connects, creates or migrates the schema, and registers or checks the
    /// signing key (`configuration.directory`/sequencer.ed25519, created if
    /// missing: copy it to every sequencer that shares this PostgreSQL).
    public init(
        _ postgres: PostgresLocation, configuration: StoreConfiguration, timeout: Duration = .seconds(10),
        logger: Logger = Logger(label: "synd.postgres")
    ) async throws {
        self.configuration = configuration
        self.postgres = postgres
        self.logger = logger
        self.timeout = timeout
        mkdir(configuration.directory, 0o755)
        signingKey = try SigningKey(path: configuration.directory + "/sequencer.ed25519", create: true)
        eventLoops = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let executor = PostgresExecutor(threads: 2)
        self.executor = executor
        client = PostgresClient(configuration: try postgres.clientConfiguration(), eventLoopGroup: eventLoops, backgroundLogger: logger)
        let client = self.client
        background = Mutex([Task(executorPreference: executor) { await client.run() }])
        let notes: [String]
        do {
            notes = try await Self.within(.seconds(15), "connecting to PostgreSQL at \(postgres)", on: executor) { [logger, signingKey] in
                let notes = try await PostgresSchema.migrate(client, logger: logger)
                try await PostgresSchema.registerKey(
                    client, publicKey: SequencerKeyText.format(signingKey.publicKey), keyPath: signingKey.path, logger: logger)
                return notes
            }
        } catch {
            for t in background.withLock({ $0 }) { t.cancel() }
            try? await eventLoops.shutdownGracefully()
            executor.stop()
            if let e = error as? PostgresStoreError { throw e }
            throw PostgresStoreError("cannot use the PostgreSQL store at \(postgres): \(Self.describe(error))")
        }
        recoveryNotes = notes
        let listener = Task(executorPreference: executor) { [weak self] () async -> Void in await self?.listen() }
        background.withLock { $0.append(listener) }
    }

    public func shutdown() {
        let tasks = background.withLock { t in
            defer { t = [] }
            return t
        }
        // The client closes its connections on its event loop after `run()` is
        // cancelled: the loop stops only after that (bounded, so a stuck close
        // cannot hold up the process).
        let ended = DispatchSemaphore(value: 0)
        Task(executorPreference: executor) {
            for t in tasks { t.cancel() }
            for t in tasks { await t.value }
            ended.signal()
        }
        _ = ended.wait(timeout: .now() + .seconds(5))
        try? eventLoops.syncShutdownGracefully()
        executor.stop()
    }

    // MARK: - Running PostgreSQL work

    /// Runs `body` (PostgreSQL work) and waits for it on this thread, which
    /// must not be one of Swift's cooperative threads nor an event loop.
    func blocking<T: Sendable>(_ what: String, _ body: @escaping @Sendable () async throws -> T) throws(SequencerError) -> T {
        let wait = DurableWait<T>()
        let timeout = self.timeout
        Task(executorPreference: executor) {
            do {
                wait.finish(.success(try await Self.within(timeout, what, body)))
            } catch {
                wait.finish(.failure(Self.failure(error, what)))
            }
        }
        return try wait.wait().get()
    }

    /// `body`, or a timeout error once `limit` passed. The answer does not wait
    /// for `body` to end: a query that ignores cancellation (postgres-nio's
    /// do) goes on in the background, bounded by the session's
    /// `statement_timeout` (see `PostgresLocation`).
    static func within<T: Sendable>(
        _ limit: Duration, _ what: String, on executor: PostgresExecutor? = nil, _ body: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        let once = Once<T>()
        return try await withCheckedThrowingContinuation { continuation in
            once.set(continuation)
            let work = Task(executorPreference: executor) {
                do {
                    once.finish(.success(try await body()))
                } catch {
                    once.finish(.failure(error))
                }
            }
            let timer = Task(executorPreference: executor) {
                try? await Task.sleep(for: limit)
                if Task.isCancelled { return }
                once.finish(.failure(SequencerError(.unavailable, "PostgreSQL did not answer within \(limit) while \(what); is it running and reachable?")))
                work.cancel()
            }
            once.onFinish { timer.cancel() }
        }
    }

    /// A SequencerError for any failure of PostgreSQL work: refusals pass as
    /// they are; PostgreSQL's own errors keep their SQLSTATE and message.
    static func failure(_ error: any Error, _ what: String) -> SequencerError {
        if let e = error as? SequencerError { return e }
        if let e = error as? PostgresTransactionError {
            if let inner = e.closureError ?? e.beginError ?? e.commitError { return failure(inner, what) }
        }
        if let e = error as? PSQLError, let info = e.serverInfo {
            let state = info[.sqlState] ?? "?"
            let message = info[.message] ?? ""
            // Class 08 (connection), 53 (resources), 57 (operator intervention: shutdown, failover): try again.
            let transient = state.hasPrefix("08") || state.hasPrefix("53") || state.hasPrefix("57") || state == "40001" || state == "40P01"
            return SequencerError(transient ? .unavailable : .internal, "PostgreSQL refused \(what): \(message) (SQLSTATE \(state))")
        }
        return SequencerError(.unavailable, "PostgreSQL failed while \(what): \(describe(error))")
    }

    static func describe(_ error: any Error) -> String {
        if let e = error as? PostgresTransactionError, let inner = e.closureError ?? e.beginError ?? e.commitError {
            return describe(inner)
        }
        if let e = error as? SequencerError { return e.message }
        if let e = error as? PSQLError {
            if let info = e.serverInfo { return "\(info[.message] ?? "") (SQLSTATE \(info[.sqlState] ?? "?"))" }
            return "\(e.code)" + (e.underlying.map { ": \($0)" } ?? "")
        }
        return String(describing: error)
    }

    static func bytes(_ array: [UInt8]) -> ByteBuffer { ByteBuffer(bytes: array) }
    static func array(_ buffer: ByteBuffer) -> [UInt8] { Array(buffer.readableBytesView) }
}

/// Resumes a continuation once: with the first of a result and a timeout.
final class Once<T: Sendable>: Sendable {
    private struct State {
        var continuation: CheckedContinuation<T, any Error>?
        var early: Result<T, any Error>?
        var done = false
        var after: (@Sendable () -> Void)?
    }
    private let state = Mutex(State())

    func set(_ continuation: CheckedContinuation<T, any Error>) {
        let early = state.withLock { s -> Result<T, any Error>? in
            if let e = s.early { return e }
            s.continuation = continuation
            return nil
        }
        if let early { continuation.resume(with: early) }
    }

    func finish(_ result: Result<T, any Error>) {
        let (continuation, after) = state.withLock { s -> (CheckedContinuation<T, any Error>?, (@Sendable () -> Void)?) in
            guard !s.done else { return (nil, nil) }
            s.done = true
            guard let c = s.continuation else {
                s.early = result
                return (nil, s.after)
            }
            s.continuation = nil
            return (c, s.after)
        }
        continuation?.resume(with: result)
        after?()
    }

    func onFinish(_ body: @escaping @Sendable () -> Void) {
        let now = state.withLock { s -> Bool in
            if s.done { return true }
            s.after = body
            return false
        }
        if now { body() }
    }
}

/// What each sequencer keeps in memory of its databases: the writers waiting
/// here for a lease, the open HoldLease and follow streams to wake, and the
/// last lease it saw (so waits can nap until it lapses without asking PostgreSQL).
final class LocalBoard: Sendable {
    struct Database {
        var queue: [(id: UInt64, holder: String, signal: LeaseSignal)] = []
        var holds: [UInt64: LeaseSignal] = [:]
        var watchers: [UInt64: LeaseSignal] = [:]
        /// The live lease as last seen: when it lapses, and whether its holder is inside a transaction.
        var leaseExpires: ContinuousClock.Instant?
        var leaseInTransaction = false
    }

    private struct State {
        var databases: [String: Database] = [:]
        var nextID: UInt64 = 1
    }

    private let state = Mutex(State())

    func withDatabase<T>(_ name: String, _ body: (inout Database, UInt64) -> T) -> T {
        state.withLock { s in
            let id = s.nextID
            s.nextID += 1
            return body(&s.databases[name, default: Database()], id)
        }
    }

    /// Fires what waits on `name` for `event`: `head` (follow streams), `free` (queued writers), `want` (holders).
    func fire(_ event: String, _ name: String) {
        state.withLock { s in
            guard let d = s.databases[name] else { return }
            switch event {
            case "head": for w in d.watchers.values { w.fire() }
            case "free":
                s.databases[name]?.leaseExpires = nil
                for w in d.queue { w.signal.fire() }
            case "want": for w in d.holds.values { w.fire() }
            default: break
            }
        }
    }

    /// After the notification stream was down: anything may have happened.
    func fireAll() {
        state.withLock { s in
            for d in s.databases.values {
                for w in d.watchers.values { w.fire() }
                for w in d.queue { w.signal.fire() }
                for w in d.holds.values { w.fire() }
            }
        }
    }
}
