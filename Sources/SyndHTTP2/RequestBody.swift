/// A request body that nghttp2 reads as it sends DATA frames, so a large body
/// (a commit of many pages) need not exist as one array: it can be produced
/// piece by piece from where the bytes already are.
///
/// Read at increasing offsets, from 0 again if the request is retried.
public protocol RequestBody: AnyObject {
    /// Total length in bytes.
    var count: Int { get }
    /// Copies up to `buffer.count` bytes starting at `offset` (< `count`) into
    /// `buffer` and returns how many (at least 1), or nil if they cannot be
    /// produced (`failure` then says why; the stream is reset).
    func read(at offset: Int, into buffer: UnsafeMutableRawBufferPointer) -> Int?
    /// Why the last `read` returned nil.
    var failure: String? { get }
}

/// A body that is one array.
public final class BytesBody: RequestBody {
    public let bytes: [UInt8]

    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public var count: Int { bytes.count }
    public var failure: String? { nil }

    public func read(at offset: Int, into buffer: UnsafeMutableRawBufferPointer) -> Int? {
        let n = min(buffer.count, bytes.count - offset)
        bytes.withUnsafeBytes { src in
            buffer.baseAddress!.copyMemory(from: src.baseAddress! + offset, byteCount: n)
        }
        return n
    }
}
