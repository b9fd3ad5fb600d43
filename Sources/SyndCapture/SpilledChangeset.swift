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
}
