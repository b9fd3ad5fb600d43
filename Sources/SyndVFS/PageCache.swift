/// Committed pages of one snapshot, bounded in bytes, least recently used
/// evicted first.
///
/// Entries live in arrays linked into a recency list by index (no per-entry
/// objects): `get` moves an entry to the front, `insert` evicts from the back
/// until the new page fits. A page larger than the whole budget is not kept.
struct PageCache {
    private struct Entry {
        var pgno: UInt32
        var data: [UInt8]
        var newer: Int32
        var older: Int32
    }

    /// The most bytes of page data kept.
    var budget: Int
    private(set) var bytes = 0
    private var slots: [UInt32: Int32] = [:]
    private var entries: [Entry] = []
    private var free: [Int32] = []
    /// Most and least recently used entries (-1: empty).
    private var newest: Int32 = -1
    private var oldest: Int32 = -1
    /// Pages dropped to make room (for tests and statistics).
    private(set) var evictions = 0

    init(budget: Int) { self.budget = budget }

    var count: Int { slots.count }
    var isEmpty: Bool { slots.isEmpty }
    var pageNumbers: Dictionary<UInt32, Int32>.Keys { slots.keys }

    func contains(_ pgno: UInt32) -> Bool { slots[pgno] != nil }

    /// The page, marked as just used.
    mutating func get(_ pgno: UInt32) -> [UInt8]? {
        guard let slot = slots[pgno] else { return nil }
        moveToFront(slot)
        return entries[Int(slot)].data
    }

    /// The page, leaving its place in the recency order alone.
    func peek(_ pgno: UInt32) -> [UInt8]? {
        slots[pgno].map { entries[Int($0)].data }
    }

    /// Keeps `data` as page `pgno` (the most recently used), evicting the least
    /// recently used pages until it fits.
    mutating func insert(_ pgno: UInt32, _ data: [UInt8]) {
        remove(pgno)
        guard data.count <= budget else { return }
        while bytes + data.count > budget, oldest >= 0 {
            evictions += 1
            remove(entries[Int(oldest)].pgno)
        }
        let entry = Entry(pgno: pgno, data: data, newer: -1, older: newest)
        let slot: Int32
        if let reused = free.popLast() {
            slot = reused
            entries[Int(slot)] = entry
        } else {
            slot = Int32(entries.count)
            entries.append(entry)
        }
        if newest >= 0 { entries[Int(newest)].newer = slot }
        newest = slot
        if oldest < 0 { oldest = slot }
        slots[pgno] = slot
        bytes += data.count
    }

    mutating func remove(_ pgno: UInt32) {
        guard let slot = slots.removeValue(forKey: pgno) else { return }
        unlink(slot)
        bytes -= entries[Int(slot)].data.count
        entries[Int(slot)].data = []
        free.append(slot)
    }

    /// Drops the pages past `pageCount` (the file shrank).
    mutating func removePages(above pageCount: UInt32) {
        for pgno in slots.keys where pgno > pageCount { remove(pgno) }
    }

    mutating func removeAll() {
        slots.removeAll(keepingCapacity: true)
        entries.removeAll(keepingCapacity: false)
        free.removeAll()
        newest = -1
        oldest = -1
        bytes = 0
    }

    private mutating func moveToFront(_ slot: Int32) {
        guard slot != newest else { return }
        unlink(slot)
        entries[Int(slot)].older = newest
        entries[Int(slot)].newer = -1
        if newest >= 0 { entries[Int(newest)].newer = slot }
        newest = slot
        if oldest < 0 { oldest = slot }
    }

    private mutating func unlink(_ slot: Int32) {
        let e = entries[Int(slot)]
        if e.newer >= 0 { entries[Int(e.newer)].older = e.older } else { newest = e.older }
        if e.older >= 0 { entries[Int(e.older)].newer = e.newer } else { oldest = e.newer }
        entries[Int(slot)].newer = -1
        entries[Int(slot)].older = -1
    }
}
