import Dispatch
#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import SyndLedger
import SyndProtocol
import SyndSequencer
import SyndStorage

/// The sequencer's request decoding and handling: request bytes go straight
/// into `SequencerService` (the handlers the gRPC server calls with each
/// call's request message), against a real `PageStore` made fresh for each
/// input in a private folder (on tmpfs when there is one).
///
/// Input: a few calls, each one byte picking the RPC and a 2-byte-length chunk
/// of request bytes. Before them the store holds database `db`, leased to
/// holder `w` at epoch 1, so a fuzzed commit is one call away.
///
/// Promises: every call answers or fails with a `SequencerError` whose code is not
/// UNKNOWN, INTERNAL or DATA_LOSS (input the sequencer cannot use must be
/// refused as such, not break it) and whose message is not empty. Afterwards
/// the store opens again (its heads verify) and every batch it kept carries a
/// valid seal chained to the one before it.
public enum SequencerRequestTarget {
    public static let name = "sequencer"

    /// The RPCs in the order the selector byte picks them. Only append: the
    /// corpus and the regression inputs depend on the order.
    static let rpcs: [SequencerMethod] = [
        .getCapabilities, .openDatabase, .acquireLease, .renewLease, .releaseLease, .holdLease,
        .readPages, .commit, .getCommitStatus, .getSequencerKey, .streamBatches, .dropDatabase,
    ]

    static let maxCalls = 16
    static let directory = scratchDirectory("sequencer")

    public static func run(_ data: [UInt8]) {
        emptyDirectory(directory)
        var configuration = StoreConfiguration(directory: directory)
        configuration.retainedVersions = 3
        configuration.maxBatchBytes = 1 << 20
        var names: Set<String> = ["db"]
        var store: PageStore?
        do {
            let created = try PageStore(configuration)
            _ = try created.open(OpenDatabaseRequest(name: "db", create: true))
            var lease = AcquireLeaseRequest()
            lease.database = "db"
            lease.holder = "w"
            lease.ttlMs = 60_000
            _ = try created.acquireLease(lease)
            store = created
        } catch {
            violated(name, "cannot set up the store: \(error)")
        }
        do {
            let service = SequencerService(store: store!, holdCheckInterval: .milliseconds(5))
            var input = FuzzInput(data)
            var calls = 0
            while !input.isAtEnd, calls < maxCalls {
                calls += 1
                let method = rpcs[Int(input.byte()) % rpcs.count]
                let bytes = input.chunk()
                if method == .openDatabase, let r = try? OpenDatabaseRequest(serializedBytes: bytes) { names.insert(r.name) }
                call(method, bytes, service)
            }
        }
        // A pool thread may hold the store a moment after the last call
        // returned. Closing it here, on this thread, finishes its checkpoint
        // before the second open below (which would otherwise meet it as BUSY).
        let deadline = ContinuousClock.now + .seconds(5)
        while !isKnownUniquelyReferenced(&store) {
            guard ContinuousClock.now < deadline else { violated(name, "the store is still referenced 5 s after its last call") }
            usleep(200)
        }
        store = nil
        checkStore(configuration, names: names)
    }

    /// One RPC as the server runs it: the service's handler with the request's bytes.
    static func call(_ method: SequencerMethod, _ bytes: [UInt8], _ service: SequencerService) {
        if method == .commit { checkIncrementalDecoding(bytes) }
        let outcome: Result<Void, any Error>
        switch method {
        case .holdLease:
            // The client has already left: the call answers, then releases what it held.
            outcome = blocking { try await service.holdLease(request: bytes, stream: DepartedClient()) }
        case .streamBatches:
            // A following stream runs until cancelled: one pass, then its sleep ends it.
            let follow = (try? StreamBatchesRequest(serializedBytes: bytes))?.follow ?? false
            outcome = blocking {
                let stream = Task { try await service.streamBatches(request: bytes, stream: DepartedClient()) }
                if follow { stream.cancel() }
                try await stream.value
            }
        default:
            let answer = Mutex<Result<[UInt8], SequencerError>?>(nil)
            let done = DispatchSemaphore(value: 0)
            service.unary(method, request: bytes) { result in
                answer.withLock { $0 = result }
                done.signal()
            }
            done.wait()
            outcome = answer.withLock { $0! }.map { _ in }.mapError { $0 }
        }
        guard case .failure(let failure) = outcome else { return }
        guard let error = failure as? SequencerError else {
            violated(name, "\(method.rawValue) failed with \(type(of: failure)), not a gRPC status: \(failure)")
        }
        guard ![.unknown, .internal, .dataLoss].contains(error.code) else {
            violated(name, "\(method.rawValue) answered \(error.code): \(error.message)")
        }
        guard !error.message.isEmpty else { violated(name, "\(method.rawValue) answered \(error.code) without a message") }
    }

    /// The server decodes a Commit request as its bytes arrive
    /// (`IncrementalDecoder`), in pieces the network decides: cut into uneven
    /// pieces, the bytes must decode to what they decode to whole, or be refused
    /// by both.
    static func checkIncrementalDecoding(_ bytes: [UInt8]) {
        let whole = try? CommitRequest(serializedBytes: bytes)
        for pieces in [[bytes.count], [1, 2, 3, 5, 8], [7, 64, 1]] {
            var decoder = IncrementalDecoder<CommitRequest>(length: bytes.count, direct: (8, \.changeset))
            var decoded: CommitRequest?
            do {
                var at = 0, i = 0
                while at < bytes.count {
                    let n = min(max(1, pieces[i % pieces.count]), bytes.count - at)
                    try bytes[at..<(at + n)].withUnsafeBytes { try decoder.append($0) }
                    at += n
                    i += 1
                }
                decoded = try decoder.finish()
            } catch let error as ProtocolError {
                guard !error.description.isEmpty else { violated(name, "incremental decoding threw a ProtocolError without a message") }
                decoded = nil
            } catch {
                violated(name, "incremental decoding threw \(type(of: error)), not a ProtocolError")
            }
            if decoded != whole {
                violated(name, "a CommitRequest of \(bytes.count) bytes in pieces of \(pieces): incremental decoding \(decoded == nil ? "refused it" : "gave another request") than decoding it whole (\(whole == nil ? "refused" : "decoded"))")
            }
        }
    }

    /// The store the calls left: it opens, and every kept batch of the databases
    /// named verifies and chains to the one before it.
    static func checkStore(_ configuration: StoreConfiguration, names: Set<String>) {
        let store: PageStore
        do {
            store = try PageStore(configuration)
        } catch {
            violated(name, "the store does not open again after the calls: \(error)")
        }
        let key = store.signingKey.publicKey
        for database in names.sorted() {
            do throws(SequencerError) {
                let head = try store.headVersion(of: database)
                var previous: Batch?
                var version: UInt64 = 1
                while version <= head {
                    defer { version += 1 }
                    let kept: Batch?
                    do throws(SequencerError) {
                        kept = try store.batch(database: database, version: version)
                    } catch where error.code == .outOfRange {
                        kept = nil  // pruned: before the retention window
                    }
                    guard let batch = kept else { previous = nil; continue }
                    let chain = previous?.hash ?? batch.previousHash
                    if version == 1, batch.previousHash != BatchSeal.genesis {
                        violated(name, "batch 1 of '\(database)' does not start from the genesis hash")
                    }
                    if let problem = BatchSeal.problem(with: batch, expectedVersion: version, previousHash: chain, publicKey: key) {
                        violated(name, "batch \(version) of '\(database)': \(problem)")
                    }
                    previous = batch
                }
            } catch {
                if error.code == .notFound || error.code == .invalidArgument || error.code == .outOfRange { continue }
                violated(name, "reading back '\(database)' failed: \(error)")
            }
        }
    }

    /// Some call sequences an honest client makes.
    public static var seeds: [[UInt8]] {
        func call(_ method: SequencerMethod, _ message: some WireMessage) -> [UInt8] {
            let bytes = message.serializedBytes()
            return [UInt8(rpcs.firstIndex(of: method)!), UInt8(bytes.count >> 8), UInt8(bytes.count & 0xFF)] + bytes
        }
        func commit(base: UInt64, epoch: UInt64 = 1, holder: String = "w", txn: String, pages: [UInt32], count: UInt32, schema: Bool = false) -> CommitRequest {
            var c = CommitRequest()
            c.database = "db"
            c.baseVersion = base
            c.leaseEpoch = epoch
            c.holder = holder
            c.txnID = Array(txn.utf8)
            c.pageSize = 512
            c.pageCount = count
            c.pages = pages.map { Page(number: $0, data: [UInt8](repeating: UInt8(truncatingIfNeeded: $0), count: 512)) }
            c.changeset = [0x54, 0x02, 0x01, 0x00, 0x74, 0x00, 0x12, 0x00, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01]
            if schema {
                c.schemaChanged = true
                c.schema = [SchemaObject(type: "table", name: "t", tableName: "t", sql: "CREATE TABLE t(id INTEGER PRIMARY KEY)")]
                c.unauditedTables = ["log"]
            }
            return c
        }
        var open = OpenDatabaseRequest(name: "other", create: true)
        var read = ReadPagesRequest()
        read.database = "db"
        read.pageNumbers = [1, 2, 3]
        var status = GetCommitStatusRequest()
        status.database = "db"
        status.txnID = Array("t1".utf8)
        var stream = StreamBatchesRequest()
        stream.database = "db"
        var renew = RenewLeaseRequest()
        renew.database = "db"
        renew.holder = "w"
        renew.epoch = 1
        renew.ttlMs = 5000
        var hold = HoldLeaseRequest()
        hold.database = "db"
        hold.holder = "w"
        hold.epoch = 1
        var release = ReleaseLeaseRequest()
        release.database = "db"
        release.holder = "w"
        release.epoch = 1
        var acquire = AcquireLeaseRequest()
        acquire.database = "db"
        acquire.holder = "x"
        acquire.ttlMs = 1000
        let first = commit(base: 0, txn: "t1", pages: [1, 2], count: 2, schema: true)
        var seeds: [[UInt8]] = [
            call(.getCapabilities, GetCapabilitiesRequest()) + call(.getSequencerKey, GetSequencerKeyRequest()) + call(.openDatabase, open),
            call(.commit, first) + call(.commit, first) + call(.readPages, read) + call(.getCommitStatus, status)
                + call(.commit, commit(base: 1, txn: "t2", pages: [3], count: 3)) + call(.streamBatches, stream),
            call(.renewLease, renew) + call(.holdLease, hold) + call(.acquireLease, acquire)
                + call(.commit, commit(base: 0, txn: "t3", pages: [1], count: 1)) + call(.releaseLease, release),
            call(.commit, commit(base: 0, txn: "t1", pages: [1], count: 1)) + call(.commit, commit(base: 1, txn: "t4", pages: [2], count: 1)),
        ]
        var drop = DropDatabaseRequest()
        drop.database = "db"
        drop.holder = "w"
        drop.epoch = 1
        let again = commit(base: 2, epoch: 2, txn: "t5", pages: [1], count: 1)
        var reacquire = AcquireLeaseRequest()
        reacquire.database = "db"
        reacquire.holder = "w"
        seeds.append(
            call(.commit, first) + call(.dropDatabase, drop) + call(.streamBatches, stream) + call(.readPages, read)
                + call(.acquireLease, reacquire) + call(.commit, again) + call(.dropDatabase, drop))
        open.create = false
        read.version = 1
        stream.follow = true
        seeds.append(call(.openDatabase, open) + call(.readPages, read) + call(.streamBatches, stream))
        return seeds
    }
}

/// Runs `body` to its end on Swift's concurrency pool; the calling thread waits.
func blocking(_ body: @escaping @Sendable () async throws -> Void) -> Result<Void, any Error> {
    let result = Mutex<Result<Void, any Error>?>(nil)
    let done = DispatchSemaphore(value: 0)
    Task {
        let outcome: Result<Void, any Error>
        do { try await body(); outcome = .success(()) } catch { outcome = .failure(error) }
        result.withLock { $0 = outcome }
        done.signal()
    }
    done.wait()
    return result.withLock { $0! }
}

/// A client that left as soon as it asked: what is sent to it is dropped.
struct DepartedClient: SequencerResponseStream {
    func send(_ message: [UInt8]) async throws {}
    func clientLeft() async {}
}
