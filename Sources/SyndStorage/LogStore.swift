import Dispatch
import Synchronization
import SyndProtocol

#if canImport(Glibc)
import Glibc
#endif

/// The embedded storage backend: an append-only log of sealed batches in
/// segment files, with an in-memory index of every kept page version.
///
/// - **Group commit.** Appends queue; one thread writes whatever is queued,
///   one record after another, ends the group with a group-end record and
///   fsyncs once for all of them, then updates the index and completes them.
///   A lone append does not wait for company: the writer starts at once, and
///   appends that arrive during an fsync form the next group. Databases share
///   the fsync and wait for nothing else of each other.
/// - **One write per page image.** A page's bytes are written once, inside its
///   batch record, and read back with one `pread` at the offset the index
///   keeps: no second copy, no B-tree.
/// - **Crash safety.** See `LogRecord`: a group takes effect only with its
///   group end, so recovery after a crash keeps whole groups. Anything after
///   the last intact group end of the newest segment is a torn tail (never
///   acknowledged): it is cut off and reported. A damaged record anywhere
///   before it stops the store from opening, with what was found where.
///
/// - **Space.** Closed segments whose bytes are mostly what no read sees any
///   more (batches past the retention window, superseded images) are
///   rewritten in the background: see `LogStore+Compaction`.
public final class LogStore: StorageBackend {
    /// The folder of the segment files.
    public let directory: String
    public let recovered: [RecoveredDatabase]
    public let recoveryNotes: [String]
    let options: LogStoreOptions
    let indexes: Mutex<[Int64: DatabaseIndexCell]>
    /// Open files by key: a segment's number (or, once compaction rewrote it,
    /// a key with `CompactionState.rewrittenBit`), or a pages file's number.
    let segments: Mutex<[UInt32: LogSegment]>
    /// Per pages file, the key of the segment whose record refers to it.
    let pagesOwners: Mutex<[UInt32: UInt32]>
    /// The number of the segment appends go to (never compacted).
    let activeSegment: Atomic<UInt32>
    let compactionThread = DispatchQueue(label: "synd.store.compaction", qos: .utility)
    let compaction = CompactionState()
    private let queue: Mutex<AppendQueue>
    let appender: LogAppender
    let writerThread = DispatchQueue(label: "synd.store.log-writer")
    /// Writes large batches' pages to pages files, one at a time, so that
    /// they never hold up the log's writer (and other databases' commits).
    private let bulkThread = DispatchQueue(label: "synd.store.log-bulk")
    private let pagesFiles: PagesFileNumbers


    struct Pending {
        var record: LogRecord
        var update: IndexUpdate
        var completion: @Sendable (Result<Void, SequencerError>) -> Void
        /// Needs no fsync of its own (a prune: lost, it only keeps more history),
        /// so it waits for the next group, or for `flushDelay` if none comes.
        var waitsForCompany: Bool {
            if case .prune = update { return true }
            return false
        }
    }

    /// How long appends that wait for company wait before they are written alone.
    static let flushDelay = DispatchTimeInterval.milliseconds(100)

    struct AppendQueue {
        var pending: [Pending] = []
        var writing = false
        /// Appends per database that go through the bulk thread (a large batch,
        /// and whatever of its database follows it until it is in the log).
        var bulkInFlight: [Int64: Int] = [:]
        /// Set when a write or fsync failed: nothing is promised after it, so every later append fails.
        var failure: SequencerError?
        /// A write of appends that wait for company (prunes) is scheduled.
        var flushScheduled = false
    }

    /// Opens the log in `directory` (created if missing), replaying it into the index.
    public init(directory: String, options: LogStoreOptions = LogStoreOptions()) throws(SequencerError) {
        self.directory = directory
        self.options = options
        mkdir(directory, 0o755)
        let replay = try LogReplay(directory: directory)
        var cells: [Int64: DatabaseIndexCell] = [:]
        for (id, index) in replay.indexes { cells[id] = DatabaseIndexCell(index) }
        indexes = Mutex(cells)
        recovered = replay.indexes.values.sorted { $0.id < $1.id }.map(\.recovered)
        recoveryNotes = replay.notes
        var open: [UInt32: LogSegment] = replay.pagesFiles
        for segment in replay.segments { open[segment.number] = segment }
        pagesFiles = PagesFileNumbers(next: replay.nextPagesFile)
        var active = replay.segments.last
        if active == nil {
            active = try LogSegment(directory: directory, number: 1, create: true)
            try syncDirectory(directory)
            open[1] = active
        }
        segments = Mutex(open)
        pagesOwners = Mutex(replay.pagesOwners)
        activeSegment = Atomic(active!.number)
        appender = LogAppender(directory: directory, active: active!, size: replay.activeSize, groups: replay.groups,
                               segmentLimit: options.segmentLimit, syncTimes: options.syncTimes)
        queue = Mutex(AppendQueue())
        scheduleCompaction()
    }

    /// Groups written (one fsync each) since the store opened.
    public var groupsWritten: UInt64 { appender.groupsWritten.load(ordering: .relaxed) }

    public func append(_ record: StoreRecord, completion: @escaping @Sendable (Result<Void, SequencerError>) -> Void) {
        var large = false
        if case .batch(_, _, let batch) = record {
            large = batch.pages.reduce(0) { $0 + $1.data.count } > LogRecord.inlineLimit
        }
        let database = record.database
        let viaBulk = queue.withLock { q -> Bool in
            guard q.failure == nil, let database, large || q.bulkInFlight[database, default: 0] > 0 else { return false }
            q.bulkInFlight[database, default: 0] += 1
            return true
        }
        if viaBulk {
            bulkThread.async { [large] in self.writeBulk(record, large: large, completion: completion) }
            return
        }
        let encoded = LogRecord(record)
        let update = IndexUpdate(record, positions: encoded.pagePositions)
        let (start, failure) = queue.withLock { q -> (Bool, SequencerError?) in
            if let failure = q.failure { return (false, failure) }
            q.pending.append(Pending(record: encoded, update: update, completion: completion))
            if q.writing { return (false, nil) }
            q.writing = true
            return (true, nil)
        }
        if let failure {
            // Never call back on the caller's thread: it may hold a lock the completion takes.
            writerThread.async { completion(.failure(failure)) }
            return
        }
        if start { writerThread.async { self.writeGroups() } }
    }

    /// On the bulk thread: writes a large batch's pages to a pages file of its
    /// own and fsyncs it, then queues the batch's (small) record for the log;
    /// a record of a database with a large batch ahead of it is queued after it.
    private func writeBulk(_ record: StoreRecord, large: Bool, completion: @escaping @Sendable (Result<Void, SequencerError>) -> Void) {
        let database = record.database!
        var pending: Pending?
        var failure: SequencerError?
        if large, case .batch(let id, let txnID, let batch) = record {
            do throws(SequencerError) {
                let file = try LogSegment(directory: directory, number: pagesFiles.take() | LogSegment.pagesFileBit, create: true)
                var offsets: [Int] = []
                offsets.reserveCapacity(batch.pages.count)
                var at = 0
                for page in batch.pages {
                    offsets.append(at + 12)
                    at += 12 + page.data.count
                }
                let end = try file.write(pages: batch.pages, at: 0)
                guard end == at else { throw SequencerError(.internal, "store: pages file \(file.path) got \(end) bytes, not \(at)") }
                try file.sync()
                try syncDirectory(directory)
                segments.withLock { $0[file.number] = file }
                let encoded = LogRecord(external: id, txnID: txnID, batch: batch, file: file.number, offsets: offsets)
                let update = IndexUpdate.batch(database: id, version: batch.version, txnID: txnID, pageSize: batch.pageSize,
                                               pageCount: batch.pageCount, committedAtMs: batch.committedAtMs, pages: encoded.pagePositions, drop: false, external: file.number)
                pending = Pending(record: encoded, update: update, completion: completion)
            } catch {
                failure = SequencerError(.unavailable, "\(error.message); the store accepts no more writes until the sequencer restarts (it then recovers every acknowledged commit)")
            }
        } else {
            let encoded = LogRecord(record)
            pending = Pending(record: encoded, update: IndexUpdate(record, positions: encoded.pagePositions), completion: completion)
        }
        let (start, failed) = queue.withLock { q -> (Bool, SequencerError?) in
            q.bulkInFlight[database, default: 1] -= 1
            if q.bulkInFlight[database] == 0 { q.bulkInFlight[database] = nil }
            if let failure, q.failure == nil { q.failure = failure }
            if let failure = q.failure { return (false, failure) }
            q.pending.append(pending!)
            if q.writing { return (false, nil) }
            q.writing = true
            return (true, nil)
        }
        if let failed { return completion(.failure(failed)) }
        if start { writerThread.async { self.writeGroups() } }
    }

    /// Writes queued appends group by group until the queue is empty.
    /// `flushing`: the delayed write of appends that waited for company.
    private func writeGroups(flushing: Bool = false) {
        var flushing = flushing
        while true {
            let (group, failure, flushLater) = queue.withLock { q -> ([Pending], SequencerError?, Bool) in
                if !flushing, q.failure == nil, q.pending.allSatisfy(\.waitsForCompany) {
                    // Nothing here needs an fsync now: the next append starts a group they join.
                    q.writing = false
                    let schedule = !q.pending.isEmpty && !q.flushScheduled
                    if schedule { q.flushScheduled = true }
                    return ([], nil, schedule)
                }
                flushing = false
                let group = q.pending
                q.pending = []
                if group.isEmpty { q.writing = false }
                return (group, q.failure, false)
            }
            if flushLater {
                writerThread.asyncAfter(deadline: .now() + Self.flushDelay) { [weak self] in
                    guard let self else { return }
                    let start = queue.withLock { q -> Bool in
                        q.flushScheduled = false
                        guard !q.writing, !q.pending.isEmpty else { return false }
                        q.writing = true
                        return true
                    }
                    if start { writeGroups(flushing: true) }
                }
            }
            if group.isEmpty { return }
            if let failure {
                for p in group { p.completion(.failure(failure)) }
                continue
            }
            let placed: [(segment: UInt32, offset: Int)]
            do {
                let (newSegment, offsets) = try appender.write(group.map(\.record))
                if let newSegment {
                    segments.withLock { $0[newSegment.number] = newSegment }
                    activeSegment.store(newSegment.number, ordering: .releasing)
                }
                placed = offsets
            } catch {
                let failure = SequencerError(.unavailable, "\(error.message); the store accepts no more writes until the sequencer restarts (it then recovers every acknowledged commit)")
                queue.withLock { $0.failure = failure }
                for p in group { p.completion(.failure(failure)) }
                continue
            }
            var pruned = false
            for (p, place) in zip(group, placed) {
                apply(p.update, segment: place.segment, offset: place.offset, length: p.record.length)
                if case .prune = p.update { pruned = true }
            }
            for p in group { p.completion(.success(())) }
            // What a prune let go may make a closed segment worth rewriting.
            if pruned { scheduleCompaction() }
        }
    }

    private func apply(_ update: IndexUpdate, segment: UInt32, offset: Int, length: Int) {
        switch update {
        case .create(let id, let name):
            indexes.withLock { $0[id] = DatabaseIndexCell(DatabaseIndex(id: id, name: name)) }
        case .batch(let id, let version, let txnID, let pageSize, let pageCount, let committedAtMs, let pages, let drop, let external):
            cell(id)?.withLock {
                $0.applyBatch(version: version, txnID: txnID, pageSize: pageSize, pageCount: pageCount, committedAtMs: committedAtMs, pages: pages, drop: drop,
                              external: external, segment: segment, offset: offset, length: length)
            }
            if let external { pagesOwners.withLock { $0[external] = segment } }
        case .epochCeiling(let id, let ceiling):
            cell(id)?.withLock { $0.epochCeiling = max($0.epochCeiling, ceiling) }
        case .prune(let id, let keepFrom):
            cell(id)?.withLock { $0.prune(keepFrom: keepFrom) }
        case .compacted(let id, _, let last, let pageSize, let pageCount, let images):
            // Only compaction writes these, into copies it swaps in itself; applied here for completeness.
            cell(id)?.withLock { $0.applyCompacted(last: last, pageSize: pageSize, pageCount: pageCount, images: images, segment: segment, offset: offset) }
        }
    }

    private func cell(_ id: Int64) -> DatabaseIndexCell? {
        indexes.withLock { $0[id] }
    }

    private func segment(_ number: UInt32) throws(SequencerError) -> LogSegment {
        guard let s = segments.withLock({ $0[number] }) else {
            throw SequencerError(.dataLoss, "store: segment \(LogSegment.fileName(number)) that the index points to is not open")
        }
        return s
    }

    public func page(database: Int64, number: UInt32, version: UInt64) throws(SequencerError) -> Page? {
        guard let location = cell(database)?.withLock({ $0.page(number, at: version) }), location.length > 0 else { return nil }
        let data = try segment(location.segment).read(Int(location.length), at: location.offset)
        var page = Page()
        page.number = number
        page.data = data
        page.checksum = location.checksum
        guard page.isIntact else {
            throw SequencerError(.dataLoss, "store: page \(number) of version \(location.version) in \(LogSegment.fileName(location.segment)) at offset \(location.offset) fails its checksum; the store's disk returned damaged data")
        }
        return page
    }

    /// Looks every page up under one lock, then reads runs of images that lie
    /// next to each other in a file (pages a batch wrote together, as a bulk
    /// load or a VACUUM leaves them) with one `pread` per run.
    public func pages(database: Int64, numbers: [UInt32], version: UInt64) throws(SequencerError) -> [Page?] {
        guard let cell = cell(database) else { return numbers.map { _ in nil } }
        let locations = cell.withLock { index in numbers.map { index.page($0, at: version) } }
        var out = [Page?](repeating: nil, count: numbers.count)
        // Positions with an image, in file order.
        let order = locations.indices.filter { (locations[$0]?.length ?? 0) > 0 }.sorted {
            let a = locations[$0]!, b = locations[$1]!
            return (a.segment, a.offset) < (b.segment, b.offset)
        }
        var i = 0
        while i < order.count {
            let first = locations[order[i]]!
            var end = first.offset + Int(first.length)
            var j = i + 1
            // Extend the run while the next image starts within a page prefix's distance.
            while j < order.count, let next = locations[order[j]], next.segment == first.segment,
                next.offset >= end, next.offset - end <= 64, next.offset + Int(next.length) - first.offset <= 4 << 20 {
                end = next.offset + Int(next.length)
                j += 1
            }
            let span = try segment(first.segment).read(end - first.offset, at: first.offset)
            for k in i..<j {
                let position = order[k]
                let location = locations[position]!
                let start = location.offset - first.offset
                var page = Page()
                page.number = numbers[position]
                page.data = Array(span[start..<(start + Int(location.length))])
                page.checksum = location.checksum
                guard page.isIntact else {
                    throw SequencerError(.dataLoss, "store: page \(page.number) of version \(location.version) in \(LogSegment.fileName(location.segment)) at offset \(location.offset) fails its checksum; the store's disk returned damaged data")
                }
                out[position] = page
            }
            i = j
        }
        adviseNext(cell, after: numbers, version: version)
        return out
    }

    /// A read of a run of consecutive pages is most likely a scan whose next
    /// read asks for the run after it: the disk starts reading that run's
    /// images now (`posix_fadvise` WILLNEED), while this answer travels and
    /// the client uses it, instead of when the next read arrives.
    private func adviseNext(_ cell: DatabaseIndexCell, after numbers: [UInt32], version: UInt64) {
        guard numbers.count >= 64, let first = numbers.first, let last = numbers.last,
            UInt64(last) - UInt64(first) + 1 == UInt64(numbers.count), last < UInt32.max - UInt32(numbers.count)
        else { return }
        let next = (last + 1)...(last + UInt32(numbers.count))
        let locations = cell.withLock { index in next.compactMap { index.page($0, at: version) } }
        // Contiguous stretches per file, in file order: one call each.
        var ranges: [(segment: UInt32, start: Int, end: Int)] = []
        for l in locations.sorted(by: { ($0.segment, $0.offset) < ($1.segment, $1.offset) }) where l.length > 0 {
            if let r = ranges.last, r.segment == l.segment, l.offset >= r.start, l.offset - r.end <= 4096 {
                ranges[ranges.count - 1].end = max(r.end, l.offset + Int(l.length))
            } else {
                ranges.append((l.segment, l.offset, l.offset + Int(l.length)))
            }
        }
        for r in ranges {
            (try? segment(r.segment))?.advise(r.start..<r.end)
        }
    }

    public func sizes(database: Int64, version: UInt64) -> (pageSize: UInt32, pageCount: UInt32)? {
        cell(database)?.withLock { $0.batches[version].map { ($0.pageSize, $0.pageCount) } }
    }

    public func committedAt(database: Int64, version: UInt64) -> UInt64? {
        cell(database)?.withLock { $0.batches[version]?.committedAtMs }
    }

    public func batch(database: Int64, version: UInt64) throws(SequencerError) -> Batch? {
        guard let location = cell(database)?.withLock({ $0.batches[version] }) else { return nil }
        let bytes = try segment(location.segment).read(location.length, at: location.offset)
        if bytes.count > 4, bytes[4] == LogRecord.Kind.externalBatch.rawValue {
            return try externalBatch(bytes, version: version, location: location)
        }
        do throws(SequencerError) {
            var decoded: Result<Batch, SequencerError> = .failure(SequencerError(.dataLoss, "empty"))
            bytes.withUnsafeBytes { raw in decoded = Result { () throws(SequencerError) in try LogReplay.decodeBatch(raw) } }
            return try decoded.get()
        } catch {
            throw SequencerError(.dataLoss, "store: batch \(version) in \(LogSegment.fileName(location.segment)) at offset \(location.offset) is damaged: \(error.message)")
        }
    }

    /// An external batch record with its pages, read from its pages file in one go.
    private func externalBatch(_ bytes: [UInt8], version: UInt64, location: BatchLocation) throws(SequencerError) -> Batch {
        var decoded: Result<(Batch, UInt32, [(number: UInt32, checksum: UInt32, length: UInt32, offset: Int)]), SequencerError> =
            .failure(SequencerError(.dataLoss, "empty"))
        bytes.withUnsafeBytes { raw in decoded = Result { () throws(SequencerError) in try LogReplay.decodeExternal(raw) } }
        let (seal, number, table): (Batch, UInt32, [(number: UInt32, checksum: UInt32, length: UInt32, offset: Int)])
        do throws(SequencerError) {
            (seal, number, table) = try decoded.get()
        } catch {
            throw SequencerError(.dataLoss, "store: batch \(version) in \(LogSegment.fileName(location.segment)) at offset \(location.offset) is damaged: \(error.message)")
        }
        var batch = seal
        guard let first = table.map(\.offset).min(), let end = table.map({ $0.offset + Int($0.length) }).max() else { return batch }
        let span = try segment(number).read(end - first, at: first)
        batch.pages.reserveCapacity(table.count)
        for t in table {
            var page = Page()
            page.number = t.number
            page.data = Array(span[(t.offset - first)..<(t.offset - first + Int(t.length))])
            page.checksum = t.checksum
            guard page.isIntact else {
                throw SequencerError(.dataLoss, "store: page \(t.number) of batch \(version) in \(LogSegment.fileName(number)) at offset \(t.offset) fails its checksum; the store's disk returned damaged data")
            }
            batch.pages.append(page)
        }
        return batch
    }

    public func committedVersion(database: Int64, txnID: [UInt8]) -> UInt64? {
        cell(database)?.withLock { $0.txns[txnID] }
    }
}

extension IndexUpdate {
    init(_ record: StoreRecord, positions: [(number: UInt32, position: Int, checksum: UInt32, length: UInt32)]) {
        switch record {
        case .create(let id, let name):
            self = .create(database: id, name: name)
        case .batch(let id, let txnID, let batch):
            self = .batch(database: id, version: batch.version, txnID: txnID, pageSize: batch.pageSize, pageCount: batch.pageCount,
                          committedAtMs: batch.committedAtMs,
                          pages: positions, drop: false)
        case .drop(let id, let txnID, let batch):
            self = .batch(database: id, version: batch.version, txnID: txnID, pageSize: batch.pageSize, pageCount: batch.pageCount,
                          committedAtMs: batch.committedAtMs,
                          pages: [], drop: true)
        case .epochCeiling(let id, let ceiling):
            self = .epochCeiling(database: id, ceiling: ceiling)
        case .prune(let id, let keepFrom):
            self = .prune(database: id, keepFrom: keepFrom)
        }
    }
}

/// How a `LogStore` lays out and looks after its files.
public struct LogStoreOptions: Sendable {
    /// A new segment is started once the newest passes this size.
    public var segmentLimit = 64 << 20
    /// Whether compaction runs by itself (after prunes, and at open).
    public var compactAutomatically = true
    /// Told what an operator should know of compaction: a rewrite that failed
    /// (its segments stay as they were, and the next pass tries again).
    public var events: (@Sendable (String) -> Void)?
    /// Told how long each group's fsync took (the sequencer's metrics).
    public var syncTimes: (@Sendable (Duration) -> Void)?
    /// Test hook: a compaction stops where this returns true, as a crash there would stop it.
    public var compactionStop: (@Sendable (CompactionStep) -> Bool)?

    public init() {}
}

/// The next pages file number; used only on LogStore's bulk thread.
final class PagesFileNumbers: @unchecked Sendable {
    // @unchecked: `take` is called only on LogStore.bulkThread, a serial queue.
    private var next: UInt32

    init(next: UInt32) { self.next = next }

    func take() -> UInt32 {
        defer { next += 1 }
        return next
    }
}

extension StoreRecord {
    /// The database a record belongs to (nil: a creation, which nothing can precede).
    var database: Int64? {
        switch self {
        case .create: nil
        case .batch(let id, _, _), .drop(let id, _, _), .epochCeiling(let id, _), .prune(let id, _): id
        }
    }
}

/// The newest segment and where its end is. Used only on the log's writer
/// thread (a serial queue), one group at a time.
final class LogAppender: @unchecked Sendable {
    // @unchecked: every use is on LogStore.writerThread, a serial queue.
    private let directory: String
    private var active: LogSegment
    private var size: Int
    /// `size`, for other threads (compaction weighs the newest segment by it).
    let written = Atomic<Int>(0)
    /// Groups (fsyncs) written since the store opened.
    let groupsWritten = Atomic<UInt64>(0)
    private var groups: UInt64
    /// How far the newest segment's file is allocated.
    private var allocated: Int
    /// How far zeros were written (and made durable) over the allocation:
    /// appends up to here overwrite blocks the file system already maps as
    /// written, so their fsync commits no extent change either.
    private var zeroed: Int
    /// Segments are allocated this much at a time.
    static let allocationStep = 8 << 20
    /// Small groups keep at least `zeroLead` bytes of written zeros ahead of
    /// them, adding `zeroStep` at a time: small steps, so that the group that
    /// writes them waits little longer for its fsync (a megabyte at once
    /// doubled the p99 of synd bench's 1-row kvwrite commits).
    static let zeroLead = 256 << 10
    static let zeroStep = 64 << 10
    /// Only groups up to this size write zeros ahead (see `write`).
    static let zeroingGroupLimit = 64 << 10

    private let segmentLimit: Int
    private let syncTimes: (@Sendable (Duration) -> Void)?

    init(directory: String, active: LogSegment, size: Int, groups: UInt64, segmentLimit: Int,
         syncTimes: (@Sendable (Duration) -> Void)? = nil) {
        self.directory = directory
        self.segmentLimit = segmentLimit
        self.syncTimes = syncTimes
        self.active = active
        self.size = size
        self.groups = groups
        self.allocated = active.size
        // Unknown on reopening (replay saw only zeros): assume none written.
        self.zeroed = size
        written.store(size, ordering: .releasing)
    }

    /// Closes the newest segment early and starts the next (between groups),
    /// so that compaction may rewrite what it holds. Nil if it is empty, or
    /// if the next could not be started (the newest then stays as it was).
    func roll() -> LogSegment? {
        guard size > 0 else { return nil }
        // A half-done roll leaves the newest segment appendable: a later append allocates again.
        return try? startNext()
    }

    /// Closes the newest segment at its end (the last group's fsync made that
    /// end durable; its unused allocation goes) and starts the next.
    private func startNext() throws(SequencerError) -> LogSegment {
        try active.truncate(to: size)
        allocated = size
        zeroed = min(zeroed, size)
        let next = try LogSegment(directory: directory, number: active.number + 1, create: true)
        try syncDirectory(directory)
        active = next
        size = 0
        allocated = 0
        zeroed = 0
        written.store(0, ordering: .releasing)
        return next
    }

    /// Writes `records` and a group end, fsyncs, and returns where each record
    /// went (and the segment started for them, if any).
    func write(_ records: [LogRecord]) throws(SequencerError) -> (LogSegment?, [(segment: UInt32, offset: Int)]) {
        var started: LogSegment?
        if size >= segmentLimit {
            started = try startNext()
        }
        groups += 1
        let end = LogRecord(groupEnd: groups).parts[0]
        var offsets: [(segment: UInt32, offset: Int)] = []
        offsets.reserveCapacity(records.count)
        let total = records.reduce(end.count) { $0 + $1.length }
        if size + total > allocated {
            allocated = size + total + Self.allocationStep
            try active.allocate(upTo: allocated)
        }
        if total <= Self.zeroingGroupLimit, zeroed - (size + total) < Self.zeroLead {
            // An fsync after an append into fallocated space still commits the
            // extent's change from unwritten to written (an inode write, about
            // 20% of a small group's fsync time here). Writing zeros over the
            // next 64 KiB now, in this group's fsync, spares the groups after
            // it that change (1-row commits' fsync: 160 -> 100 µs here). Small
            // groups only: for large ones the zeros would double the bytes written.
            let from = max(zeroed, size + total)
            let to = min(from + Self.zeroStep, allocated)
            if to > from {
                try active.write([UInt8](repeating: 0, count: to - from), at: from)
                zeroed = to
            }
        }
        var offset = size
        if total <= 1 << 20 {
            // Small groups: one write.
            var buffer: [UInt8] = []
            buffer.reserveCapacity(total)
            for r in records {
                offsets.append((active.number, offset))
                offset += r.length
                for part in r.parts { buffer.append(contentsOf: part) }
            }
            buffer.append(contentsOf: end)
            try active.write(buffer, at: size)
        } else {
            for r in records {
                offsets.append((active.number, offset))
                for part in r.parts {
                    try active.write(part, at: offset)
                    offset += part.count
                }
            }
            try active.write(end, at: offset)
        }
        if let syncTimes {
            let before = ContinuousClock.now
            try active.sync()
            syncTimes(.now - before)
        } else {
            try active.sync()
        }
        size += total
        written.store(size, ordering: .releasing)
        groupsWritten.add(1, ordering: .relaxed)
        return (started, offsets)
    }
}
