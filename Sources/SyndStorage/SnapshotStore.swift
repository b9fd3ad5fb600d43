import SyndLedger
import SyndProtocol

#if canImport(Glibc)
import Glibc
#endif

/// Sealed snapshots of databases: one file per snapshot, under
/// `<folder>/<database name in hex>/<version>.snapshot`, the newest `kept`
/// of each database. A file is the database's pages 1...page_count as of the
/// version, then the snapshot's seal (its last part, a `Batch` message), then
/// the seal's length (u32 big-endian) and "SYNDSNP1". Written to a temporary
/// name, fsynced and renamed, so a crash leaves no partial snapshot.
public final class SnapshotStore: Sendable {
    public let folder: String
    public let kept: Int
    static let magic = Array("SYNDSNP1".utf8)

    public init(folder: String, kept: Int) {
        self.folder = folder
        self.kept = max(1, kept)
    }

    func databaseFolder(_ database: String) -> String {
        folder + "/" + database.utf8.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
    }

    /// The versions kept for `database`, oldest first.
    public func versions(of database: String) -> [UInt64] {
        guard let dir = opendir(databaseFolder(database)) else { return [] }
        defer { closedir(dir) }
        var versions: [UInt64] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard name.hasSuffix(".snapshot"), let v = UInt64(name.dropLast(".snapshot".count)) else { continue }
            versions.append(v)
        }
        return versions.sorted()
    }

    static func parent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    func path(_ database: String, _ version: UInt64) -> String {
        databaseFolder(database) + "/" + String(version) + ".snapshot"
    }

    /// Writes a snapshot: `pages` is called with each next page number range
    /// and returns those pages; `seal` turns the pages' hash into the last part.
    func write(
        database: String, version: UInt64, pageCount: UInt32,
        pages: (ClosedRange<UInt32>) throws(SequencerError) -> [Page],
        seal: ([UInt8]) throws(SequencerError) -> Batch
    ) throws(SequencerError) -> Batch {
        let dir = databaseFolder(database)
        for (d, parent) in [(folder, Self.parent(of: folder)), (dir, folder)] {
            if mkdir(d, 0o755) == 0 {
                try syncDirectory(parent)  // the new folder's entry survives a crash
            } else if errno != EEXIST {
                throw SequencerError(.unavailable, "snapshots: cannot create folder \(d): \(String(cString: strerror(errno)))")
            }
        }
        // What a crash left half-written.
        if let entries = opendir(dir) {
            var stale: [String] = []
            while let entry = readdir(entries) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                if name.hasPrefix(".tmp-") { stale.append(dir + "/" + name) }
            }
            closedir(entries)
            for path in stale { unlink(path) }
        }
        let temporary = dir + "/.tmp-\(version)-\(getpid())"
        let fd = Glibc.open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw SequencerError(.unavailable, "snapshots: cannot create \(temporary): \(String(cString: strerror(errno)))") }
        var done = false
        defer {
            close(fd)
            if !done { unlink(temporary) }
        }
        func append(_ bytes: [UInt8]) throws(SequencerError) {
            var offset = 0
            while offset < bytes.count {
                let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, bytes.count - offset) }
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw SequencerError(.unavailable, "snapshots: writing \(temporary) failed: \(String(cString: strerror(errno)))") }
                offset += n
            }
        }
        var hasher = SnapshotHasher()
        var next: UInt32 = 1
        while next <= pageCount {
            let last = min(pageCount, next + 1023)
            for page in try pages(next...last) {
                guard hasher.add(page) else { throw SequencerError(.internal, "snapshots: page \(page.number) came out of order") }
                try append(page.data)
            }
            next = last + 1
        }
        guard hasher.next == pageCount + 1 else { throw SequencerError(.internal, "snapshots: \(hasher.next - 1) of \(pageCount) pages read") }
        let header = try seal(hasher.finish())
        let bytes = header.serializedBytes()
        try append(bytes)
        try append([UInt8(bytes.count >> 24 & 0xFF), UInt8(bytes.count >> 16 & 0xFF), UInt8(bytes.count >> 8 & 0xFF), UInt8(bytes.count & 0xFF)] + Self.magic)
        guard fsync(fd) == 0 else { throw SequencerError(.unavailable, "snapshots: fsync of \(temporary) failed: \(String(cString: strerror(errno)))") }
        guard rename(temporary, path(database, version)) == 0 else {
            throw SequencerError(.unavailable, "snapshots: cannot rename \(temporary): \(String(cString: strerror(errno)))")
        }
        done = true
        try syncDirectory(dir)
        // The newest `kept` stay.
        for old in versions(of: database).dropLast(kept) { unlink(path(database, old)) }
        return header
    }

    /// Every snapshot of `database` goes (it was dropped).
    public func removeAll(of database: String) {
        for v in versions(of: database) { unlink(path(database, v)) }
    }

    /// A snapshot file opened for reading.
    public final class Reader: Sendable {
        /// The last part, as sealed (no pages).
        public let seal: Batch
        private let fd: Int32

        init(path: String) throws(SequencerError) {
            fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw SequencerError(.notFound, "snapshot \(path) is gone: \(String(cString: strerror(errno)))") }
            var info = stat()
            guard fstat(fd, &info) == 0, info.st_size >= 12 else {
                close(fd)
                throw SequencerError(.dataLoss, "snapshot \(path) is truncated")
            }
            var trailer = [UInt8](repeating: 0, count: 12)
            let size = Int(info.st_size)
            var seal: Batch?
            if pread(fd, &trailer, 12, off_t(size - 12)) == 12, Array(trailer[4...]) == SnapshotStore.magic {
                let length = Int(trailer[0]) << 24 | Int(trailer[1]) << 16 | Int(trailer[2]) << 8 | Int(trailer[3])
                if length <= size - 12 {
                    var bytes = [UInt8](repeating: 0, count: length)
                    if pread(fd, &bytes, length, off_t(size - 12 - length)) == length, let b = try? Batch(serializedBytes: bytes),
                        Int(b.pageCount) * Int(b.pageSize) == size - 12 - length
                    {
                        seal = b
                    }
                }
            }
            guard let seal else {
                close(fd)
                throw SequencerError(.dataLoss, "snapshot \(path) is damaged (its seal does not read back)")
            }
            self.seal = seal
        }

        deinit { close(fd) }

        /// Pages `range` (within 1...page_count).
        public func pages(_ range: ClosedRange<UInt32>) throws(SequencerError) -> [Page] {
            let size = Int(seal.pageSize)
            var bytes = [UInt8](repeating: 0, count: range.count * size)
            let offset = off_t(range.lowerBound - 1) * off_t(size)
            let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, offset) }
            guard n == bytes.count else { throw SequencerError(.dataLoss, "snapshot of '\(seal.database)' at \(seal.version) is short") }
            return range.enumerated().map { i, number in Page(number: number, data: Array(bytes[(i * size)..<((i + 1) * size)])) }
        }
    }

    /// Opens the snapshot of `database` at `version`.
    public func open(_ database: String, version: UInt64) throws(SequencerError) -> Reader {
        try Reader(path: path(database, version))
    }
}

/// SHA-256 of a snapshot's pages, laid out as a batch's `pages_hash`.
typealias SnapshotHasher = BatchSeal.SnapshotPages
