/// Committed pages of one snapshot, bounded in bytes, least recently used
/// evicted first.
///
/// Entries live in arrays linked into a recency list by index (no per-entry
/// objects), and their bytes in a `PageSlab` slot each (no allocation per
/// page): `withPage` moves an entry to the front, `insert` evicts from the
/// back until the new page fits. A page larger than the whole budget is not
/// kept. A class: it owns its slab's memory.
final class PageCache {
    private struct Entry {
        var pgno: UInt32
        var slot: Int32
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
    /// The pages' bytes; made for the size of the first page kept.
    private var slab: PageSlab?
    /// Pages dropped to make room (for tests and statistics).
    private(set) var evictions = 0

    init(budget: Int) { self.budget = budget }

    var count: Int { slots.count }
    var isEmpty: Bool { slots.isEmpty }
    var pageNumbers: Dictionary<UInt32, Int32>.Keys { slots.keys }

    func contains(_ pgno: UInt32) -> Bool { slots[pgno] != nil }

    /// Calls `body` with the page, marked as just used; nil if it is not cached.
    func withPage<R>(_ pgno: UInt32, _ body: (UnsafeRawBufferPointer) -> R) -> R? {
        guard let slot = slots[pgno], let slab else { return nil }
        moveToFront(slot)
        return body(UnsafeRawBufferPointer(slab.bytes(entries[Int(slot)].slot)))
    }

    /// A copy of the page, leaving its place in the recency order alone.
    func peek(_ pgno: UInt32) -> [UInt8]? {
        guard let slot = slots[pgno], let slab else { return nil }
        return Array(slab.bytes(entries[Int(slot)].slot))
    }

    /// Keeps a copy of `data` as page `pgno` (the most recently used),
    /// evicting the least recently used pages until it fits.
    func insert(_ pgno: UInt32, _ data: [UInt8]) {
        data.withUnsafeBytes { insert(pgno, bytes: $0) }
    }

    /// Keeps a copy of `data` as page `pgno` (the most recently used),
    /// evicting the least recently used pages until it fits.
    func insert(_ pgno: UInt32, bytes data: UnsafeRawBufferPointer) {
        remove(pgno)
        guard data.count > 0, data.count <= budget else { return }
        if slab?.slotSize != data.count {
            // The first page, or a new page size (the cache held the old size's pages: drop them).
            removeAll()
            slab = PageSlab(slotSize: data.count)
        }
        while bytes + data.count > budget, oldest >= 0 {
            evictions += 1
            remove(entries[Int(oldest)].pgno)
        }
        guard let slab, let storage = slab.allocate() else { return }
        slab.bytes(storage).copyMemory(from: data)
        let entry = Entry(pgno: pgno, slot: storage, newer: -1, older: newest)
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

    func remove(_ pgno: UInt32) {
        guard let slot = slots.removeValue(forKey: pgno) else { return }
        unlink(slot)
        if let slab {
            bytes -= slab.slotSize
            slab.release(entries[Int(slot)].slot)
        }
        entries[Int(slot)].slot = -1
        free.append(slot)
    }

    /// Drops the pages past `pageCount` (the file shrank).
    func removePages(above pageCount: UInt32) {
        for pgno in Array(slots.keys) where pgno > pageCount { remove(pgno) }
    }

    /// Drops every page and gives the slab's memory back.
    func removeAll() {
        slots.removeAll(keepingCapacity: true)
        entries.removeAll(keepingCapacity: false)
        free.removeAll()
        newest = -1
        oldest = -1
        bytes = 0
        slab?.removeAll()
        slab = nil
    }

    private func moveToFront(_ slot: Int32) {
        guard slot != newest else { return }
        unlink(slot)
        entries[Int(slot)].older = newest
        entries[Int(slot)].newer = -1
        if newest >= 0 { entries[Int(newest)].newer = slot }
        newest = slot
        if oldest < 0 { oldest = slot }
    }

    private func unlink(_ slot: Int32) {
        let e = entries[Int(slot)]
        if e.newer >= 0 { entries[Int(e.newer)].older = e.older } else { newest = e.older }
        if e.older >= 0 { entries[Int(e.older)].newer = e.newer } else { oldest = e.newer }
        entries[Int(slot)].newer = -1
        entries[Int(slot)].older = -1
    }
}
