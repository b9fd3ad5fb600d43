import SyndHTTP2
import SyndProtocol

/// The pages of a commit, read only when they are sent (see `SequencerClient.commit(_:pages:)`).
public protocol CommitPages: AnyObject {
    var pageSize: Int { get }
    /// The page numbers, ascending.
    var numbers: [UInt32] { get }
    /// CRC-32C of each page, in the order of `numbers`.
    var checksums: [UInt32] { get }
    /// Copies the page at `index` of `numbers` (`pageSize` bytes) into
    /// `buffer`; false if it cannot be read (`failure` says why).
    func read(_ index: Int, into buffer: UnsafeMutableRawBufferPointer) -> Bool
    var failure: String? { get }
}

/// A changeset too large to keep in memory, read only when it is sent.
public protocol CommitChangeset: AnyObject {
    /// The changeset's size in bytes.
    var count: Int { get }
    /// Copies `buffer.count` bytes from `offset` into `buffer`; false if they
    /// cannot be read (`failure` says why).
    func read(at offset: Int, into buffer: UnsafeMutableRawBufferPointer) -> Bool
    var failure: String? { get }
}

/// The gRPC-framed body of a CommitRequest whose pages are encoded as they
/// are sent: the small fields first (protobuf fields may come in any order),
/// the changeset from the request's own array (or read from a
/// `CommitChangeset`), then one `pages` entry per page, read from
/// `CommitPages` into a one-page buffer. Nothing the size of the batch is ever
/// built or copied.
package final class CommitBody: RequestBody {
    /// The bytes before the pages: framing and small fields, the changeset's
    /// tag and length, the changeset (unless `changeset` has it).
    private let head: [[UInt8]]
    private let headEnd: Int
    /// The changeset, when it is read from a source rather than the request; it follows `head`.
    private let changeset: (any CommitChangeset)?
    private let pages: CommitPages
    /// Where each page's entry starts in the body, and (last) the body's end.
    private let starts: [Int]
    private let pageSize: Int
    /// The entry whose page is in `page` (-1: none), and its encoding before
    /// the data: field tag, length, number, data tag and length.
    private var buffered = -1
    private var page: [UInt8]
    private var entry: [UInt8] = []
    package private(set) var failure: String?

    /// `changeset`, when given, is the request's changeset (its own is then ignored).
    package init(_ request: CommitRequest, pages: CommitPages, changeset: (any CommitChangeset)? = nil) {
        var fields = request
        fields.pages = []
        fields.changeset = []
        let small = fields.serializedBytes()
        let changesetCount = changeset?.count ?? request.changeset.count
        var changesetTag = ProtoWriter(capacity: 8)
        if changesetCount > 0 {
            changesetTag.tag(8, .lengthDelimited)
            changesetTag.varint(UInt64(changesetCount))
        }
        self.changeset = changeset
        let message = small.count + changesetTag.bytes.count + changesetCount
        self.pages = pages
        self.pageSize = pages.pageSize
        self.page = [UInt8](repeating: 0, count: pages.pageSize)
        var total = message
        var starts: [Int] = []
        starts.reserveCapacity(pages.numbers.count + 1)
        for (i, number) in pages.numbers.enumerated() {
            let inner = Page.encodedSize(number: number, dataCount: pageSize, checksum: pages.checksums[i])
            starts.append(5 + total)
            total += 1 + ProtoWriter.varintSize(UInt64(inner)) + inner
        }
        starts.append(5 + total)
        self.starts = starts
        let n = UInt32(clamping: total)
        let frame: [UInt8] = [0, UInt8(n >> 24), UInt8((n >> 16) & 0xFF), UInt8((n >> 8) & 0xFF), UInt8(n & 0xFF)]
        self.head = [frame + small, changesetTag.bytes, changeset == nil ? request.changeset : []]
        self.headEnd = 5 + message
    }

    package var count: Int { starts.last! }

    package func read(at offset: Int, into buffer: UnsafeMutableRawBufferPointer) -> Int? {
        var done = 0
        var position = offset
        while done < buffer.count && position < count {
            let target = UnsafeMutableRawBufferPointer(rebasing: buffer[done...])
            let n: Int
            if position < headEnd {
                var start = 0
                var part = 0
                while part < head.count, position >= start + head[part].count {
                    start += head[part].count
                    part += 1
                }
                if part < head.count {
                    n = copy(head[part], from: position - start, into: target)
                } else {
                    // In the changeset from its source.
                    let want = min(target.count, headEnd - position)
                    guard let changeset, changeset.read(at: position - start, into: UnsafeMutableRawBufferPointer(rebasing: target[..<want])) else {
                        failure = changeset?.failure ?? "the changeset could not be read"
                        return nil
                    }
                    n = want
                }
            } else {
                guard let index = entryIndex(containing: position) else { return nil }
                n = copy(index, from: position - starts[index], into: target)
                if n == 0 { return nil }
            }
            done += n
            position += n
        }
        return done
    }

    /// Copies from entry `index` (its encoding: prefix, then the page) at `within`.
    private func copy(_ index: Int, from within: Int, into target: UnsafeMutableRawBufferPointer) -> Int {
        if buffered != index {
            let ok = page.withUnsafeMutableBytes { pages.read(index, into: $0) }
            guard ok else {
                failure = pages.failure ?? "page \(pages.numbers[index]) could not be read"
                return 0
            }
            buffered = index
            entry = Self.entryPrefix(pages.numbers[index], pages.checksums[index], pageSize)
        }
        if within < entry.count {
            return copy(entry, from: within, into: target)
        }
        let dataOffset = within - entry.count
        if dataOffset < pageSize {
            return copy(page, from: dataOffset, into: target)
        }
        return copy(Self.entrySuffix(pages.checksums[index]), from: dataOffset - pageSize, into: target)
    }

    private func copy(_ bytes: [UInt8], from start: Int, into target: UnsafeMutableRawBufferPointer) -> Int {
        let n = min(bytes.count - start, target.count)
        bytes.withUnsafeBytes { target.baseAddress!.copyMemory(from: $0.baseAddress! + start, byteCount: n) }
        return n
    }

    /// The entry that contains `position` (binary search over `starts`).
    private func entryIndex(containing position: Int) -> Int? {
        if buffered >= 0, position >= starts[buffered], position < starts[buffered + 1] { return buffered }
        var low = 0, high = starts.count - 1
        guard position >= starts[0], position < starts[high] else { return nil }
        while high - low > 1 {
            let mid = (low + high) / 2
            if starts[mid] <= position { low = mid } else { high = mid }
        }
        return low
    }

    private static func entryPrefix(_ number: UInt32, _ checksum: UInt32, _ size: Int) -> [UInt8] {
        var w = ProtoWriter(capacity: 24)
        w.tag(5, .lengthDelimited)
        w.varint(UInt64(Page.encodedSize(number: number, dataCount: size, checksum: checksum)))
        w.uint32(1, number)
        w.tag(2, .lengthDelimited)
        w.varint(UInt64(size))
        return w.bytes
    }

    private static func entrySuffix(_ checksum: UInt32) -> [UInt8] {
        var w = ProtoWriter(capacity: 8)
        w.uint32(3, checksum)
        return w.bytes
    }
}
