#if canImport(Glibc)
import Glibc
#endif
import SyndProtocol

extension PageStore {
    /// Every database that exists (dropped ones aside), by name, at its durable head.
    public func databaseStatuses() throws(SequencerError) -> [DatabaseStatus] {
        let all = catalogSnapshot()
        let now = ContinuousClock.now
        return all.compactMap { db -> DatabaseStatus? in
            let head = db.head.withLock { h in h.isDropped ? nil : (h.version, h.oldestVersion, h.pageSize, h.pageCount) }
            guard let (version, oldest, pageSize, pageCount) = head else { return nil }
            let lease = db.leases.withLock { l -> DatabaseStatus.LeaseStatus? in
                guard let lease = l.lease, lease.expires > now else { return nil }
                return DatabaseStatus.LeaseStatus(holder: lease.holder, epoch: lease.epoch, msLeft: (lease.expires - now).milliseconds)
            }
            return DatabaseStatus(
                name: db.name, version: version, oldestVersion: max(1, oldest), pageSize: pageSize, pageCount: pageCount, lease: lease)
        }.sorted { $0.name < $1.name }
    }

    /// Bytes of disk the store's folder takes (its log, snapshots and key).
    public func storedBytes() throws(SequencerError) -> Int64 {
        Self.allocatedBytes(under: configuration.directory)
    }

    /// Disk blocks (st_blocks) of the regular files under `path`, recursively.
    static func allocatedBytes(under path: String) -> Int64 {
        guard let dir = opendir(path) else { return 0 }
        defer { closedir(dir) }
        var total: Int64 = 0
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: &entry.pointee.d_name) {
                String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self))
            }
            guard name != ".", name != ".." else { continue }
            var st = stat()
            let child = path + "/" + name
            guard lstat(child, &st) == 0 else { continue }
            switch st.st_mode & S_IFMT {
            case S_IFREG: total += Int64(st.st_blocks) * 512
            case S_IFDIR: total += allocatedBytes(under: child)
            default: break
            }
        }
        return total
    }
}
