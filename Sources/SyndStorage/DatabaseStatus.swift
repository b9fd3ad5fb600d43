/// One database as `synd status` and the sequencer's metrics show it.
public struct DatabaseStatus: Sendable, Equatable {
    public var name: String
    /// The head: the newest committed version (0: none yet).
    public var version: UInt64
    /// The oldest version still readable (retention, or the last drop).
    public var oldestVersion: UInt64
    public var pageSize: UInt32
    public var pageCount: UInt32
    /// The writer lease, if one is live now.
    public var lease: LeaseStatus?

    /// A live writer lease.
    public struct LeaseStatus: Sendable, Equatable {
        public var holder: String
        public var epoch: UInt64
        public var msLeft: Int64

        public init(holder: String, epoch: UInt64, msLeft: Int64) {
            self.holder = holder
            self.epoch = epoch
            self.msLeft = msLeft
        }
    }

    public init(name: String, version: UInt64, oldestVersion: UInt64, pageSize: UInt32, pageCount: UInt32, lease: LeaseStatus? = nil) {
        self.name = name
        self.version = version
        self.oldestVersion = oldestVersion
        self.pageSize = pageSize
        self.pageCount = pageCount
        self.lease = lease
    }
}
