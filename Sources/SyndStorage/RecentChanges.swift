/// Which pages each recent version of one database wrote, so that a client
/// whose cache holds an older version drops only the pages written since
/// (OpenDatabaseRequest.since_version). In memory and bounded: after a
/// restart, a drop, or for versions older than what it keeps, it does not
/// know, and the client drops its whole cache.
struct RecentChanges: Sendable {
    /// Changes are known for every version after `base`, up to the last entry's.
    private(set) var base: UInt64
    private var entries: [(version: UInt64, pages: [UInt32])] = []
    private var first = 0
    private var total = 0

    static let maxVersions = 4096
    static let maxPageNumbers = 1 << 20

    init(head: UInt64) {
        base = head
    }

    private var last: UInt64 { entries.last?.version ?? base }

    /// Records that `version` wrote `pages`. A gap (a version not seen) forgets everything before it.
    mutating func record(version: UInt64, pages: [UInt32]) {
        guard version == last + 1 else {
            forget(at: version)
            return
        }
        entries.append((version, pages))
        total += pages.count
        while entries.count - first > Self.maxVersions || total > Self.maxPageNumbers {
            total -= entries[first].pages.count
            base = entries[first].version
            first += 1
        }
        if first > 1024 && first * 2 > entries.count {
            entries.removeFirst(first)
            first = 0
        }
    }

    /// Nothing before `version` is known any more (a drop, a gap).
    mutating func forget(at version: UInt64) {
        entries = []
        first = 0
        total = 0
        base = version
    }

    /// Every page written in versions (since, head], ascending; nil if not known.
    func pages(since: UInt64, head: UInt64) -> [UInt32]? {
        guard since >= base, since <= head, last == head else { return nil }
        var changed = Set<UInt32>()
        var i = entries.count - 1
        while i >= first, entries[i].version > since {
            changed.formUnion(entries[i].pages)
            i -= 1
        }
        return changed.sorted()
    }
}
