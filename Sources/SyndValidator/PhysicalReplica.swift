import Foundation
import SyndProtocol
import SyndSQLite

/// The database rebuilt from page images alone: each batch's pages written at
/// their offsets, the file cut to the batch's page count.
///
/// The replica is scratch (a validator starts over from a batch or a
/// snapshot), so nothing is fsynced.
public final class PhysicalReplica {
    public let path: String
    private let handle: FileHandle
    public private(set) var pageSize: UInt32 = 0
    public private(set) var pageCount: UInt32 = 0

    public init(path: String) throws {
        self.path = path
        FileManager.default.createFile(atPath: path, contents: nil)
        handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
    }

    deinit { try? handle.close() }

    /// The pages a batch wrote or cut off, with their bytes before and after.
    public typealias Changed = [UInt32: (old: [UInt8]?, new: [UInt8]?)]

    /// Applies a batch and returns what it changed (old bytes only when the
    /// page size stayed the same). Throws a `ReplicaRefusal` for pages that
    /// cannot be placed (a page number or size the sequencer should never have sealed).
    /// - Parameter cut: which of the pages a shrinking batch cuts off need their old bytes
    ///   (a few tracked ones, not a range that could be billions long).
    @discardableResult
    /// - Parameter needsOld: which written pages' old bytes are wanted (nil: all).
    public func apply(_ batch: Batch, needsOld: ((UInt32) -> Bool)? = nil, cut: (ClosedRange<UInt32>) -> [UInt32] = { _ in [] }) throws -> Changed {
        let size = batch.pageSize
        if !batch.pages.isEmpty || batch.pageCount > 0 {
            guard size >= 512, size <= 65536, size & (size - 1) == 0 else {
                throw ReplicaRefusal("page size \(size) is not a power of two between 512 and 65536")
            }
        }
        for page in batch.pages {
            guard page.number >= 1, page.number <= batch.pageCount else {
                throw ReplicaRefusal("page \(page.number) is outside the batch's 1...\(batch.pageCount)")
            }
            guard page.data.count == Int(size) else {
                throw ReplicaRefusal("page \(page.number) has \(page.data.count) bytes; the page size is \(size)")
            }
        }
        let samePageSize = size == pageSize
        var changed: Changed = [:]
        changed.reserveCapacity(batch.pages.count)
        for page in batch.pages {
            changed[page.number] = (samePageSize && needsOld?(page.number) != false ? try read(page.number) : nil, page.data)
        }
        if samePageSize, batch.pageCount < pageCount {
            for number in cut((batch.pageCount + 1)...pageCount) { changed[number] = (try read(number), nil) }
        }
        try write(batch.pages, pageSize: size)
        if !samePageSize || batch.pageCount != pageCount {
            try handle.truncate(atOffset: UInt64(batch.pageCount) * UInt64(size))
        }
        pageSize = size
        pageCount = batch.pageCount
        return changed
    }

    /// Empties the replica for a snapshot of `pageCount` pages of `pageSize` bytes.
    public func start(pageSize: UInt32, pageCount: UInt32) throws {
        guard pageCount == 0 || (pageSize >= 512 && pageSize <= 65536 && pageSize & (pageSize - 1) == 0) else {
            throw ReplicaRefusal("page size \(pageSize) is not a power of two between 512 and 65536")
        }
        try handle.truncate(atOffset: 0)
        self.pageSize = pageSize
        self.pageCount = pageCount
    }

    /// Writes pages as they are (a snapshot's).
    public func write(_ pages: [Page]) throws {
        try write(pages, pageSize: pageSize)
    }

    private func write(_ pages: [Page], pageSize: UInt32) throws {
        for page in pages {
            let offset = off_t(page.number - 1) * off_t(pageSize)
            let n = page.data.withUnsafeBytes { pwrite(handle.fileDescriptor, $0.baseAddress, $0.count, offset) }
            guard n == page.data.count else { throw ReplicaRefusal("cannot write page \(page.number) of the physical replica (\(n) of \(page.data.count) bytes)") }
        }
    }

    /// Page `number` as the replica holds it now, nil past its end.
    public func read(_ number: UInt32) throws -> [UInt8]? {
        guard number >= 1, number <= pageCount else { return nil }
        let size = Int(pageSize)
        var bytes = [UInt8](repeating: 0, count: size)
        let got = bytes.withUnsafeMutableBytes { buffer in
            pread(handle.fileDescriptor, buffer.baseAddress, size, off_t(number - 1) * off_t(size))
        }
        guard got == size else { throw ReplicaRefusal("cannot read page \(number) of the physical replica (\(got) of \(size) bytes)") }
        return bytes
    }

    /// A read-only connection to the replica. Not `immutable`: SQLite checks
    /// the file's change counter and size at each read transaction; the
    /// validator also drops the connection's cache after each batch it writes.
    public func open() throws -> Connection {
        // nolock: nothing else opens the replica, and a lock per statement costs two fcntl calls.
        let connection = try Connection(path: "file:\(path)?mode=ro&nolock=1", readOnly: true)
        connection.useStandInCollations()
        return connection
    }
}
