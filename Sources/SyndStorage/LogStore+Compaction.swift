import Dispatch
import Synchronization
import SyndProtocol

#if canImport(Glibc)
import Glibc
#endif

/// Compaction: the log gives back the space of what no read sees any more.
///
/// Once the retention window passes a batch, its seal, changeset and commit id
/// are never read again, and nor are its page images that a later one
/// superseded. A closed segment whose dead bytes reach `deadFraction` of what
/// its rewrite handles is rewritten, with the small segments next to it: the
/// records of kept batches are copied as they are, each run of a database's
/// older batches becomes one `compacted` record with only their live images,
/// and the last prune and epoch ceiling of each database follow. The copy
/// takes the first segment's number (a `covers` record names the last one it
/// replaces), so replay meets every database's records in the same order; it
/// is written aside, fsynced and renamed over the segment in one step, so a
/// crash leaves the old segments or the new one, never a mix. Pages files with
/// as large a dead share are folded into the copy and removed after the
/// rename; readers that looked a page up just before the swap read the old
/// files through their open descriptors, kept for a few seconds. The newest
/// segment is closed early (between two groups) when it is worth a rewrite.
extension LogStore {
    /// Suffix of a segment's copy while compaction writes it.
    public static let compactingSuffix = ".compacting"
    /// A file is rewritten (or folded) once this share of its bytes is dead:
    /// every closed file then stays at least 70% what reads can see, and a
    /// rewrite copies at most 2.3 live bytes per byte freed.
    static let deadFraction = 0.3
    /// Nor is it rewritten for less than this (an eighth of a segment, at most 1 MiB).
    var minimumReclaim: Int { max(4096, min(1 << 20, options.segmentLimit / 8)) }
    /// A compacted record holds at most this many bytes of inline images.
    static let compactedRecordLimit = 8 << 20

    /// Runs a compaction pass soon on the compaction thread, unless one is
    /// already waiting. A pass weighs every database's index (under its lock),
    /// so passes are spaced by 20 times the last one's time: at most about 5%
    /// of a core, however large the store.
    func scheduleCompaction() {
        guard options.compactAutomatically, compaction.queued.exchange(true, ordering: .acquiringAndReleasing) == false else { return }
        let spacing = max(100_000_000, 20 * compaction.lastPassNanoseconds.load(ordering: .relaxed))
        // Weak: a store its owner let go (and may have opened again) does nothing more to the folder.
        compactionThread.asyncAfter(deadline: .now() + .nanoseconds(min(spacing, 60_000_000_000))) { [weak self] in
            _ = self?.compactionPass(rolling: true)
        }
    }

    /// Rewrites every closed segment worth it now, and waits for it. (Only
    /// background passes close the newest segment early.)
    @discardableResult
    public func compact() -> CompactionReport {
        compactionThread.sync { compactionPass(rolling: false) }
    }

    /// On the compaction thread: rewrites candidates, most reclaimable first, until none is left.
    /// `rolling`: whether it may close the newest segment early for the next pass.
    func compactionPass(rolling: Bool) -> CompactionReport {
        compaction.queued.store(false, ordering: .sequentiallyConsistent)
        compaction.releaseRetired(from: segments)
        var report = CompactionReport()
        var skipped: Set<UInt32> = []
        // Time spent weighing the store, per look (rewrites are I/O the disk paces itself).
        var weighing = 0
        var looks = 0
        defer {
            compaction.lastPassNanoseconds.store(weighing / max(1, looks), ordering: .relaxed)
            // What this pass wrote may merge with its neighbours in the next.
            if rolling, report.segments > 0 { scheduleCompaction() }
        }
        while true {
            let started = DispatchTime.now().uptimeNanoseconds
            let keys = candidate(skipping: skipped, rolling: rolling)
            weighing += Int(DispatchTime.now().uptimeNanoseconds - started)
            looks += 1
            guard let keys else { return report }
            do throws(SequencerError) {
                guard let made = try rewrite(keys, into: &report) else { return report }
                // Not again in this pass: a pass ends, whatever the estimates say.
                skipped.insert(made)
            } catch {
                // The segments stay as they were: a failed rewrite changes nothing that reads or replay see.
                report.failures.append(error.message)
                options.events?("compaction of \(keys.count) segment(s) failed, they stay as they were: \(error.message)")
                skipped.formUnion(keys)
            }
        }
    }

    /// Whether a pages file of `size` bytes, `live` of them still read, is
    /// folded into its segment's copy (and removed) when that is rewritten.
    static func folds(size: Int, live: Int) -> Bool {
        Double(size - live) >= deadFraction * Double(size)
    }

    /// The adjacent closed segments to rewrite into one, if any is worth it:
    /// a segment whose dead bytes reach `deadFraction` of what its rewrite
    /// handles (with the small segments next to it), or small segments that
    /// together make one file (fewer files, fewer descriptors).
    private func candidate(skipping skipped: Set<UInt32>, rolling: Bool) -> [UInt32]? {
        let live = liveBytes()
        let files = segments.withLock { $0 }
        let owners = pagesOwners.withLock { $0 }
        let active = activeSegment.load(ordering: .acquiring)
        /// `copy`: the bytes a rewrite writes; `reclaim`: the bytes it frees.
        struct Member { var key: UInt32; var size: Int; var copy: Int; var reclaim: Int }
        var members: [(number: UInt32, member: Member)] = []
        for (key, segment) in files where key & LogSegment.pagesFileBit == 0 && segment.number < active && !compaction.isRetired(key) {
            let size = segment.size
            let kept = min(size, live[key] ?? 0)
            // A copy is all live when written, whatever the estimate says of it
            // (it misses some bytes, such as the entries of images in pages
            // files): only what died since counts, or it would be rewritten forever.
            let dead = compaction.baseline[key].map { max(0, $0 - (live[key] ?? 0)) } ?? (size - kept)
            var m = Member(key: key, size: size, copy: size - dead, reclaim: dead)
            for (file, owner) in owners where owner == key {
                guard let pages = files[file] else { continue }
                let pagesSize = pages.size
                let pagesLive = min(pagesSize, live[file] ?? 0)
                if Self.folds(size: pagesSize, live: pagesLive) {
                    m.copy += pagesLive
                    m.reclaim += pagesSize - pagesLive
                }
            }
            members.append((segment.number, m))
        }
        members.sort { $0.number < $1.number }
        // The newest segment is never rewritten while appends go to it: if it
        // is worth it, the writer closes it between two groups, and the pass
        // after that takes it.
        if rolling, files[active] != nil, compaction.rollAsked.load(ordering: .acquiring) == false {
            let size = appender.written.load(ordering: .acquiring)
            let reclaim = size - min(size, live[active] ?? 0)
            if reclaim >= minimumReclaim, Double(reclaim) >= Self.deadFraction * Double(size) {
                compaction.rollAsked.store(true, ordering: .releasing)
                writerThread.async { [weak self] in
                    guard let self else { return }
                    if let next = appender.roll() {
                        segments.withLock { $0[next.number] = next }
                        activeSegment.store(next.number, ordering: .releasing)
                    }
                    compaction.rollAsked.store(false, ordering: .releasing)
                    scheduleCompaction()
                }
            }
        }
        let small = options.segmentLimit / 8
        func worth(_ m: Member) -> Bool {
            m.reclaim >= minimumReclaim && Double(m.reclaim) >= Self.deadFraction * Double(m.reclaim + m.copy)
        }
        // Chains of adjacent segments each worth a rewrite or small, whose copy stays under half a segment.
        var chains: [[Member]] = [[]]
        for (_, m) in members {
            let fits = chains[chains.count - 1].reduce(m.copy) { $0 + $1.copy } <= options.segmentLimit / 2
            if skipped.contains(m.key) || !(worth(m) || m.size <= small) {
                chains.append([])
            } else if fits {
                chains[chains.count - 1].append(m)
            } else {
                chains.append([m])
            }
        }
        var best: (keys: [UInt32], score: Int)?
        for chain in chains where !chain.isEmpty {
            let score: Int
            if chain.contains(where: worth) {
                score = chain.reduce(0) { $0 + $1.reclaim } + chain.count
            } else if chain.count >= 2 {
                score = chain.count - 1  // a merge only: fewer files
            } else {
                continue
            }
            if score > best?.score ?? 0 { best = (chain.map(\.key), score) }
        }
        return best?.keys
    }

    /// Bytes per file that reads can still reach: kept batch records whole,
    /// and the images of older batches (or in pages files) that reads see.
    private func liveBytes() -> [UInt32: Int] {
        var live: [UInt32: Int] = [:]
        for cell in indexes.withLock({ Array($0.values) }) {
            cell.withLock { index in
                for (_, b) in index.batches { live[b.segment, default: 0] += b.length }
                for (_, list) in index.pages {
                    for l in list where l.length > 0 {
                        if let b = index.batches[l.version], b.segment == l.segment { continue }  // counted with its record
                        live[l.segment, default: 0] += Int(l.length) + 12
                    }
                }
            }
        }
        return live
    }

    /// What of segments `keys` (and of pages files `files`) reads can reach, taken under each database's lock.
    private func liveSet(of keys: Set<UInt32>, files: Set<UInt32>) -> CompactionLiveSet {
        var set = CompactionLiveSet()
        for cell in indexes.withLock({ Array($0.values) }) {
            cell.withLock { index in
                for (_, b) in index.batches where keys.contains(b.segment) { set.batches.insert(BatchKey(segment: b.segment, offset: b.offset)) }
                for (number, list) in index.pages {
                    for l in list {
                        if l.length == 0 {
                            set.cutOffs[index.id, default: [:]][l.version, default: []].append(number)
                        } else if keys.contains(l.segment) || files.contains(l.segment) {
                            set.images[l.segment, default: []].insert(l.offset)
                            set.bytes[l.segment, default: 0] += Int(l.length) + 12
                        }
                    }
                }
            }
        }
        return set
    }

    /// Rewrites segments `keys` (adjacent, in log order) into one file with the
    /// first one's name, and returns the copy's key. Nil if a test hook
    /// stopped it (as a crash would).
    private func rewrite(_ keys: [UInt32], into report: inout CompactionReport) throws(SequencerError) -> UInt32? {
        let files = segments.withLock { $0 }
        let sources = keys.compactMap { key in files[key].map { (segment: $0, key: key) } }
        guard sources.count == keys.count, let first = sources.first?.segment else {
            throw SequencerError(.internal, "store: compaction chose segments that are no longer open")
        }
        let keySet = Set(keys)
        let owned = pagesOwners.withLock { o in o.filter { keySet.contains($0.value) }.map(\.key) }
        let live = liveSet(of: keySet, files: Set(owned))
        // Pages files with enough dead bytes are folded into the copy, and removed.
        var folded: Set<UInt32> = []
        var before = sources.reduce(0) { $0 + $1.segment.size }
        for file in owned {
            guard let pages = files[file] else { continue }
            before += pages.size
            if Self.folds(size: pages.size, live: min(pages.size, live.bytes[file] ?? 0)) { folded.insert(file) }
        }
        let path = first.path + Self.compactingSuffix
        let copy = try CompactionCopy(path: path, sources: sources, files: files, live: live, folded: folded)
        do throws(SequencerError) {
            try copy.run()
        } catch {
            unlink(path)
            throw error
        }
        if options.compactionStop?(.copyWritten) == true { return nil }
        guard rename(path, first.path) == 0 else {
            let message = "store: compaction could not rename \(path) over \(first.path): \(String(cString: strerror(errno)))"
            unlink(path)
            throw SequencerError(.unavailable, message)
        }
        // From here the copy is the first segment, and covers the others: a
        // crash before they are removed leaves them for the next open to remove.
        try? syncDirectory(directory)
        let replaced = try LogSegment(directory: directory, number: first.number, create: false)
        let newKey = compaction.takeKey()
        segments.withLock { $0[newKey] = replaced }
        for cell in indexes.withLock({ Array($0.values) }) {
            cell.withLock { index in copy.relocate(&index, to: newKey) }
        }
        pagesOwners.withLock { o in
            for file in owned { o[file] = folded.contains(file) ? nil : newKey }
        }
        for key in keys { compaction.retire(key) }
        compaction.baseline[newKey] = liveBytes()[newKey] ?? 0
        if options.compactionStop?(.renamed) == true { return nil }
        for source in sources.dropFirst() { unlink(source.segment.path) }
        for file in folded {
            if let pages = files[file] { unlink(pages.path) }
            compaction.retire(file)
        }
        if sources.count > 1 || !folded.isEmpty { try? syncDirectory(directory) }
        // The replaced files' space is the disk's again once their descriptors close.
        compactionThread.asyncAfter(deadline: .now() + CompactionState.grace + .milliseconds(100)) { [weak self] in
            guard let self else { return }
            compaction.releaseRetired(from: segments)
        }
        report.segments += sources.count
        report.bytesBefore += before
        report.bytesAfter += replaced.size
        report.pagesFilesRemoved += folded.count
        report.filesRemoved += sources.count - 1 + folded.count
        return newKey
    }
}

/// What a compaction pass did.
public struct CompactionReport: Sendable {
    /// Segments rewritten.
    public var segments = 0
    /// Bytes of those segments and their pages files before, and of the copies after.
    public var bytesBefore = 0
    public var bytesAfter = 0
    /// Pages files folded into a copy and removed.
    public var pagesFilesRemoved = 0
    /// Files removed in all: pages files, and segments merged into an earlier one.
    public var filesRemoved = 0
    /// Rewrites that failed (their segments stay as they were).
    public var failures: [String] = []
}

/// Where a test may stop a compaction, as a crash would.
public enum CompactionStep: Sendable {
    /// The copy is written and fsynced, not yet renamed over the segment.
    case copyWritten
    /// The copy replaced the first segment; the segments merged into it and
    /// the pages files it folded in are not yet removed.
    case renamed
}

/// What of one segment (and its pages files) reads can reach.
struct CompactionLiveSet {
    /// Absolute offsets of live images, per file key.
    var images: [UInt32: Set<Int>] = [:]
    /// Bytes of those images (with their 12-byte prefixes), per file key.
    var bytes: [UInt32: Int] = [:]
    /// The batch records that are kept.
    var batches: Set<BatchKey> = []
    /// Per database, the cut-off entries (version -> page numbers) reads see.
    var cutOffs: [Int64: [UInt64: [UInt32]]] = [:]
}

/// A batch record's place: its segment's key and offset.
struct BatchKey: Hashable {
    var segment: UInt32
    var offset: Int
}

/// The compaction thread's own state.
final class CompactionState: @unchecked Sendable {
    // @unchecked: `retired`, `nextKey` and `baseline` are used only on LogStore.compactionThread
    // (a serial queue); `queued` and `rollAsked` are atomics.
    let queued = Atomic<Bool>(false)
    /// A roll of the newest segment is queued on the writer's thread.
    let rollAsked = Atomic<Bool>(false)
    /// How long the last pass took to weigh the store (paces the next).
    let lastPassNanoseconds = Atomic<Int>(0)
    private var retired: [(key: UInt32, until: DispatchTime)] = []
    private var nextKey: UInt32 = 0
    /// Per copy compaction wrote, the live bytes the estimate gave it then.
    var baseline: [UInt32: Int] = [:]

    /// Keys of rewritten segments: above any segment number, below the pages files' bit.
    static let rewrittenBit: UInt32 = 0x4000_0000

    func takeKey() -> UInt32 {
        nextKey += 1
        return Self.rewrittenBit | nextKey
    }

    /// How long a replaced file stays open: a read that looked a page up
    /// before the swap reads it within microseconds (a large one, milliseconds).
    static let grace = DispatchTimeInterval.seconds(5)

    /// Keeps a replaced file open for `grace`.
    func retire(_ key: UInt32) {
        retired.append((key, .now() + Self.grace))
    }

    func isRetired(_ key: UInt32) -> Bool { retired.contains { $0.key == key } }

    /// Closes the replaced files whose time is up (on the compaction thread).
    func releaseRetired(from segments: borrowing Mutex<[UInt32: LogSegment]>) {
        let now = DispatchTime.now()
        let done = retired.filter { $0.until < now }.map(\.key)
        guard !done.isEmpty else { return }
        retired.removeAll { $0.until < now }
        for key in done { baseline[key] = nil }
        segments.withLock { s in for key in done { s[key] = nil } }
    }
}

/// A rewrite: reads its segments record by record, in log order, and writes the copy.
private final class CompactionCopy {
    let path: String
    /// The segments, with their keys in the index (a number, or a rewritten key).
    let sources: [(segment: LogSegment, key: UInt32)]
    let files: [UInt32: LogSegment]
    let live: CompactionLiveSet
    let folded: Set<UInt32>
    private let fd: Int32
    private var staging: [UInt8] = []
    private var size = 0
    /// Per file key (the segment's, or a folded pages file's), an image's old
    /// offset -> its offset in the copy.
    private(set) var moved: [UInt32: [Int: Int]] = [:]
    /// A kept batch record's old place -> its offset in the copy.
    private(set) var movedBatches: [BatchKey: Int] = [:]

    /// A database's run of older batches, waiting to become one compacted record.
    struct Run {
        var first: UInt64
        var last: UInt64
        var pageSize: UInt32
        var pageCount: UInt32
        var images: [LogRecord.KeptImage] = []
        /// Where each inline image was, to relocate it: (file, old offset).
        var origins: [(file: UInt32, offset: Int)?] = []
        var inlineBytes = 0
    }

    init(path: String, sources: [(segment: LogSegment, key: UInt32)], files: [UInt32: LogSegment], live: CompactionLiveSet,
         folded: Set<UInt32>) throws(SequencerError) {
        self.path = path
        self.sources = sources
        self.files = files
        self.live = live
        self.folded = folded
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw SequencerError(.unavailable, "store: compaction cannot create \(path): \(String(cString: strerror(errno)))")
        }
        staging.reserveCapacity(1 << 20)
    }

    deinit { close(fd) }

    func run() throws(SequencerError) {
        var runs: [Int64: Run] = [:]
        var order: [Int64] = []
        var ceilings: [Int64: UInt64] = [:]
        var prunes: [Int64: UInt64] = [:]
        var lastGroup: UInt64 = 0
        var covers = sources.last!.segment.number
        for (source, key) in sources {
            let end = source.size
            var offset = 0
            while offset < end {
                let headerBytes = try source.read(LogRecord.headerSize, at: offset)
                guard let header = headerBytes.withUnsafeBytes({ LogRecord.header($0) }) else {
                    if try source.isZero(from: offset) { break }
                    throw damage(source, offset, "a damaged record header")
                }
                guard header.payloadLength <= end - offset - LogRecord.headerSize else { throw damage(source, offset, "a record that runs past the end") }
                let payload = try source.read(header.payloadLength, at: offset + LogRecord.headerSize)
                guard CRC32C.checksum(payload) == header.payloadChecksum else { throw damage(source, offset, "a record that fails its checksum") }
                let length = LogRecord.headerSize + header.payloadLength
                if header.kind == .groupEnd || header.kind == .covers {
                    guard payload.count >= 4 else { throw damage(source, offset, "a malformed record") }
                    if header.kind == .groupEnd, payload.count >= 8 {
                        lastGroup = payload.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self).littleEndian }
                    } else if header.kind == .covers {
                        covers = max(covers, payload.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self).littleEndian })
                    }
                    offset += length
                    continue
                }
                let update: IndexUpdate
                do {
                    update = try payload.withUnsafeBytes { raw throws(LogPayloadReader.Overrun) in try LogReplay.update(kind: header.kind, payload: raw) }
                } catch {
                    throw damage(source, offset, "a malformed record")
                }
                let record = headerBytes + payload
                switch update {
                case .create(let id, _):
                    if !order.contains(id) { order.append(id) }
                    try emit(record)
                case .epochCeiling(let id, let ceiling):
                    if !order.contains(id) { order.append(id) }
                    ceilings[id] = max(ceilings[id] ?? 0, ceiling)
                case .prune(let id, let keepFrom):
                    if !order.contains(id) { order.append(id) }
                    prunes[id] = max(prunes[id] ?? 0, keepFrom)
                case .batch(let id, let version, _, let pageSize, let pageCount, _, let pages, let drop, let external):
                    if !order.contains(id) { order.append(id) }
                    if drop || live.batches.contains(BatchKey(segment: key, offset: offset)) {
                        if let external, folded.contains(external) {
                            throw SequencerError(.internal, "store: compaction would fold pages file \(LogSegment.fileName(external)) that kept batch \(version) needs")
                        }
                        if let run = runs.removeValue(forKey: id) { try emit(run, database: id) }
                        movedBatches[BatchKey(segment: key, offset: offset)] = size
                        if external == nil {
                            for p in pages { moved[key, default: [:]][offset + p.position] = size + p.position }
                        }
                        try emit(record)
                    } else {
                        var images: [LogRecord.KeptImage] = []
                        var origins: [(file: UInt32, offset: Int)?] = []
                        for p in pages {
                            guard let (image, origin) = try kept(LogRecord.KeptImage(number: p.number, version: version, checksum: p.checksum, length: p.length),
                                                                 external: external, position: p.position, record: record, at: offset, in: key) else { continue }
                            images.append(image)
                            origins.append(origin)
                        }
                        try extend(&runs, id, first: version, last: version, pageSize: pageSize, pageCount: pageCount, images: images, origins: origins)
                    }
                case .compacted(let id, let first, let last, let pageSize, let pageCount, let kept):
                    if !order.contains(id) { order.append(id) }
                    var images: [LogRecord.KeptImage] = []
                    var origins: [(file: UInt32, offset: Int)?] = []
                    for i in kept where i.length > 0 {
                        guard let (image, origin) = try self.kept(LogRecord.KeptImage(number: i.number, version: i.version, checksum: i.checksum, length: i.length),
                                                                  external: i.external, position: i.position, record: record, at: offset, in: key) else { continue }
                        images.append(image)
                        origins.append(origin)
                    }
                    try extend(&runs, id, first: first, last: last, pageSize: pageSize, pageCount: pageCount, images: images, origins: origins)
                }
                offset += length
            }
        }
        for id in order {
            if let run = runs.removeValue(forKey: id) { try emit(run, database: id) }
            if let ceiling = ceilings[id] { try emit(LogRecord(.epochCeiling(database: id, ceiling: ceiling))) }
            if let keepFrom = prunes[id] { try emit(LogRecord(.prune(database: id, keepFrom: keepFrom))) }
        }
        if covers > sources[0].segment.number { try emit(LogRecord(coversThrough: covers).parts[0]) }
        try emit(LogRecord(groupEnd: lastGroup))
        try flush()
        guard fdatasync(fd) == 0 else {
            throw SequencerError(.unavailable, "store: fsync of \(path) failed: \(String(cString: strerror(errno)))")
        }
    }

    /// `image` as the copy keeps it, if reads still see it, with where its
    /// bytes were when they move into the copy. It lies at `position` of the
    /// record at `offset` of segment `key`, or of pages file `external`: kept
    /// there if that file stays, read into the copy if it is folded.
    private func kept(_ image: LogRecord.KeptImage, external: UInt32?, position: Int, record: [UInt8], at offset: Int, in key: UInt32)
        throws(SequencerError) -> (LogRecord.KeptImage, (file: UInt32, offset: Int)?)? {
        let file = external ?? key
        let at = external == nil ? offset + position : position
        guard live.images[file]?.contains(at) == true else { return nil }
        var image = image
        if let external, !folded.contains(external) {
            image.file = external
            image.offset = at
            return (image, nil)
        }
        if let external {
            image.data = try pagesFile(external).read(Int(image.length), at: at)
        } else {
            image.data = Array(record[position..<(position + Int(image.length))])
        }
        return (image, (file, at))
    }

    private func pagesFile(_ number: UInt32) throws(SequencerError) -> LogSegment {
        guard let f = files[number] else {
            throw SequencerError(.dataLoss, "store: pages file \(LogSegment.fileName(number)) that a record refers to is not open")
        }
        return f
    }

    /// Adds a source record's versions and kept images to its database's run.
    private func extend(_ runs: inout [Int64: Run], _ id: Int64, first: UInt64, last: UInt64, pageSize: UInt32, pageCount: UInt32,
                        images: [LogRecord.KeptImage], origins: [(file: UInt32, offset: Int)?]) throws(SequencerError) {
        if let run = runs[id], first != run.last &+ 1 || run.inlineBytes >= LogStore.compactedRecordLimit {
            try emit(run, database: id)
            runs[id] = nil
        }
        var run = runs[id] ?? Run(first: first, last: last, pageSize: pageSize, pageCount: pageCount)
        for (image, origin) in zip(images, origins) {
            run.images.append(image)
            run.origins.append(origin)
            run.inlineBytes += image.data.count
        }
        // Cut-offs these versions made that reads still see.
        if let cuts = live.cutOffs[id] {
            for (version, numbers) in cuts where version >= first && version <= last {
                for n in numbers {
                    run.images.append(LogRecord.KeptImage(number: n, version: version, checksum: 0, length: 0))
                    run.origins.append(nil)
                }
            }
        }
        run.last = last
        run.pageSize = pageSize
        run.pageCount = pageCount
        runs[id] = run
    }

    private func emit(_ run: Run, database: Int64) throws(SequencerError) {
        // Replay appends each page's images in order: sort by version (stable, so a page's images keep their order).
        let order = run.images.indices.sorted { (run.images[$0].version, $0) < (run.images[$1].version, $1) }
        let images = order.map { run.images[$0] }
        let origins = order.map { run.origins[$0] }
        let record = LogRecord(compacted: database, first: run.first, last: run.last, pageSize: run.pageSize, pageCount: run.pageCount, images: images)
        var inline = record.pagePositions.makeIterator()
        // Inline entries (cut-offs too) have a position each, in order.
        for (image, origin) in zip(images, origins) where image.file == nil {
            guard let position = inline.next() else { break }
            if image.length > 0, let origin { moved[origin.file, default: [:]][origin.offset] = size + position.position }
        }
        try emit(record)
    }

    private func emit(_ record: LogRecord) throws(SequencerError) {
        for part in record.parts { try emit(part) }
    }

    private func emit(_ bytes: [UInt8]) throws(SequencerError) {
        staging.append(contentsOf: bytes)
        size += bytes.count
        if staging.count >= 1 << 20 { try flush() }
    }

    private func flush() throws(SequencerError) {
        var done = 0
        let failed: Int32 = staging.withUnsafeBytes { b in
            while done < b.count {
                let n = Glibc.write(fd, b.baseAddress! + done, b.count - done)
                if n < 0 {
                    if errno == EINTR { continue }
                    return errno
                }
                done += n
            }
            return 0
        }
        staging.removeAll(keepingCapacity: true)
        guard failed == 0 else {
            throw SequencerError(.unavailable, "store: compaction could not write \(path): \(String(cString: strerror(failed)))")
        }
    }

    private func damage(_ source: LogSegment, _ offset: Int, _ what: String) -> SequencerError {
        SequencerError(.dataLoss, "store: compaction found \(what) at offset \(offset) of \(source.path), which opened intact; the disk may be failing")
    }

    /// Points `index`'s entries that lay in the rewritten segments or in a
    /// folded pages file at their places in the copy (`newKey`).
    func relocate(_ index: inout DatabaseIndex, to newKey: UInt32) {
        let keys = Set(sources.map(\.key))
        for (number, list) in index.pages {
            var changed = list
            var any = false
            for i in changed.indices where changed[i].length > 0 {
                let file = changed[i].segment
                guard keys.contains(file) || folded.contains(file), let to = moved[file]?[changed[i].offset] else { continue }
                changed[i].segment = newKey
                changed[i].offset = to
                any = true
            }
            if any { index.pages[number] = changed }
        }
        for (version, b) in index.batches where keys.contains(b.segment) {
            if let to = movedBatches[BatchKey(segment: b.segment, offset: b.offset)] {
                index.batches[version]!.segment = newKey
                index.batches[version]!.offset = to
            }
        }
    }
}
