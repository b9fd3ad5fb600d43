import CSQLite
import SyndClient

#if canImport(Glibc)
import Glibc
#endif

/// The VFS's shared state: the platform VFS it delegates to, the open files,
/// and the detail of the last failure per thread, served by `xGetLastError`.
final class VFSContext: Sendable {
    let name: String
    /// The platform VFS for xDlOpen, xRandomness, xSleep and xCurrentTime.
    /// Safe to share: SQLite's VFS objects are immutable once registered.
    nonisolated(unsafe) let platform: UnsafeMutablePointer<sqlite3_vfs>
    /// The SQLite functions to call (see `synd_sqlite_api`). Immutable.
    nonisolated(unsafe) let api: synd_sqlite_api
    /// The io_methods every open file points to. Immutable.
    nonisolated(unsafe) let methods: UnsafeMutablePointer<sqlite3_io_methods>
    let printsOpenErrors: Bool
    /// Open writer files by id, for the views changeset capture opens.
    private let files = Locked<(next: UInt64, byID: [UInt64: WeakFile])>((1, [:]))
    private let errors = Locked<[UInt: String]>([:])
    /// The newest version each database (by sequencer and name) was committed
    /// at by a connection of this process: this process's followers wait for
    /// it, so what a process wrote, its reads see.
    private let committed = Locked<[String: UInt64]>([:])

    init(name: String, platform: UnsafeMutablePointer<sqlite3_vfs>, api: synd_sqlite_api,
         methods: UnsafeMutablePointer<sqlite3_io_methods>, printsOpenErrors: Bool) {
        self.name = name
        self.platform = platform
        self.api = api
        self.methods = methods
        self.printsOpenErrors = printsOpenErrors
    }

    func noteCommitted(sequencer: String, database: String, version: UInt64) {
        committed.withLock { $0[sequencer + "\u{0}" + database] = max($0[sequencer + "\u{0}" + database] ?? 0, version) }
    }

    func committedVersion(sequencer: String, database: String) -> UInt64 {
        committed.withLock { $0[sequencer + "\u{0}" + database] ?? 0 }
    }

    /// An open failed: record it, and tell the person at the shell why.
    func recordOpenError(_ code: Int32, _ message: String) {
        recordError(code, message)
        if printsOpenErrors {
            let line = "synddb: \(message)\n"
            _ = line.withCString { Glibc.write(2, $0, strlen($0)) }
        }
    }

    /// A client for one open file, with an HTTP/2 connection of its own (closed
    /// with the file). Never shared between files: a client serializes its
    /// requests on its connection, so one database's big commit would hold up
    /// every other database's reads and commits behind it.
    func client(url: String, options: ClientOptions) throws -> SequencerClient {
        try SequencerClient(url: url, options: options)
    }

    func nextFileID() -> UInt64 {
        files.withLock { f in defer { f.next += 1 }; return f.next }
    }

    func register(_ file: RemoteFile) { files.withLock { $0.byID[file.id] = WeakFile(file: file) } }
    func unregister(_ file: RemoteFile) { _ = files.withLock { $0.byID.removeValue(forKey: file.id) } }
    func file(id: UInt64) -> RemoteFile? { files.withLock { $0.byID[id]?.file } }
    /// An open file of database `name`, the lease holder first.
    func openFile(named name: String) -> RemoteFile? {
        let open = files.withLock { $0.byID.values.compactMap(\.file).filter { $0.name == name } }
        return open.first { $0.lease?.status.held == true } ?? open.first
    }

    func recordError(_ code: Int32, _ message: String) {
        let thread = UInt(pthread_self())
        errors.withLock { $0[thread] = message }
        synd_api_log(api, code, "synddb: " + message)
    }

    /// The last failure's detail on this thread, removed once read.
    func takeError() -> String? {
        let thread = UInt(pthread_self())
        return errors.withLock { $0.removeValue(forKey: thread) }
    }

    func clearError() {
        let thread = UInt(pthread_self())
        _ = errors.withLock { $0.removeValue(forKey: thread) }
    }
}

/// A reference that does not keep a file open. Safe to share: loading a weak
/// reference is atomic, and a file is used only on the thread of the connection
/// that owns it (SQLite serializes a connection), except for its immutable,
/// Sendable `name`, `client` and `lease`, which `openFile(named:)` lends to xDelete.
struct WeakFile: @unchecked Sendable {
    weak var file: RemoteFile?
}
