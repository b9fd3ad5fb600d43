import CSQLite

/// A journal, statement journal or temp file: private to the connection that
/// opened it, in memory, gone when closed. Only the main database is remote;
/// after a crash there is nothing local to recover, because the sequencer
/// applies each batch atomically.
final class MemoryFile: OpenFile {
    private var bytes: [UInt8] = []

    override func read(_ buffer: UnsafeMutableRawBufferPointer, offset: Int64) -> Int32 {
        let start = Int(offset)
        let available = max(0, min(buffer.count, bytes.count - start))
        if available > 0 {
            bytes.withUnsafeBytes { src in
                buffer.baseAddress!.copyMemory(from: src.baseAddress! + start, byteCount: available)
            }
        }
        if available < buffer.count {
            (buffer.baseAddress! + available).initializeMemory(as: UInt8.self, repeating: 0, count: buffer.count - available)
            return SYND_SQLITE_IOERR_SHORT_READ
        }
        return SQLITE_OK
    }

    override func write(_ buffer: UnsafeRawBufferPointer, offset: Int64) -> Int32 {
        let end = Int(offset) + buffer.count
        if end > bytes.count { bytes.append(contentsOf: repeatElement(0, count: end - bytes.count)) }
        bytes.withUnsafeMutableBytes { dst in
            (dst.baseAddress! + Int(offset)).copyMemory(from: buffer.baseAddress!, byteCount: buffer.count)
        }
        return SQLITE_OK
    }

    override func truncate(_ size: Int64) -> Int32 {
        if Int(size) < bytes.count { bytes.removeSubrange(Int(size)...) }
        return SQLITE_OK
    }

    override func fileSize() -> Int64 { Int64(bytes.count) }

    // Private to one connection: locks never conflict, but SQLite may ask
    // which one it holds (PRAGMA lock_status on a temp database).
    private var lockLevel = SQLITE_LOCK_NONE

    override func lock(_ level: Int32) -> Int32 {
        lockLevel = max(lockLevel, level)
        return SQLITE_OK
    }

    override func unlock(_ level: Int32) -> Int32 {
        lockLevel = min(lockLevel, level)
        return SQLITE_OK
    }

    override func fileControl(_ op: Int32, _ arg: UnsafeMutableRawPointer?) -> Int32 {
        guard op == SQLITE_FCNTL_LOCKSTATE else { return SQLITE_NOTFOUND }
        arg?.assumingMemoryBound(to: Int32.self).pointee = lockLevel
        return SQLITE_OK
    }
}
