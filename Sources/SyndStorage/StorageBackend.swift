import SyndProtocol

/// What the sequencer's logic needs from storage: the seam between the two.
///
/// `PageStore` is the logic: it names databases, fences writers with leases,
/// checks base versions, deduplicates retries, validates and seals batches,
/// numbers versions and decides retention. A backend only keeps what the logic
/// decided, durably, and answers reads of it. The embedded `LogStore` is the
/// first backend; `StorageBackendConformance` (in the tests) is the contract
/// every backend must pass. The contract, in short:
///
/// - **Durable on completion.** `append` calls its completion only once the
///   record would survive a crash of the process or the machine (fsync or
///   equivalent), and in submission order. A failed append means the backend
///   can no longer promise that: every later append fails too, until it is
///   opened again.
/// - **All or nothing.** After a crash at any instant a record is either
///   entirely there or not at all, and no record is there unless every record
///   submitted before it is. Damage (a record that fails its checksum, a gap)
///   is reported, never served and never silently skipped, except a torn tail:
///   records whose append never completed, which are dropped and reported.
/// - **Reads see completed appends.** The logic only reads versions whose
///   append completed, and page reads of a version return what the newest
///   record at or below that version wrote (nil: never written, or cut off by
///   a smaller page count later; the logic reads it as zeros).
public protocol StorageBackend: AnyObject, Sendable {
    /// The databases found when the backend was opened, with their heads.
    var recovered: [RecoveredDatabase] { get }
    /// What opening found and did that an operator should know (a torn tail dropped, a format imported).
    var recoveryNotes: [String] { get }
    /// Makes `record` durable, then calls `completion` (on a backend thread).
    func append(_ record: StoreRecord, completion: @escaping @Sendable (Result<Void, SequencerError>) -> Void)
    /// Page `number` of `database` as of `version`: the newest image at or
    /// below it, or nil (reads as zeros). DATA_LOSS if the image fails its checksum.
    func page(database: Int64, number: UInt32, version: UInt64) throws(SequencerError) -> Page?
    /// Pages `numbers` of `database` as of `version`, in the order asked (nil
    /// entries read as zeros). What `page` answers for each, in one go.
    func pages(database: Int64, numbers: [UInt32], version: UInt64) throws(SequencerError) -> [Page?]
    /// Page size and count of batch `version`, or nil if it is not kept.
    func sizes(database: Int64, version: UInt64) -> (pageSize: UInt32, pageCount: UInt32)?
    /// The commit time (its seal's `committed_at_ms`) of batch `version`, or
    /// nil if it is not kept. Cheap: reads "as of a time" search with it.
    func committedAt(database: Int64, version: UInt64) -> UInt64?
    /// Batch `version` with its pages and seal (its `database` is the name it
    /// was stored under), or nil if it is not kept.
    func batch(database: Int64, version: UInt64) throws(SequencerError) -> Batch?
    /// The version a commit with `txnID` made, if it is kept.
    func committedVersion(database: Int64, txnID: [UInt8]) -> UInt64?
}

/// One thing the logic asks a backend to keep.
public enum StoreRecord: Sendable {
    /// A new database named `name` with id `database`.
    case create(database: Int64, name: String)
    /// A sealed batch (pages included) at `batch.version`, made by the commit `txnID`.
    /// A page count below the previous batch's cuts off the pages above it.
    case batch(database: Int64, txnID: [UInt8], batch: Batch)
    /// A sealed drop batch: everything of `database` before it is gone, and it is the oldest batch kept.
    case drop(database: Int64, txnID: [UInt8], batch: Batch)
    /// No lease epoch above `ceiling` has been granted.
    case epochCeiling(database: Int64, ceiling: UInt64)
    /// Versions below `keepFrom` need no longer be readable, except what a read at `keepFrom` sees.
    case prune(database: Int64, keepFrom: UInt64)
}

/// A database as a backend found it when opened.
public struct RecoveredDatabase: Sendable {
    public var id: Int64
    public var name: String
    public var version: UInt64 = 0
    public var pageSize: UInt32 = 0
    public var pageCount: UInt32 = 0
    public var oldestVersion: UInt64 = 0
    /// No lease epoch above it was ever granted.
    public var epochCeiling: UInt64 = 0

    public init(id: Int64, name: String) {
        self.id = id
        self.name = name
    }
}

extension StorageBackend {
    /// One `page` call per number: backends that can read many at once do better.
    public func pages(database: Int64, numbers: [UInt32], version: UInt64) throws(SequencerError) -> [Page?] {
        var out: [Page?] = []
        out.reserveCapacity(numbers.count)
        for n in numbers { out.append(try page(database: database, number: n, version: version)) }
        return out
    }
}
