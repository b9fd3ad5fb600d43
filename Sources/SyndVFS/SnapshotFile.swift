import CSQLite

/// A view of a writer's database that changeset capture opens on its scratch
/// connection, never over the network for data it already has:
/// - "before": the committed snapshot; writable, but writes stay in a scratch
///   buffer that is dropped when the scratch transaction ends (always a rollback);
/// - "after": the committing transaction's final image; read-only.
final class SnapshotFile: OpenFile {
    enum Kind { case before, after }
    private weak var base: RemoteFile?
    private let kind: Kind
    private var scratch: [UInt32: [UInt8]] = [:]
    private var scratchPageCount: UInt32?
    private var lockLevel = SQLITE_LOCK_NONE

    init(context: VFSContext, base: RemoteFile, kind: Kind) {
        self.base = base
        self.kind = kind
        super.init(context: context)
    }

    private var pageSize: Int { base?.committedSize.pageSize ?? 0 }

    override func read(_ buffer: UnsafeMutableRawBufferPointer, offset: Int64) -> Int32 {
        guard let base else { return fail(SYND_SQLITE_IOERR_READ, "the database behind this view is closed") }
        if kind == .after {
            let rc = base.read(buffer, offset: offset)
            stampChangeCounter(buffer, offset: offset, generation: base.captureGeneration)
            return rc
        }
        let size = pageSize
        if size > 0, buffer.count <= size, offset >= 0 {
            let pgno = UInt32(clamping: offset / Int64(size) + 1)
            if let page = scratch[pgno] {
                copy(page, from: Int(offset % Int64(size)), into: buffer)
                stampChangeCounter(buffer, offset: offset, generation: UInt32(truncatingIfNeeded: base.committedVersion))
                return SQLITE_OK
            }
            if let count = scratchPageCount, pgno > count {
                buffer.initializeMemory(as: UInt8.self, repeating: 0)
                return SYND_SQLITE_IOERR_SHORT_READ
            }
        }
        let rc: Int32
        if pageSize == 0, !scratch.isEmpty {
            // An empty database the scratch transaction has started to fill.
            rc = readScratchOnly(buffer, offset: offset)
        } else {
            rc = base.readCommitted(buffer, offset: offset)
        }
        // The committed version as change counter: it moves with every commit even
        // where SQLite's own counter does not (exclusive locking mode).
        stampChangeCounter(buffer, offset: offset, generation: UInt32(truncatingIfNeeded: base.committedVersion))
        return rc
    }

    private func readScratchOnly(_ buffer: UnsafeMutableRawBufferPointer, offset: Int64) -> Int32 {
        guard let size = scratch.first?.value.count, size > 0 else { return SYND_SQLITE_IOERR_SHORT_READ }
        let pgno = UInt32(clamping: offset / Int64(size) + 1)
        guard let page = scratch[pgno], buffer.count <= size else {
            buffer.initializeMemory(as: UInt8.self, repeating: 0)
            return SYND_SQLITE_IOERR_SHORT_READ
        }
        copy(page, from: Int(offset % Int64(size)), into: buffer)
        return SQLITE_OK
    }

    /// Two commits on the same base version produce the same file change counter
    /// (header offset 24), and SQLite keeps its page cache when the counter is
    /// unchanged. The after view therefore shows a counter of its own, new for
    /// every capture, in both places the file format keeps it (24 and 92), so
    /// the header's page count stays valid.
    private func stampChangeCounter(_ buffer: UnsafeMutableRawBufferPointer, offset: Int64, generation: UInt32) {
        for field in [24, 92] {
            for i in 0..<4 {
                let position = Int64(field + i) - offset
                if position >= 0 && position < Int64(buffer.count) {
                    buffer[Int(position)] = UInt8(truncatingIfNeeded: generation >> (24 - 8 * UInt32(i)))
                }
            }
        }
    }

    private func copy(_ page: [UInt8], from start: Int, into buffer: UnsafeMutableRawBufferPointer) {
        let n = min(buffer.count, page.count - start)
        page.withUnsafeBytes { src in
            buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[start..<(start + n)]))
        }
        if n < buffer.count {
            UnsafeMutableRawBufferPointer(rebasing: buffer[n...]).initializeMemory(as: UInt8.self, repeating: 0)
        }
    }

    override func write(_ buffer: UnsafeRawBufferPointer, offset: Int64) -> Int32 {
        guard kind == .before else { return fail(SYND_SQLITE_IOERR_WRITE, "the after view is read-only") }
        guard buffer.count > 0, offset >= 0 else { return SYND_SQLITE_IOERR_WRITE }
        let pgno = UInt32(clamping: offset / Int64(buffer.count) + 1)
        scratch[pgno] = Array(buffer)
        scratchPageCount = max(scratchPageCount ?? base?.committedSize.pageCount ?? 0, pgno)
        return SQLITE_OK
    }

    override func truncate(_ size: Int64) -> Int32 {
        guard kind == .before else { return SQLITE_OK }
        let pageSize = scratch.first?.value.count ?? self.pageSize
        guard pageSize > 0 else { return SQLITE_OK }
        scratchPageCount = UInt32(clamping: size / Int64(pageSize))
        return SQLITE_OK
    }

    override func fileSize() -> Int64 {
        guard let base else { return 0 }
        if kind == .after { return base.fileSize() }
        let size = scratch.first?.value.count ?? pageSize
        let count = scratchPageCount ?? base.committedSize.pageCount
        return Int64(count) * Int64(size)
    }

    override func lock(_ level: Int32) -> Int32 {
        lockLevel = max(lockLevel, level)
        return SQLITE_OK
    }

    override func unlock(_ level: Int32) -> Int32 {
        if level < SQLITE_LOCK_RESERVED {
            scratch.removeAll()
            scratchPageCount = nil
        }
        lockLevel = min(lockLevel, level)
        return SQLITE_OK
    }

    override func checkReservedLock() -> Bool { lockLevel >= SQLITE_LOCK_RESERVED }
}
