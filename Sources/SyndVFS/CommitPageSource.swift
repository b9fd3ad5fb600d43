import SyndClient

/// A transaction's pages as the commit request reads them: in page order,
/// each read (from memory or the spill file) only when its turn to be sent
/// comes. Checksums are computed up front because the request's length
/// depends on them.
final class CommitPageSource: CommitPages {
    let pageSize: Int
    let numbers: [UInt32]
    let checksums: [UInt32]
    private let dirty: DirtyPages
    private(set) var failure: String?

    /// Nil if a spilled page could not be read (`dirty.failure` says why).
    init?(_ dirty: DirtyPages, pageSize: Int) {
        self.dirty = dirty
        self.pageSize = pageSize
        numbers = dirty.sortedPageNumbers
        var sums: [UInt32] = []
        sums.reserveCapacity(numbers.count)
        for pgno in numbers {
            guard let sum = dirty.checksum(pgno, pageSize: pageSize) else { return nil }
            sums.append(sum)
        }
        checksums = sums
    }

    func read(_ index: Int, into buffer: UnsafeMutableRawBufferPointer) -> Bool {
        let done = dirty.withPage(numbers[index], pageSize: pageSize) { page -> Bool in
            guard page.count == pageSize, buffer.count >= pageSize else { return false }
            buffer.baseAddress!.copyMemory(from: page.baseAddress!, byteCount: pageSize)
            return true
        }
        guard done == true else {
            failure = dirty.failure ?? "page \(numbers[index]) of the transaction is missing or has the wrong size"
            return false
        }
        return true
    }
}
