import CSQLite

/// What every file the VFS opens can do. The C entry points in
/// `SyndVFS+IOMethods.swift` call these; each returns a SQLite result code and
/// never throws or traps.
class OpenFile {
    /// Records the detail of the failure being returned (for `xGetLastError`).
    let context: VFSContext

    init(context: VFSContext) { self.context = context }

    func read(_ buffer: UnsafeMutableRawBufferPointer, offset: Int64) -> Int32 { SQLITE_IOERR }
    func write(_ buffer: UnsafeRawBufferPointer, offset: Int64) -> Int32 { SQLITE_IOERR }
    func truncate(_ size: Int64) -> Int32 { SQLITE_OK }
    func sync() -> Int32 { SQLITE_OK }
    func fileSize() -> Int64 { 0 }
    /// xFileSize: the size, or an error code (the default never fails).
    func fileSize(_ size: inout Int64) -> Int32 {
        size = fileSize()
        return SQLITE_OK
    }
    func lock(_ level: Int32) -> Int32 { SQLITE_OK }
    func unlock(_ level: Int32) -> Int32 { SQLITE_OK }
    func checkReservedLock() -> Bool { false }
    func fileControl(_ op: Int32, _ arg: UnsafeMutableRawPointer?) -> Int32 { SQLITE_NOTFOUND }
    func close() -> Int32 { SQLITE_OK }
    var sectorSize: Int32 { 4096 }
    var deviceCharacteristics: Int32 { 0 }

    /// Returns `code` after recording `message` for this thread and SQLite's log.
    func fail(_ code: Int32, _ message: String) -> Int32 {
        context.recordError(code, message)
        return code
    }
}
