/// The changeset of a large transaction, in capture's temporary file (see
/// `RowBytes`) instead of memory; read when the commit is sent.
///
/// `@unchecked Sendable`: capture finished writing it before it is handed
/// out, and reads only `pread` the file and copy from memory nobody writes.
public final class SpilledChangeset: @unchecked Sendable {
    private let bytes: RowBytes

    init(_ bytes: RowBytes) {
        self.bytes = bytes
    }

    /// The changeset's size in bytes.
    public var count: Int { bytes.count }

    /// Copies `buffer.count` bytes of the changeset from `offset` into `buffer`.
    public func read(at offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws(CaptureError) {
        try bytes.read(at: offset, into: buffer)
    }

    /// The whole changeset in memory (for tools and tests, not the commit path).
    public func load() throws(CaptureError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        var failure: CaptureError?
        out.withUnsafeMutableBytes { b in
            do throws(CaptureError) { try read(at: 0, into: b) } catch { failure = error }
        }
        if let failure { throw failure }
        return out
    }
}
