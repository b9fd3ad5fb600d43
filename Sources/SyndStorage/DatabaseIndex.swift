import Synchronization

/// Where one page image lives in the log. `length` 0: the page was cut off
/// (a smaller page count) at `version` and reads as zeros.
struct PageLocation {
    var version: UInt64
    var offset: Int
    var segment: UInt32
    var length: UInt32
    var checksum: UInt32
}

/// Where one batch record lives, with what reads of its version need.
struct BatchLocation {
    var segment: UInt32
    var offset: Int
    var length: Int
    var pageSize: UInt32
    var pageCount: UInt32
    var txnID: [UInt8]
    /// The batch's commit time (from its seal), for reads "as of" a time.
    var committedAtMs: UInt64
}

/// What applying one durable record changes in the index. Made from the
/// record when it is appended (or read back at recovery); positions are from
/// the record's first byte until the record has a place in the log.
enum IndexUpdate {
    case create(database: Int64, name: String)
    case batch(database: Int64, version: UInt64, txnID: [UInt8], pageSize: UInt32, pageCount: UInt32, committedAtMs: UInt64,
               pages: [(number: UInt32, position: Int, checksum: UInt32, length: UInt32)], drop: Bool,
               external: UInt32? = nil)
    case epochCeiling(database: Int64, ceiling: UInt64)
    case prune(database: Int64, keepFrom: UInt64)
    /// Versions `first...last` as compaction kept them: only their live page
    /// images (an `external` file's offset, or a position in the record).
    case compacted(database: Int64, first: UInt64, last: UInt64, pageSize: UInt32, pageCount: UInt32, images: [CompactedImage])
}

/// A page image a compacted record keeps. `position`: from the record's first
/// byte, or the offset in pages file `external`.
struct CompactedImage {
    var number: UInt32
    var version: UInt64
    var position: Int
    var checksum: UInt32
    var length: UInt32
    var external: UInt32?
}

/// One database's part of `LogStore`'s in-memory index: every kept page
/// version, every kept batch and the commit ids of kept batches. Rebuilt from
/// the log at open.
struct DatabaseIndex {
    let id: Int64
    let name: String
    var version: UInt64 = 0
    var pageSize: UInt32 = 0
    var pageCount: UInt32 = 0
    var oldestVersion: UInt64 = 0
    var epochCeiling: UInt64 = 0
    /// Per page number, its kept images, oldest first.
    var pages: [UInt32: [PageLocation]] = [:]
    var batches: [UInt64: BatchLocation] = [:]
    var txns: [[UInt8]: UInt64] = [:]

    init(id: Int64, name: String) {
        self.id = id
        self.name = name
    }

    var recovered: RecoveredDatabase {
        var r = RecoveredDatabase(id: id, name: name)
        r.version = version
        r.pageSize = pageSize
        r.pageCount = pageCount
        r.oldestVersion = oldestVersion
        r.epochCeiling = epochCeiling
        return r
    }

    /// Applies a batch (or drop) record that lives at `offset` of `segment`.
    mutating func applyBatch(
        version: UInt64, txnID: [UInt8], pageSize: UInt32, pageCount: UInt32, committedAtMs: UInt64,
        pages written: [(number: UInt32, position: Int, checksum: UInt32, length: UInt32)], drop: Bool,
        external: UInt32? = nil, segment: UInt32, offset: Int, length: Int
    ) {
        if drop {
            pages.removeAll()
            batches.removeAll()
            txns.removeAll()
            oldestVersion = version
        }
        for p in written {
            pages[p.number, default: []].append(
                PageLocation(version: version, offset: external == nil ? offset + p.position : p.position,
                             segment: external ?? segment, length: p.length, checksum: p.checksum))
        }
        if !drop, pageCount < self.pageCount {
            // Cut off what lies past the new end, so that later growth reads zeros.
            for (number, list) in pages where number > pageCount && (list.last?.length ?? 0) > 0 {
                pages[number]!.append(PageLocation(version: version, offset: 0, segment: 0, length: 0, checksum: 0))
            }
        }
        batches[version] = BatchLocation(segment: segment, offset: offset, length: length, pageSize: pageSize, pageCount: pageCount, txnID: txnID, committedAtMs: committedAtMs)
        txns[txnID] = version
        self.version = version
        self.pageSize = pageSize
        self.pageCount = pageCount
    }

    /// Applies a compacted record of versions `first...last` at `offset` of
    /// `segment`: the images reads still see, and the sizes of `last`. Its
    /// batches were pruned, so no batch or commit id is kept for them.
    mutating func applyCompacted(last: UInt64, pageSize: UInt32, pageCount: UInt32, images: [CompactedImage], segment: UInt32, offset: Int) {
        for i in images {
            let location = i.length == 0
                ? PageLocation(version: i.version, offset: 0, segment: 0, length: 0, checksum: 0)
                : PageLocation(version: i.version, offset: i.external == nil ? offset + i.position : i.position,
                               segment: i.external ?? segment, length: i.length, checksum: i.checksum)
            pages[i.number, default: []].append(location)
        }
        version = last
        self.pageSize = pageSize
        self.pageCount = pageCount
    }

    /// Forgets what no read at or after `keepFrom` sees.
    mutating func prune(keepFrom: UInt64) {
        guard keepFrom > oldestVersion else { return }
        for (number, list) in pages {
            // Keep the newest image at or below keepFrom and everything after it.
            let first = list.firstIndex(where: { $0.version > keepFrom }) ?? list.count
            let keepStart = max(0, first - 1)
            if keepStart > 0 { pages[number]!.removeFirst(keepStart) }
        }
        for (version, batch) in batches where version < keepFrom {
            batches[version] = nil
            txns[batch.txnID] = nil
        }
        oldestVersion = keepFrom
    }

    /// The image of page `number` a read at `version` sees, if any.
    func page(_ number: UInt32, at version: UInt64) -> PageLocation? {
        guard let list = pages[number] else { return nil }
        // The last entry at or below `version` (entries are in version order).
        var low = 0
        var high = list.count
        while low < high {
            let mid = (low + high) / 2
            if list[mid].version <= version { low = mid + 1 } else { high = mid }
        }
        return low == 0 ? nil : list[low - 1]
    }
}

/// A `DatabaseIndex` behind a lock of its own: reads of one database never
/// wait for another's index updates.
final class DatabaseIndexCell: Sendable {
    private let index: Mutex<DatabaseIndex>

    init(_ index: DatabaseIndex) {
        self.index = Mutex(index)
    }

    func withLock<T>(_ body: (inout DatabaseIndex) -> T) -> T {
        index.withLock { body(&$0) }
    }
}
