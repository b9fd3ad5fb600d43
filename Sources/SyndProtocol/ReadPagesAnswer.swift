/// A `ReadPagesResponse` decoded where it lies: each page is a range of the
/// answer's buffer, not a copy. A read-ahead answer holds thousands of pages,
/// which the reader copies once, into its cache.
public struct ReadPagesAnswer: Sendable {
    /// One page of the answer: its bytes are `buffer[data]`.
    public struct PageRef: Sendable {
        public var number: UInt32 = 0
        public var data: Range<Int> = 0..<0
        public var checksum: UInt32 = 0
    }

    /// The gRPC response body the pages lie in.
    public let buffer: [UInt8]
    public private(set) var version: UInt64 = 0
    public private(set) var pageSize: UInt32 = 0
    public private(set) var pageCount: UInt32 = 0
    public private(set) var pages: [PageRef] = []

    /// Decodes the message in `buffer[range]`, as `ReadPagesResponse` does.
    public init(buffer: [UInt8], range: Range<Int>) throws {
        self.buffer = buffer
        var r = ProtoReader(buffer, range: range)
        while let (field, wire) = try r.nextField() {
            do {
                switch field {
                case 1: version = try r.varint()
                case 2: pageSize = try r.uint32()
                case 3: pageCount = try r.uint32()
                case 4:
                    var inner = ProtoReader(buffer, range: try r.bytesRange())
                    var page = PageRef()
                    while let (f, w) = try inner.nextField() {
                        do {
                            switch f {
                            case 1: page.number = try inner.uint32()
                            case 2: page.data = try inner.bytesRange()
                            case 3: page.checksum = try inner.uint32()
                            default: try inner.skip(w)
                            }
                        } catch is SkippedField {}
                    }
                    pages.append(page)
                default: try r.skip(wire)
                }
            } catch is SkippedField {}
        }
    }

    /// Calls `body` with the bytes of `page`.
    public func withBytes<R>(of page: PageRef, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try buffer.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[page.data])) }
    }

    /// Whether `page` has its checksum.
    public func isIntact(_ page: PageRef) -> Bool {
        withBytes(of: page) { CRC32C.checksum($0) } == page.checksum
    }
}
