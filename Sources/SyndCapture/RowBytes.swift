import CSQLite

#if canImport(Glibc)
import Glibc
#endif

/// Bytes that capture writes once and reads back later: encoded rows that it
/// reads in one order and writes in another (the session extension's), and a
/// large changeset. In memory up to `threshold` bytes, then in an unlinked
/// temporary file, so a large transaction is not held in memory twice or
/// three times (its pages, its rows, its changeset).
final class RowBytes {
    /// The bytes from `flushed` on.
    private var memory: [UInt8] = []
    /// Bytes already moved to the file.
    private var flushed = 0
    private var fd: Int32 = -1
    /// Bytes kept in memory before they go to the file (0: never).
    let threshold: Int
    let directory: String

    /// Bytes kept in memory between moves to the file once past the threshold.
    static let chunk = 1 << 20

    /// `expected`: about how many bytes will come (their memory is reserved once).
    init(threshold: Int, directory: String, expected: Int) {
        self.threshold = threshold
        self.directory = directory
        memory.reserveCapacity(threshold > 0 ? min(expected, threshold + Self.chunk) : expected)
    }

    deinit { if fd >= 0 { close(fd) } }

    var count: Int { flushed + memory.count }

    /// One row: `body` appends its bytes. Returns where they are.
    func append(_ body: (inout [UInt8]) -> Void) throws(CaptureError) -> Range<Int> {
        let start = count
        body(&memory)
        let end = count
        if threshold > 0, end > threshold, memory.count >= Self.chunk { try moveToFile() }
        return start..<end
    }

    /// The bytes at `range` (one row, as `append` returned it).
    func bytes(_ range: Range<Int>) throws(CaptureError) -> ArraySlice<UInt8> {
        if range.lowerBound >= flushed { return memory[(range.lowerBound - flushed)..<(range.upperBound - flushed)] }
        var out = [UInt8](repeating: 0, count: range.count)
        var failure: CaptureError?
        out.withUnsafeMutableBytes { b in
            do throws(CaptureError) { try read(at: range.lowerBound, into: b) } catch { failure = error }
        }
        if let failure { throw failure }
        return out[...]
    }

    /// Copies `buffer.count` bytes from `offset` into `buffer`, from the file, memory or both.
    func read(at offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws(CaptureError) {
        guard offset >= 0, offset + buffer.count <= count else {
            throw CaptureError(code: SYND_SQLITE_IOERR_READ, message: "changeset capture was asked for bytes \(offset)..<\(offset + buffer.count) of \(count)")
        }
        var done = 0
        while done < buffer.count && offset + done < flushed {
            let want = min(buffer.count - done, flushed - offset - done)
            let n = pread(fd, buffer.baseAddress! + done, want, off_t(offset + done))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw CaptureError(code: SYND_SQLITE_IOERR_READ, message: "changeset capture cannot read back its temporary file in \(directory) (spill_dir): \(n < 0 ? String(cString: strerror(errno)) : "short read")") }
            done += n
        }
        if done < buffer.count {
            let start = offset + done - flushed
            memory.withUnsafeBytes { m in
                (buffer.baseAddress! + done).copyMemory(from: m.baseAddress! + start, byteCount: buffer.count - done)
            }
        }
    }

    private func moveToFile() throws(CaptureError) {
        if fd < 0 {
            var template = Array("\(directory)/synddb-capture-XXXXXX".utf8CString)
            let opened = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
            guard opened >= 0 else {
                throw CaptureError(code: SYND_SQLITE_IOERR_WRITE, message: "changeset capture cannot create a temporary file in \(directory) (spill_dir) for a large transaction's rows: \(String(cString: strerror(errno)))")
            }
            // Unlinked at once: nothing is left behind, even after a crash.
            template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
            fd = opened
        }
        var done = 0
        while done < memory.count {
            let n = memory.withUnsafeBytes { pwrite(fd, $0.baseAddress! + done, $0.count - done, off_t(flushed + done)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                throw CaptureError(code: SYND_SQLITE_IOERR_WRITE, message: "changeset capture cannot write a large transaction's rows to its temporary file in \(directory) (spill_dir): \(n < 0 ? String(cString: strerror(errno)) : "nothing written")")
            }
            done += n
        }
        flushed += memory.count
        memory.removeAll(keepingCapacity: true)
    }
}
