import SyndProtocol

/// How a `PageStore` keeps data.
public struct StoreConfiguration: Sendable {
    /// Folder that holds the store; created if missing.
    public var directory: String
    /// Versions behind the head that stay readable (point-in-time reads).
    public var retainedVersions: UInt64 = 10_000
    /// A snapshot of a database is sealed each time its head moves this many
    /// versions past its last one (0: only on request).
    public var snapshotEveryVersions: UInt64 = 0
    /// Snapshots kept per database (the newest).
    public var snapshotsKept = 2
    /// Size at which the log starts a new segment (only closed ones are compacted).
    public var segmentBytes = 64 << 20
    /// Told what an operator should know of the store's background work (a compaction that failed).
    public var events: (@Sendable (String) -> Void)?
    /// Told how long each fsync of the log took (a group of commits; the sequencer's metrics).
    public var syncTimes: (@Sendable (Duration) -> Void)?
    /// Largest batch, in bytes of page data.
    public var maxBatchBytes: UInt64 = 256 << 20
    /// Most pages one read may ask for.
    public var maxPagesPerRead: UInt32 = 4096
    /// Lease time-to-live when a request asks for 0.
    public var defaultLeaseTTLMs: UInt32 = 10_000
    /// Longest lease a writer may ask for.
    public var maxLeaseTTLMs: UInt32 = 300_000
    /// Test hook: a commit is refused with the returned error before it is applied.
    public var commitFault: (@Sendable (CommitRequest) -> SequencerError?)?
    /// Test hook: a commit is applied, then answered with the returned error
    /// (what a proxy's HTTP 503 or a failure after the work looks like to a client).
    /// A retry is still answered from the idempotency record.
    public var commitAnswerFault: (@Sendable (CommitRequest) -> SequencerError?)?

    public init(directory: String) {
        self.directory = directory
    }
}
