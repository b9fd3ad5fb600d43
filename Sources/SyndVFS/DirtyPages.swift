import CSQLite
import SyndProtocol

#if canImport(Glibc)
import Glibc
#endif

/// The pages a write transaction has written, until it commits or rolls back.
///
/// Pages are kept in memory until they pass `spillThreshold` bytes; then all of
/// them move to an unlinked temporary file (the file system's page cache, not
/// this process, holds them), and later writes of those pages overwrite them
/// in place. So a transaction larger than memory still commits: the commit
/// reads them back one at a time as its request body is sent.
final class DirtyPages {
    private enum Slot {
        case memory([UInt8])
        /// At `offset` in the spill file, with its CRC-32C (computed when written there).
        case file(offset: Int64, checksum: UInt32)
    }

    /// Bytes kept in memory before they move to the spill file (0: never).
    let spillThreshold: Int
    /// Where the spill file is made.
    let spillDirectory: String
    private var slots: [UInt32: Slot] = [:]
    private(set) var memoryBytes = 0
    private var spill: Int32 = -1
    private var spillEnd: Int64 = 0
    /// Pages currently in the spill file.
    private(set) var spilledPages = 0
    /// Times the memory part moved to the spill file (since the file was made).
    private(set) var spills = 0
    /// A page read back from the spill file (reused).
    private var scratch: [UInt8] = []

    init(spillThreshold: Int, spillDirectory: String) {
        self.spillThreshold = spillThreshold
        self.spillDirectory = spillDirectory
    }

    deinit { closeSpill() }

    var count: Int { slots.count }
    var isEmpty: Bool { slots.isEmpty }
    func contains(_ pgno: UInt32) -> Bool { slots[pgno] != nil }

    /// The page numbers, ascending.
    var sortedPageNumbers: [UInt32] { slots.keys.sorted() }

    /// The page in memory without reading the spill file, or nil.
    func inMemory(_ pgno: UInt32) -> [UInt8]? {
        if case .memory(let data)? = slots[pgno] { return data }
        return nil
    }

    /// Calls `body` with page `pgno`, read back from the spill file if it is
    /// there; nil if the transaction did not write it, or the read failed
    /// (`failure` then says why).
    func withPage<R>(_ pgno: UInt32, pageSize: Int, _ body: (UnsafeRawBufferPointer) -> R) -> R? {
        switch slots[pgno] {
        case nil:
            return nil
        case .memory(let data)?:
            return data.withUnsafeBytes(body)
        case .file(let offset, _)?:
            guard readSpilled(at: offset, count: pageSize) else { return nil }
            return scratch.withUnsafeBytes { body(UnsafeRawBufferPointer(rebasing: $0[0..<pageSize])) }
        }
    }

    /// A copy of page `pgno`, or nil.
    func page(_ pgno: UInt32, pageSize: Int) -> [UInt8]? {
        withPage(pgno, pageSize: pageSize) { Array($0) }
    }

    /// The page's CRC-32C.
    func checksum(_ pgno: UInt32, pageSize: Int) -> UInt32? {
        switch slots[pgno] {
        case nil: return nil
        case .memory(let data)?: return CRC32C.checksum(data)
        case .file(_, let checksum)?: return checksum
        }
    }

    /// Why the last spill-file operation failed.
    private(set) var failure: String?

    /// Stores page `pgno`. False if the spill file could not be written (`failure`).
    func write(_ pgno: UInt32, _ bytes: UnsafeRawBufferPointer) -> Bool {
        if case .file(let offset, _)? = slots[pgno] {
            guard pwriteAll(bytes, at: offset) else { return false }
            slots[pgno] = .file(offset: offset, checksum: CRC32C.checksum(bytes))
            return true
        }
        if case .memory(let old)? = slots[pgno] { memoryBytes -= old.count }
        slots[pgno] = .memory(Array(bytes))
        memoryBytes += bytes.count
        if spillThreshold > 0 && memoryBytes > spillThreshold {
            return spillMemory()
        }
        return true
    }

    /// Replaces everything with `pages` (kept in memory, spilled if large).
    func replaceAll(with pages: [UInt32: [UInt8]]) -> Bool {
        removeAll()
        for (pgno, data) in pages {
            guard (data.withUnsafeBytes { write(pgno, $0) }) else { return false }
        }
        return true
    }

    /// Drops the pages past `pageCount` (the transaction truncated the file).
    func removePages(above pageCount: UInt32) {
        for pgno in slots.keys where pgno > pageCount {
            switch slots.removeValue(forKey: pgno) {
            case .memory(let data)?: memoryBytes -= data.count
            case .file?: spilledPages -= 1
            case nil: break
            }
        }
    }

    /// Forgets everything; the spill file is closed (and so deleted).
    func removeAll() {
        slots.removeAll()
        memoryBytes = 0
        spilledPages = 0
        closeSpill()
        scratch = []
    }

    /// Calls `body` for each page held in memory (not those in the spill file).
    func forEachInMemory(_ body: (UInt32, [UInt8]) -> Void) {
        for (pgno, slot) in slots {
            if case .memory(let data) = slot { body(pgno, data) }
        }
    }

    /// Calls `body` for each page (spilled ones read back); false if a read failed.
    func forEach(pageSize: Int, _ body: (UInt32, UnsafeRawBufferPointer) -> Bool) -> Bool {
        for pgno in sortedPageNumbers {
            guard let ok = withPage(pgno, pageSize: pageSize, { body(pgno, $0) }) else { return false }
            if !ok { return false }
        }
        return true
    }

    /// Moves every page held in memory to the end of the spill file, in large writes.
    private func spillMemory() -> Bool {
        if spill < 0 {
            guard openSpill() else { return false }
        }
        var chunk: [UInt8] = []
        chunk.reserveCapacity(1 << 20)
        var chunkStart = spillEnd
        var moved: [(UInt32, Int64, UInt32)] = []
        for (pgno, slot) in slots {
            guard case .memory(let data) = slot else { continue }
            moved.append((pgno, spillEnd, CRC32C.checksum(data)))
            chunk.append(contentsOf: data)
            spillEnd += Int64(data.count)
            if chunk.count >= 1 << 20 {
                guard (chunk.withUnsafeBytes { pwriteAll($0, at: chunkStart) }) else { return false }
                chunkStart = spillEnd
                chunk.removeAll(keepingCapacity: true)
            }
        }
        if !chunk.isEmpty {
            guard (chunk.withUnsafeBytes { pwriteAll($0, at: chunkStart) }) else { return false }
        }
        for (pgno, offset, checksum) in moved {
            slots[pgno] = .file(offset: offset, checksum: checksum)
        }
        spilledPages += moved.count
        memoryBytes = 0
        spills += 1
        // The pages' memory went back to malloc in thousands of small pieces,
        // which it keeps for itself unless asked: give it back to the system.
        synd_malloc_trim()
        return true
    }

    private func openSpill() -> Bool {
        var template = Array("\(spillDirectory)/synddb-spill-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else {
            failure = "cannot create a spill file in \(spillDirectory): \(String(cString: strerror(errno)))"
            return false
        }
        // Unlinked at once: nothing is left behind, even after a crash.
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        spill = fd
        spillEnd = 0
        return true
    }

    private func closeSpill() {
        if spill >= 0 { Glibc.close(spill) }
        spill = -1
        spillEnd = 0
    }

    private func pwriteAll(_ bytes: UnsafeRawBufferPointer, at offset: Int64) -> Bool {
        var done = 0
        while done < bytes.count {
            let n = pwrite(spill, bytes.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                failure = "writing the spill file failed: \(String(cString: strerror(errno)))"
                return false
            }
            done += n
        }
        return true
    }

    private func readSpilled(at offset: Int64, count: Int) -> Bool {
        if scratch.count < count { scratch = [UInt8](repeating: 0, count: count) }
        var done = 0
        while done < count {
            let n = scratch.withUnsafeMutableBytes { pread(spill, $0.baseAddress! + done, count - done, off_t(offset) + off_t(done)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                failure = "reading the spill file failed: \(n < 0 ? String(cString: strerror(errno)) : "it is shorter than expected")"
                return false
            }
            done += n
        }
        return true
    }
}
