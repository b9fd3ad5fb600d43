import Synchronization
import SyndProtocol

#if canImport(Glibc)
import Glibc
#endif

/// Keeps a read-only connection current from the database's batch stream.
///
/// A thread of its own reads `StreamBatches` (follow, with heartbeats) on a
/// connection of its own, checks every batch before anything uses it (the
/// sequencer's Ed25519 signature, the hash chain from the version the
/// connection started at, the page, changeset and schema hashes), and queues
/// it. The connection takes the queue at the start of each read transaction
/// (`take`), so a transaction sees one version from its first read to its
/// end, and an up-to-date follower reads without a request.
///
/// A batch that fails its check stops the follower for good (`refusal`): the
/// connection must then refuse to serve, never show that state. A stream that
/// ends (the sequencer restarted, the network) is opened again from the last
/// checked batch; meanwhile `isLive` is false and the connection falls back to
/// asking the sequencer.
public final class Follower: Sendable {
    /// One checked batch, as the connection applies it.
    public struct Update: Sendable {
        public var version: UInt64
        public var pageSize: UInt32
        public var pageCount: UInt32
        /// The page images; nil when they were let go to bound memory (then
        /// `numbers` says which cached pages are stale).
        public var pages: [Page]?
        public var numbers: [UInt32]
        /// The smallest page count of the versions this update stands for
        /// (several, once merged): pages above it were cut off on the way.
        public var lowestPageCount: UInt32
        /// Whether the page size changed within the versions it stands for.
        public var sizeChanged = false
    }

    /// What the follower knows of the head, for freshness bounds.
    public struct Freshness: Sendable {
        /// The newest version checked and queued (or taken).
        public var received: UInt64
        /// The head version of the last heartbeat: every batch up to it was received by then.
        public var head: UInt64
        /// When that heartbeat arrived (nil: none yet).
        public var heardAt: ContinuousClock.Instant?
        public var isLive: Bool
    }

    private struct State {
        var queue: [Update] = []
        var queuedBytes = 0
        /// The last checked version and its hash (nil until the stream's first batch, the anchor, is checked).
        var anchor: UInt64
        var lastHash: [UInt8]?
        var head: UInt64 = 0
        var heardAt: ContinuousClock.Instant?
        var refusal: String?
        var stream: SequencerClient.OpenStream?
        var live = false
        /// Streams opened so far; an end of an older one is not this one's.
        var generation: UInt64 = 0
        var lastError: String?
    }

    public let database: String
    private let client: SequencerClient
    private let heartbeatMs: UInt32
    private let maxQueuedBytes: Int
    private let state: Locked<State>
    private let changed = Condition()
    private let wake: (read: Int32, write: Int32)
    private let stopped = Atomic<Bool>(false)
    private let key = Locked<BatchVerifier?>(nil)
    private let thread = Locked<pthread_t?>(nil)

    /// - Parameters:
    ///   - version: the version the connection starts at (its first batch to check is the next).
    ///   - heartbeatMs: how often the sequencer tells the head while the follower is current.
    ///   - maxQueuedBytes: page images queued past this are let go (the connection then re-reads those pages).
    ///   - pinnedKey: the sequencer's Ed25519 key, known beforehand: batches are
    ///     checked with it alone (nil: with the key the sequencer gives, which a
    ///     man in the middle of an unencrypted connection could replace).
    public init(client: SequencerClient, database: String, version: UInt64, heartbeatMs: UInt32, maxQueuedBytes: Int, pinnedKey: [UInt8]? = nil) {
        self.client = client.dedicated()
        self.database = database
        self.heartbeatMs = heartbeatMs
        self.maxQueuedBytes = maxQueuedBytes
        state = Locked(State(anchor: version, lastHash: version == 0 ? SealLayout.genesis : nil))
        var fds: [Int32] = [-1, -1]
        if pipe(&fds) == 0 {
            for fd in fds {
                _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
                _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            }
        }
        wake = (fds[0], fds[1])
        if let pinnedKey { key.withLock { $0 = BatchVerifier(publicKey: pinnedKey) } }
    }

    deinit {
        if wake.read >= 0 { close(wake.read) }
        if wake.write >= 0 { close(wake.write) }
    }

    // MARK: - For the connection

    /// Starts the follower's thread.
    public func start() {
        thread.withLock { t in
            guard t == nil, !stopped.load(ordering: .sequentiallyConsistent) else { return }
            let context = Unmanaged.passRetained(self).toOpaque()
            var tid = pthread_t()
            let rc = pthread_create(&tid, nil, { arg in
                let follower = Unmanaged<Follower>.fromOpaque(arg!).takeRetainedValue()
                follower.run()
                return nil
            }, context)
            if rc == 0 { t = tid } else { Unmanaged<Follower>.fromOpaque(context).release() }
        }
    }

    /// Stops following; the thread ends on its own.
    public func stop() {
        stopped.store(true, ordering: .sequentiallyConsistent)
        poke()
        if let t = thread.withLock({ t -> pthread_t? in let x = t; t = nil; return x }) { pthread_detach(t) }
        changed.broadcast()
    }

    /// The checked batches queued since the last call, oldest first.
    public func take() -> [Update] {
        state.withLock { s in
            defer {
                s.queue = []
                s.queuedBytes = 0
            }
            return s.queue
        }
    }

    /// Why the follower stopped serving: a batch failed its check. Final.
    public var refusal: String? { state.withLock { $0.refusal } }

    public var freshness: Freshness {
        state.withLock { s in Freshness(received: s.anchor, head: s.head, heardAt: s.heardAt, isLive: s.live && s.lastHash != nil) }
    }

    /// Why the stream is down, if it is.
    public var lastError: String? { state.withLock { $0.lastError } }

    /// The connection moved to `version` by a request while the stream was
    /// down. A stream that cannot go on from its last checked batch (pruned
    /// since, say) starts again from there; one that can is left alone.
    public func restart(from version: UInt64) {
        state.withLock { s in
            guard s.refusal == nil, s.stream == nil, s.lastError != nil, version > s.anchor else { return }
            s.anchor = version
            s.lastHash = version == 0 ? SealLayout.genesis : nil
            s.queue = []
            s.queuedBytes = 0
            s.generation += 1
        }
        poke()
    }

    /// Waits until something arrives (a batch, a heartbeat, a refusal, the
    /// stream's end) or `deadline` passes.
    public func waitForNews(until deadline: ContinuousClock.Instant) {
        changed.wait(until: deadline)
    }

    // MARK: - The follower's thread

    private func poke() {
        var one: UInt8 = 1
        _ = Glibc.write(wake.write, &one, 1)
    }

    private func run() {
        var backoff = Duration.milliseconds(20)
        var retryAt = ContinuousClock.now
        while !stopped.load(ordering: .sequentiallyConsistent) {
            let needsStream = state.withLock { $0.stream == nil && $0.refusal == nil }
            if needsStream, ContinuousClock.now >= retryAt {
                if open() {
                    backoff = .milliseconds(20)
                } else {
                    retryAt = .now + backoff
                    backoff = min(backoff * 2, .seconds(2))
                }
            }
            let wait = needsStream ? max(0, min(250, (retryAt - .now).milliseconds)) : 1000
            client.waitForInput(wake: wake.read, timeoutMs: Int32(wait))
            if stopped.load(ordering: .sequentiallyConsistent) { break }
            client.processPendingInput(wait: true)
            let refused = state.withLock { s -> SequencerClient.OpenStream? in
                guard s.refusal != nil, let x = s.stream else { return nil }
                s.stream = nil
                return x
            }
            if let refused {
                client.cancel(refused)
                break  // a refused follower serves nothing more
            }
        }
        let open = state.withLock { s -> SequencerClient.OpenStream? in
            let x = s.stream
            s.stream = nil
            return x
        }
        if let open { client.cancel(open) }
    }

    /// Opens the stream from the anchor (the anchor batch itself first when
    /// its hash is not known yet). False when it could not be opened.
    private func open() -> Bool {
        do throws(SequencerError) {
            if key.withLock({ $0 == nil }) {
                let k: SequencerKey = try client.call(.getSequencerKey, GetSequencerKeyRequest())
                key.withLock { $0 = BatchVerifier(publicKey: k.publicKey) }
            }
            let (from, generation) = state.withLock { s -> (UInt64, UInt64) in
                s.generation += 1
                return (s.lastHash == nil ? s.anchor : s.anchor + 1, s.generation)
            }
            var request = StreamBatchesRequest()
            request.database = database
            request.fromVersion = max(1, from)
            request.follow = true
            request.heartbeatMs = heartbeatMs
            let stream = try client.openStream(.streamBatches, request, onMessage: { [weak self] bytes in
                self?.received(bytes, generation: generation)
            }, onEnd: { [weak self] error in
                self?.ended(error, generation: generation)
            })
            let cancel = state.withLock { s -> Bool in
                guard s.generation == generation, s.refusal == nil else { return true }
                s.stream = stream
                s.live = true
                s.lastError = nil
                return false
            }
            if cancel { client.cancel(stream) }
            return true
        } catch {
            state.withLock { $0.lastError = error.message }
            changed.broadcast()
            return false
        }
    }

    private func ended(_ error: SequencerError, generation: UInt64) {
        state.withLock { s in
            guard s.generation == generation else { return }
            s.stream = nil
            s.live = false
            s.lastError = error.code == .ok ? "the sequencer ended the stream" : error.message
        }
        changed.broadcast()
    }

    private func received(_ bytes: [UInt8], generation: UInt64) {
        guard let verifier = key.withLock({ $0 }) else { return }
        let batch: Batch
        do {
            batch = try Batch(serializedBytes: bytes)
        } catch {
            refuse("an undecodable message on the batch stream of '\(database)': \(error)", generation: generation)
            return
        }
        var refusal: String?
        state.withLock { s in
            guard s.generation == generation, s.refusal == nil else { return }
            if batch.heartbeat {
                // Every batch up to `version` was sent before it.
                if batch.version <= s.anchor || s.lastHash == nil {
                    s.head = max(s.head, batch.version)
                    s.heardAt = .now
                } else {
                    refusal = "a heartbeat of '\(database)' says the head is \(batch.version), but the stream sent only up to \(s.anchor)"
                }
                return
            }
            guard let lastHash = s.lastHash else {
                // The anchor: the version the connection started at, checked on its own.
                if let problem = verifier.problem(with: batch, expectedVersion: s.anchor, previousHash: batch.previousHash) {
                    refusal = "batch \(batch.version) of '\(database)' from the sequencer fails its check: \(problem)"
                } else {
                    s.lastHash = batch.hash
                }
                return
            }
            if let problem = verifier.problem(with: batch, expectedVersion: s.anchor + 1, previousHash: lastHash) {
                refusal = "batch \(batch.version) of '\(database)' from the sequencer fails its check: \(problem)"
                return
            }
            s.anchor = batch.version
            s.lastHash = batch.hash
            s.head = max(s.head, batch.version)
            let size = batch.pages.reduce(0) { $0 + $1.data.count }
            s.queue.append(Update(version: batch.version, pageSize: batch.pageSize, pageCount: batch.pageCount,
                                  pages: batch.pages, numbers: batch.pages.map(\.number), lowestPageCount: batch.pageCount))
            s.queuedBytes += size
            // Past the bound, the oldest images go; their page numbers stay, so
            // those pages are re-read. Updates without images merge into one, so
            // a connection that reads rarely holds one entry, not one per version.
            var i = 0
            while s.queuedBytes > maxQueuedBytes, i < s.queue.count {
                if let pages = s.queue[i].pages {
                    s.queuedBytes -= pages.reduce(0) { $0 + $1.data.count }
                    s.queue[i].pages = nil
                }
                if i > 0, s.queue[i - 1].pages == nil {
                    let later = s.queue.remove(at: i)
                    var merged = s.queue[i - 1]
                    merged.sizeChanged = merged.sizeChanged || later.sizeChanged || later.pageSize != merged.pageSize
                    merged.numbers = Array(Set(merged.numbers).union(later.numbers))
                    merged.lowestPageCount = min(merged.lowestPageCount, later.lowestPageCount)
                    merged.version = later.version
                    merged.pageSize = later.pageSize
                    merged.pageCount = later.pageCount
                    s.queue[i - 1] = merged
                } else {
                    i += 1
                }
            }
        }
        if let refusal { refuse(refusal, generation: generation) }
        changed.broadcast()
    }

    private func refuse(_ reason: String, generation: UInt64) {
        state.withLock { s in
            guard s.refusal == nil else { return }
            s.refusal = reason
            s.queue = []
            s.queuedBytes = 0
            s.live = false
        }
        // The stream is cancelled by the thread (this runs with the client's connection locked).
        poke()
        changed.broadcast()
    }
}

/// A condition variable for "something changed", with a deadline.
final class Condition: @unchecked Sendable {
    // Safe: the mutex and condition live at fixed heap addresses and are only used through pthread calls.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let cond = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var serial: UInt64 = 0

    init() {
        pthread_mutex_init(mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(cond, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(cond)
        pthread_mutex_destroy(mutex)
        cond.deallocate()
        mutex.deallocate()
    }

    func broadcast() {
        pthread_mutex_lock(mutex)
        serial &+= 1
        pthread_cond_broadcast(cond)
        pthread_mutex_unlock(mutex)
    }

    /// Returns at the next broadcast after the call, or at `deadline`.
    func wait(until deadline: ContinuousClock.Instant) {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        let start = serial
        while serial == start {
            let left = deadline - .now
            guard left > .zero else { return }
            var now = timespec()
            clock_gettime(CLOCK_MONOTONIC, &now)
            let (s, atto) = left.components
            var nanos = Int(now.tv_nsec) + Int(atto / 1_000_000_000)
            var seconds = Int(now.tv_sec) + Int(s) + nanos / 1_000_000_000
            nanos %= 1_000_000_000
            if seconds < 0 { seconds = 0 }
            var until = timespec(tv_sec: seconds, tv_nsec: nanos)
            _ = pthread_cond_timedwait(cond, mutex, &until)
        }
    }
}
