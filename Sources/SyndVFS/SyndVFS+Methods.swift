import CSQLite

#if canImport(Glibc)
import Glibc
#endif

// The C entry points. Each one recovers the Swift object behind SQLite's
// pointer, calls it, and returns a result code; none can throw across the
// boundary.

/// Layout of our sqlite3_file: SQLite's header, then the retained Swift object.
enum FileSlot {
    static let headerSize = MemoryLayout<sqlite3_file>.stride
    static let size = headerSize + MemoryLayout<UnsafeMutableRawPointer?>.stride

    static func object(_ file: UnsafeMutablePointer<sqlite3_file>?) -> OpenFile? {
        guard let file else { return nil }
        let raw = UnsafeMutableRawPointer(file) + headerSize
        guard let p = raw.load(as: UnsafeMutableRawPointer?.self) else { return nil }
        return Unmanaged<OpenFile>.fromOpaque(p).takeUnretainedValue()
    }

    static func store(_ object: OpenFile?, in file: UnsafeMutablePointer<sqlite3_file>) {
        let raw = UnsafeMutableRawPointer(file) + headerSize
        let previous = raw.load(as: UnsafeMutableRawPointer?.self)
        raw.storeBytes(of: object.map { Unmanaged.passRetained($0).toOpaque() }, as: UnsafeMutableRawPointer?.self)
        if let previous { Unmanaged<OpenFile>.fromOpaque(previous).release() }
    }
}

func vfsContext(_ vfs: UnsafeMutablePointer<sqlite3_vfs>?) -> VFSContext? {
    guard let p = vfs?.pointee.pAppData else { return nil }
    return Unmanaged<VFSContext>.fromOpaque(p).takeUnretainedValue()
}

/// How the VFS spells a database name. SQLite passes names through
/// xFullPathname (and xDelete gets them as the caller wrote them), so one
/// database can arrive as `test.db`, `./test.db` or `d/../test.db`; the local
/// VFS resolves all of them to one file, and synddb to one sequencer name.
///
/// The rule is lexical, like a path cleaned without looking at any disk:
/// empty components and `.` are dropped (`./a//b` is `a/b`), `x/..` is
/// removed, and a trailing `/` goes. A relative name stays relative (no
/// working directory is prepended: `app` stays `app`, so existing databases
/// keep their names); an absolute one stays absolute. `..` that climbs above
/// the start stays at the start of a relative name (`../a`) and is dropped
/// after a leading `/` (`/../a` is `/a`). A name that cleans to nothing is `.`.
public enum DatabaseName {
    public static func normalized(_ name: String) -> String {
        guard !name.isEmpty else { return name }
        let absolute = name.utf8.first == UInt8(ascii: "/")
        var parts: [Substring] = []
        for part in name.split(separator: "/", omittingEmptySubsequences: true) {
            switch part {
            case ".":
                continue
            case "..":
                if let last = parts.last, last != ".." {
                    parts.removeLast()
                } else if !absolute {
                    parts.append(part)
                }
            default:
                parts.append(part)
            }
        }
        let joined = parts.joined(separator: "/")
        if absolute { return "/" + joined }
        return joined.isEmpty ? "." : joined
    }
}

enum VFSMethods {
    static func table(name: String, context: UnsafeMutableRawPointer, platform: UnsafeMutablePointer<sqlite3_vfs>) -> sqlite3_vfs {
        var v = sqlite3_vfs()
        v.iVersion = 2
        v.szOsFile = Int32(FileSlot.size)
        v.mxPathname = 512
        v.zName = UnsafePointer(strdup(name))
        v.pAppData = context
        v.xOpen = { vfs, name, file, flags, outFlags in
            guard let context = vfsContext(vfs), let file else { return SQLITE_CANTOPEN }
            file.pointee.pMethods = nil
            (UnsafeMutableRawPointer(file) + FileSlot.headerSize).storeBytes(of: nil, as: UnsafeMutableRawPointer?.self)
            context.clearError()
            let object: OpenFile
            if flags & SQLITE_OPEN_MAIN_DB != 0 {
                guard let name else {
                    context.recordOpenError(SQLITE_CANTOPEN, "a synddb database needs a name; temporary databases stay local")
                    return SQLITE_CANTOPEN
                }
                if let view = context.api.uri_parameter(name, "synddb_view") {
                    guard let idText = context.api.uri_parameter(name, "synddb_file"),
                        let id = UInt64(String(cString: idText)), let base = context.file(id: id)
                    else {
                        context.recordError(SQLITE_CANTOPEN, "no open synddb database for this capture view")
                        return SQLITE_CANTOPEN
                    }
                    let kind: SnapshotFile.Kind = String(cString: view) == "after" ? .after : .before
                    FileSlot.store(SnapshotFile(context: context, base: base, kind: kind), in: file)
                    file.pointee.pMethods = UnsafePointer(context.methods)
                    outFlags?.pointee = flags
                    return SQLITE_OK
                }
                do {
                    let options = try FileOptions(uriName: name, api: context.api)
                    object = try RemoteFile(
                        context: context, name: DatabaseName.normalized(String(cString: name)),
                        readOnly: flags & SQLITE_OPEN_READONLY != 0 || options.isPinned,
                        create: flags & SQLITE_OPEN_CREATE != 0, options: options)
                    if options.isPinned {
                        // A past version is read-only: SQLite's pager learns it
                        // from these flags and refuses writes itself.
                        FileSlot.store(object, in: file)
                        file.pointee.pMethods = UnsafePointer(context.methods)
                        outFlags?.pointee = (flags & ~(SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE)) | SQLITE_OPEN_READONLY
                        return SQLITE_OK
                    }
                } catch let error as VFSOpenError {
                    context.recordOpenError(error.code, error.message)
                    return error.code
                } catch let error as FileOptionError {
                    context.recordOpenError(SQLITE_CANTOPEN, error.message)
                    return SQLITE_CANTOPEN
                } catch {
                    context.recordOpenError(SQLITE_CANTOPEN, "\(error)")
                    return SQLITE_CANTOPEN
                }
            } else {
                object = MemoryFile(context: context)
            }
            FileSlot.store(object, in: file)
            file.pointee.pMethods = UnsafePointer(context.methods)
            outFlags?.pointee = flags
            return SQLITE_OK
        }
        // Journals and temp files are private memory files: nothing to delete,
        // and no hot journal can ever be found (the sequencer's commits are
        // atomic). Deleting a database drops it on the sequencer.
        v.xDelete = { vfs, name, _ in
            guard let context = vfsContext(vfs), let name else { return SQLITE_OK }
            let path = DatabaseName.normalized(String(cString: name))
            if VFSContext.isCompanionFile(path) { return SQLITE_OK }
            context.clearError()
            return context.dropDatabase(path)
        }
        v.xAccess = { _, _, _, result in
            result?.pointee = 0
            return SQLITE_OK
        }
        // Database names are sequencer names, not paths, but every spelling of
        // one path names one database (see `DatabaseName.normalized`).
        v.xFullPathname = { _, name, size, out in
            guard let name, let out, size > 0 else { return SQLITE_CANTOPEN }
            let normalized = Array(DatabaseName.normalized(String(cString: name)).utf8)
            guard normalized.count < Int(size) else { return SYND_SQLITE_CANTOPEN_FULLPATH }
            normalized.withUnsafeBytes { b in
                if let base = b.baseAddress { memcpy(out, base, b.count) }
            }
            out[normalized.count] = 0
            return SQLITE_OK
        }
        v.xDlOpen = { vfs, path in
            guard let p = vfsContext(vfs)?.platform else { return nil }
            return p.pointee.xDlOpen?(p, path)
        }
        v.xDlError = { vfs, n, out in
            guard let p = vfsContext(vfs)?.platform else { return }
            p.pointee.xDlError?(p, n, out)
        }
        v.xDlSym = { vfs, handle, symbol in
            guard let p = vfsContext(vfs)?.platform else { return nil }
            return p.pointee.xDlSym?(p, handle, symbol)
        }
        v.xDlClose = { vfs, handle in
            guard let p = vfsContext(vfs)?.platform else { return }
            p.pointee.xDlClose?(p, handle)
        }
        v.xRandomness = { vfs, n, out in
            guard let p = vfsContext(vfs)?.platform else { return 0 }
            return p.pointee.xRandomness?(p, n, out) ?? 0
        }
        v.xSleep = { vfs, micros in
            guard let p = vfsContext(vfs)?.platform else { return 0 }
            return p.pointee.xSleep?(p, micros) ?? 0
        }
        v.xCurrentTime = { vfs, out in
            guard let p = vfsContext(vfs)?.platform else { return SQLITE_ERROR }
            return p.pointee.xCurrentTime?(p, out) ?? SQLITE_ERROR
        }
        v.xCurrentTimeInt64 = { vfs, out in
            guard let p = vfsContext(vfs)?.platform else { return SQLITE_ERROR }
            return p.pointee.xCurrentTimeInt64?(p, out) ?? SQLITE_ERROR
        }
        // SQLite itself calls this with n == 0 (sqlite3_system_errno); only a
        // caller with a buffer (SyndDB's error reporting) consumes the detail.
        v.xGetLastError = { vfs, n, out in
            guard let context = vfsContext(vfs), n > 0, let out else { return 0 }
            let detail = context.takeError() ?? ""
            let bytes = Array(detail.utf8.prefix(Int(n) - 1))
            bytes.withUnsafeBufferPointer { b in
                if let base = b.baseAddress { memcpy(out, base, b.count) }
            }
            out[bytes.count] = 0
            return 0
        }
        _ = platform
        return v
    }
}

enum IOMethods {
    static let table: sqlite3_io_methods = {
        var m = sqlite3_io_methods()
        m.iVersion = 1
        m.xClose = { file in
            guard let file, let object = FileSlot.object(file) else { return SQLITE_OK }
            let rc = object.close()
            FileSlot.store(nil, in: file)
            return rc
        }
        m.xRead = { file, buffer, amount, offset in
            guard let object = FileSlot.object(file), let buffer, amount >= 0 else { return SYND_SQLITE_IOERR_READ }
            return object.read(UnsafeMutableRawBufferPointer(start: buffer, count: Int(amount)), offset: offset)
        }
        m.xWrite = { file, buffer, amount, offset in
            guard let object = FileSlot.object(file), let buffer, amount >= 0 else { return SYND_SQLITE_IOERR_WRITE }
            return object.write(UnsafeRawBufferPointer(start: buffer, count: Int(amount)), offset: offset)
        }
        m.xTruncate = { file, size in
            guard let object = FileSlot.object(file) else { return SYND_SQLITE_IOERR_TRUNCATE }
            return object.truncate(size)
        }
        m.xSync = { file, _ in
            guard let object = FileSlot.object(file) else { return SYND_SQLITE_IOERR_FSYNC }
            return object.sync()
        }
        m.xFileSize = { file, size in
            guard let object = FileSlot.object(file), let size else { return SQLITE_IOERR }
            var value: Int64 = 0
            let rc = object.fileSize(&value)
            size.pointee = value
            return rc
        }
        m.xLock = { file, level in
            guard let object = FileSlot.object(file) else { return SYND_SQLITE_IOERR_LOCK }
            return object.lock(level)
        }
        m.xUnlock = { file, level in
            guard let object = FileSlot.object(file) else { return SYND_SQLITE_IOERR_UNLOCK }
            return object.unlock(level)
        }
        m.xCheckReservedLock = { file, result in
            guard let object = FileSlot.object(file) else { return SQLITE_IOERR }
            result?.pointee = object.checkReservedLock() ? 1 : 0
            return SQLITE_OK
        }
        m.xFileControl = { file, op, arg in
            guard let object = FileSlot.object(file) else { return SQLITE_NOTFOUND }
            return object.fileControl(op, arg)
        }
        m.xSectorSize = { file in FileSlot.object(file)?.sectorSize ?? 4096 }
        m.xDeviceCharacteristics = { file in FileSlot.object(file)?.deviceCharacteristics ?? 0 }
        return m
    }()
}
