#if canImport(Glibc)
import Glibc
#endif

/// Fixed-size slots for cached pages, carved out of large anonymous mappings
/// the kernel may back with huge pages.
///
/// A cold scan fills the cache with hundreds of megabytes of pages. As one
/// heap allocation per page, every 4 KiB of it cost a page fault, and the
/// heap grew by `mprotect` step by step: together more than a third of the
/// client's time in a scan. Slots in 4 MiB chunks (`MADV_HUGEPAGE`) fault in
/// 2 MiB at a time. Chunks are kept until `removeAll` (the cache reuses freed
/// slots first), so memory stays within the cache's budget plus one chunk.
final class PageSlab {
    /// Bytes of one slot: the page size of the pages kept.
    let slotSize: Int
    private let slotsPerChunk: Int
    private let chunkBytes: Int
    private var chunks: [UnsafeMutableRawPointer] = []
    private var freeSlots: [Int32] = []
    /// Slots handed out so far from the chunks (the rest of the last chunk is untouched).
    private var carved = 0

    /// A 4 MiB chunk: a multiple of the 2 MiB huge page, so the kernel aligns it to one.
    static let chunkTarget = 4 << 20

    init(slotSize: Int) {
        self.slotSize = slotSize
        self.slotsPerChunk = max(1, Self.chunkTarget / slotSize)
        self.chunkBytes = slotsPerChunk * slotSize
    }

    deinit { removeAll() }

    /// A free slot, or nil when no memory could be mapped (the page is then not cached).
    func allocate() -> Int32? {
        if let slot = freeSlots.popLast() { return slot }
        if carved == chunks.count * slotsPerChunk {
            guard carved + slotsPerChunk <= Int(Int32.max), let chunk = Self.map(chunkBytes) else { return nil }
            chunks.append(chunk)
        }
        carved += 1
        return Int32(carved - 1)
    }

    func release(_ slot: Int32) {
        freeSlots.append(slot)
    }

    /// The slot's bytes; valid until the slot is released or the slab emptied.
    func bytes(_ slot: Int32) -> UnsafeMutableRawBufferPointer {
        let s = Int(slot)
        let base = chunks[s / slotsPerChunk] + (s % slotsPerChunk) * slotSize
        return UnsafeMutableRawBufferPointer(start: base, count: slotSize)
    }

    /// Unmaps every chunk: all slots are gone.
    func removeAll() {
        for chunk in chunks { munmap(chunk, chunkBytes) }
        chunks.removeAll()
        freeSlots.removeAll()
        carved = 0
    }

    private static func map(_ bytes: Int) -> UnsafeMutableRawPointer? {
        guard let p = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), p != MAP_FAILED else {
            return nil
        }
        // Advice only: without transparent huge pages the chunk still works, a 4 KiB page at a time.
        _ = madvise(p, bytes, 23 /* MADV_POPULATE_WRITE */)
        return p
    }
}
