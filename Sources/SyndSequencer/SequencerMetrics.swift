import CoreMetrics
import Metrics
import Prometheus
import Synchronization
import SyndProtocol
import SyndStorage

/// What a sequencer counts and measures, for Prometheus (`synd sequencer
/// --metrics-port`, served by `MetricsServer`). Recorded through swift-metrics
/// with a Prometheus factory of its own: no global state, so several
/// sequencers in one process (tests) each count their own.
///
/// Names follow Prometheus' conventions: `_total` counters, base units
/// (`_seconds`, `_bytes`). Labels stay few: a method, a reason, and (for the
/// per-database gauges filled when scraped) a database name.
public final class SequencerMetrics: Sendable {
    /// Where the metrics live; `emit()` writes them in Prometheus' text format.
    public let registry: PrometheusCollectorRegistry
    private let factory: PrometheusMetricsFactory

    private let requests: [SequencerMethod: CoreMetrics.Counter]
    private let commits: CoreMetrics.Counter
    private let duplicates: CoreMetrics.Counter
    private let commitSeconds: CoreMetrics.Timer
    private let fsyncSeconds: CoreMetrics.Timer
    private let batchBytes: CoreMetrics.Recorder
    private let batchPages: CoreMetrics.Recorder
    private let pagesRead: CoreMetrics.Counter
    private let refusals = Mutex<[String: CoreMetrics.Counter]>([:])
    private let leasesGranted: CoreMetrics.Counter
    private let leasesAfterWaiting: CoreMetrics.Counter
    private let leasesLost: CoreMetrics.Counter
    private let leasesReclaimed: CoreMetrics.Counter
    private let connections: CoreMetrics.Gauge
    private let connectionsRefused: CoreMetrics.Counter
    private let connectionsTimedOut: CoreMetrics.Counter
    /// When a refused connection was last logged (they are logged at most every 10 s).
    private let lastRefusalLogged = Mutex<ContinuousClock.Instant?>(nil)
    private let storeSize: CoreMetrics.Gauge
    private let openConnections = Atomic<Int>(0)
    private let follows = Mutex<FollowStreams>(FollowStreams())
    /// Gauges per database, made when a scrape first sees the database.
    private let perDatabase = Mutex<[String: DatabaseGauges]>([:])

    public init() {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        // Commits take hundreds of microseconds to tens of milliseconds; fsyncs about as long.
        let fine: [Duration] = [
            .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5),
            .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .seconds(1), .seconds(5),
        ]
        factory.durationHistogramBuckets = ["synddb_commit_duration_seconds": fine, "synddb_fsync_duration_seconds": fine]
        factory.valueHistogramBuckets = [
            "synddb_batch_bytes": [1024, 4096, 16384, 65536, 262_144, 1_048_576, 4_194_304, 16_777_216, 67_108_864, 268_435_456],
            "synddb_batch_pages": [1, 2, 4, 8, 16, 64, 256, 1024, 4096, 16384, 65536],
        ]
        self.registry = registry
        self.factory = factory
        var requests: [SequencerMethod: CoreMetrics.Counter] = [:]
        for method in SequencerMethod.allCases {
            requests[method] = CoreMetrics.Counter(label: "synddb_requests_total", dimensions: [("method", String(method.name))], factory: factory)
        }
        self.requests = requests
        commits = CoreMetrics.Counter(label: "synddb_commits_total", factory: factory)
        duplicates = CoreMetrics.Counter(label: "synddb_commit_duplicates_total", factory: factory)
        commitSeconds = CoreMetrics.Timer(label: "synddb_commit_duration_seconds", factory: factory)
        fsyncSeconds = CoreMetrics.Timer(label: "synddb_fsync_duration_seconds", factory: factory)
        batchBytes = CoreMetrics.Recorder(label: "synddb_batch_bytes", aggregate: true, factory: factory)
        batchPages = CoreMetrics.Recorder(label: "synddb_batch_pages", aggregate: true, factory: factory)
        pagesRead = CoreMetrics.Counter(label: "synddb_pages_read_total", factory: factory)
        leasesGranted = CoreMetrics.Counter(label: "synddb_leases_granted_total", factory: factory)
        leasesAfterWaiting = CoreMetrics.Counter(label: "synddb_leases_taken_over_total", factory: factory)
        leasesLost = CoreMetrics.Counter(label: "synddb_leases_lost_total", factory: factory)
        leasesReclaimed = CoreMetrics.Counter(label: "synddb_leases_reclaimed_total", factory: factory)
        connections = CoreMetrics.Gauge(label: "synddb_connections", factory: factory)
        connectionsRefused = CoreMetrics.Counter(label: "synddb_connections_refused_total", factory: factory)
        connectionsTimedOut = CoreMetrics.Counter(label: "synddb_connections_timed_out_total", factory: factory)
        storeSize = CoreMetrics.Gauge(label: "synddb_store_size_bytes", factory: factory)
    }

    // MARK: - Recording

    func request(_ method: SequencerMethod) {
        requests[method]?.increment()
    }

    /// A commit the store applied (or, `duplicate`, answered from the first attempt's record).
    func committed(_ request: CommitRequest, duplicate: Bool, took: Duration) {
        commitSeconds.record(duration: took)
        if duplicate {
            duplicates.increment()
            return
        }
        commits.increment()
        batchPages.record(request.pages.count)
        batchBytes.record(request.pages.reduce(request.changeset.count) { $0 + $1.data.count })
    }

    /// A call answered with an error: counted by method and reason.
    func refused(_ method: SequencerMethod, _ error: SequencerError) {
        let reason = Self.reason(error)
        let key = method.rawValue + "\u{0}" + reason
        let counter = refusals.withLock { r in
            if let c = r[key] { return c }
            let c = CoreMetrics.Counter(label: "synddb_refusals_total", dimensions: [("method", String(method.name)), ("reason", reason)], factory: factory)
            r[key] = c
            return c
        }
        counter.increment()
    }

    func pagesServed(_ count: Int) { pagesRead.increment(by: count) }

    /// How long one fsync of the embedded store's log took.
    public func fsynced(_ took: Duration) { fsyncSeconds.record(duration: took) }

    func leaseGranted(afterWaiting: Bool) {
        leasesGranted.increment()
        if afterWaiting { leasesAfterWaiting.increment() }
    }

    /// A held lease lapsed or moved on while its holder's HoldLease call was open.
    func leaseLost() { leasesLost.increment() }

    /// The sequencer released a lease because its holder's connection closed.
    func leaseReclaimed() { leasesReclaimed.increment() }

    /// A connection closed at once: `--max-connections` were open. True when
    /// it should be logged (the first in 10 s).
    func connectionRefused() -> Bool {
        connectionsRefused.increment()
        return lastRefusalLogged.withLock { last in
            let now = ContinuousClock.now
            if let last, now - last < .seconds(10) { return false }
            last = now
            return true
        }
    }

    /// A connection closed because it sent no HTTP/2 preface in time.
    func connectionTimedOut() { connectionsTimedOut.increment() }

    func connectionOpened() { connections.record(openConnections.add(1, ordering: .relaxed).newValue) }
    func connectionClosed() { connections.record(openConnections.subtract(1, ordering: .relaxed).newValue) }

    /// A follow stream of `database` starts, having been sent up to `sent`;
    /// `followSent` then tells how far it got.
    func followStarted(_ database: String, sent: UInt64) -> UInt64 {
        follows.withLock { f in
            f.next += 1
            f.open[f.next] = (database, sent)
            return f.next
        }
    }

    func followSent(_ id: UInt64, upTo version: UInt64) {
        follows.withLock { f in f.open[id]?.version = version }
    }

    func followEnded(_ id: UInt64) {
        follows.withLock { f in _ = f.open.removeValue(forKey: id) }
    }

    /// Why a call was refused, as a label: a few stable words, not the message.
    static func reason(_ error: SequencerError) -> String {
        switch error.code {
        case .aborted: "stale_base"
        case .failedPrecondition: "lease"
        case .invalidArgument: "invalid"
        case .resourceExhausted: "too_large"
        case .notFound: "not_found"
        case .outOfRange: "out_of_range"
        case .unavailable: "unavailable"
        case .unimplemented: "unimplemented"
        case .dataLoss: "data_loss"
        case .cancelled: "cancelled"
        case .deadlineExceeded: "deadline"
        case .permissionDenied: "permission_denied"
        case .unauthenticated: "unauthenticated"
        default: "internal"
        }
    }

    /// Client connections open now.
    public var connectionsOpen: Int { openConnections.load(ordering: .relaxed) }

    /// Per database: its follow streams open now, and how far the furthest
    /// behind is from the head in `statuses`.
    func followers(of statuses: [DatabaseStatus]) -> [String: (streams: Int, lag: UInt64)] {
        let heads = Dictionary(statuses.map { ($0.name, $0.version) }, uniquingKeysWith: { a, _ in a })
        let open = follows.withLock { $0.open.values.map { $0 } }
        var out: [String: (streams: Int, lag: UInt64)] = [:]
        for (database, version) in open {
            let head = heads[database] ?? version
            let behind = head > version ? head - version : 0
            let before = out[database] ?? (0, 0)
            out[database] = (before.streams + 1, max(before.lag, behind))
        }
        return out
    }

    // MARK: - Scraping

    /// The metrics in Prometheus' text format, with the gauges that are read
    /// from `store` when scraped (databases, follower lag) brought up to date.
    public func emit(store: any SequencerStore) -> [UInt8] {
        refresh(store)
        var out: [UInt8] = []
        registry.emit(into: &out)
        return out
    }

    private func refresh(_ store: any SequencerStore) {
        if let bytes = try? store.storedBytes() { storeSize.record(bytes) }
        // A store that cannot answer now (PostgreSQL away) leaves the gauges as they were.
        guard let statuses = try? store.databaseStatuses() else { return }
        let followers = followers(of: statuses)
        perDatabase.withLock { gauges in
            for status in statuses {
                let g = gauges[status.name] ?? DatabaseGauges(status.name, factory)
                gauges[status.name] = g
                g.version.record(Int64(clamping: status.version))
                g.oldest.record(Int64(clamping: status.oldestVersion))
                g.bytes.record(Int64(status.pageCount) * Int64(status.pageSize))
                g.followers.record(followers[status.name]?.streams ?? 0)
                g.lag.record(Int64(clamping: followers[status.name]?.lag ?? 0))
            }
            // A dropped database's gauges go with it.
            let names = Set(statuses.map(\.name))
            for (name, g) in gauges where !names.contains(name) {
                g.destroy()
                gauges[name] = nil
            }
        }
    }
}

/// The follow streams (StreamBatches with `follow`) open now: each one's
/// database and the newest version it was sent.
private struct FollowStreams {
    var next: UInt64 = 0
    var open: [UInt64: (database: String, version: UInt64)] = [:]
}

/// A database's gauges, filled when scraped.
private final class DatabaseGauges: Sendable {
    let version: CoreMetrics.Gauge
    let oldest: CoreMetrics.Gauge
    let bytes: CoreMetrics.Gauge
    let followers: CoreMetrics.Gauge
    let lag: CoreMetrics.Gauge

    init(_ database: String, _ factory: PrometheusMetricsFactory) {
        let d = [("database", database)]
        version = CoreMetrics.Gauge(label: "synddb_database_version", dimensions: d, factory: factory)
        oldest = CoreMetrics.Gauge(label: "synddb_database_oldest_version", dimensions: d, factory: factory)
        bytes = CoreMetrics.Gauge(label: "synddb_database_size_bytes", dimensions: d, factory: factory)
        followers = CoreMetrics.Gauge(label: "synddb_follow_streams", dimensions: d, factory: factory)
        lag = CoreMetrics.Gauge(label: "synddb_follower_lag_versions", dimensions: d, factory: factory)
    }

    func destroy() {
        for g in [version, oldest, bytes, followers, lag] { g.destroy() }
    }
}
