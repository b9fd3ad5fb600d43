/// How `Database.open` connects. Each field becomes a URI parameter of the
/// `file:` name SQLite opens (see `FileOptions` in the VFS for the list).
public struct DatabaseOptions: Sendable {
    /// Open read-only: never takes the writer lease; every read transaction
    /// asks the sequencer for the latest version (and the pages changed since).
    public var readOnly = false
    /// Page size of a new database (SQLite's `PRAGMA page_size`); nil keeps SQLite's default.
    public var pageSize: Int?
    /// Writer lease time-to-live; renewed in the background at a third of it.
    public var leaseTTLMs = 10_000
    /// Renew the lease in the background (turn off only to test lapses).
    public var renewLease = true
    /// Deadline of one request to the sequencer.
    public var timeoutMs = 5_000
    /// Upper bound of the VFS page cache.
    public var cacheMB = 256
    /// How long SQLite retries a busy lock (https://www.sqlite.org/c3ref/busy_timeout.html).
    public var busyTimeoutMs = 0
    /// How long one attempt at the write lock waits on the sequencer for the
    /// connection holding the lease to hand it over, before `SQLITE_BUSY`.
    public var lockWaitMs = 500
    /// Seal each transaction's changeset into its commit. Turn off only to
    /// measure its cost: validators reject a history without changesets.
    public var captureChangesets = true
    /// Megabytes of a write transaction's pages (and of the rows capture puts in
    /// order, up to 16) kept in memory; the rest goes to a temporary file (0: never).
    public var spillMB = 64
    /// PEM file of the CA that signed an https sequencer's certificate (default: the system store).
    public var tlsCAFile: String?
    /// SQLite's journal for rollback; kept in memory in every mode.
    public var journalMode = "MEMORY"
    /// A read-only connection follows the database's batch stream: each batch
    /// is checked (signature, hash chain) and applied to its cache, so a read
    /// transaction makes no request while the stream keeps up. Without a bound
    /// it serves what it has received (usually milliseconds behind); see
    /// `maxLagMs` and `minVersion`.
    public var follow = false
    /// A follower serves a read transaction only when it knew, at most this
    /// many milliseconds ago, that it had every commit; otherwise it waits (up
    /// to `timeoutMs`), then fails with `SQLITE_BUSY`. Implies `follow`.
    public var maxLagMs: Int?
    /// A follower's read transactions wait for this version (read-your-writes:
    /// pass the writer's `Statistics.version`), then fail with `SQLITE_BUSY`.
    /// Implies `follow`; `PRAGMA synddb_min_version = V` changes it later.
    public var minVersion: UInt64?
    /// The sequencer's Ed25519 key (`ed25519:` and 64 hex digits, as `synd
    /// sequencer` prints it): a follower checks batches with it alone, so
    /// nobody between it and the sequencer can substitute another key.
    public var sequencerKey: String?
    /// Open a past state, read-only (time travel): the connection stays at
    /// that version for its whole life. Opening fails, naming the oldest
    /// version kept, when the sequencer no longer keeps it.
    public var asOf: PastState?

    /// A past state of a database.
    public enum PastState: Sendable, Equatable {
        /// The state right after commit `version` (`Database.Statistics.version`, `synd log`).
        case version(UInt64)
        /// The last version committed at or before this time, in milliseconds since the Unix epoch.
        case time(unixMilliseconds: UInt64)
    }

    public init() {}
}
