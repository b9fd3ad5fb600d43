import Foundation
import SyndProtocol
import SyndSQLite

/// The database rebuilt from page images alone: each batch's pages written at
/// their offsets, the file cut to the batch's page count.
public final class PhysicalReplica {
    public let path: String
    private let handle: FileHandle

    public init(path: String) throws {
        self.path = path
        FileManager.default.createFile(atPath: path, contents: nil)
        handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
    }

    deinit { try? handle.close() }

    /// Throws a `ReplicaRefusal` for pages that cannot be placed (a page
    /// number or size the sequencer should never have sealed).
    public func apply(_ batch: Batch) throws {
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
        for page in batch.pages {
            try handle.seek(toOffset: UInt64(page.number - 1) * UInt64(batch.pageSize))
            try handle.write(contentsOf: page.data)
        }
        try handle.truncate(atOffset: UInt64(batch.pageCount) * UInt64(batch.pageSize))
        try handle.synchronize()
    }

    /// A read-only connection to the replica as it is now.
    public func open() throws -> Connection {
        let connection = try Connection(path: "file:\(path)?mode=ro&immutable=1", readOnly: true)
        connection.useStandInCollations()
        return connection
    }
}
