import SyndProtocol

#if canImport(Glibc)
import Glibc
#endif

/// One file of the log: `log/NNNNNNNN.log`. Only the newest segment is
/// written, and only by appending; reads `pread` any of them from any thread.
final class LogSegment: Sendable {
    let number: UInt32
    let path: String
    private let fd: Int32

    /// Opens (or creates) segment `number` in `directory`.
    init(directory: String, number: UInt32, create: Bool) throws(SequencerError) {
        self.number = number
        path = directory + "/" + Self.fileName(number)
        let flags = O_RDWR | O_CLOEXEC | (create ? O_CREAT | O_EXCL : 0)
        let fd = open(path, flags, 0o644)
        guard fd >= 0 else {
            throw SequencerError(.unavailable, "store: cannot open \(path): \(String(cString: strerror(errno)))")
        }
        self.fd = fd
    }

    deinit { close(fd) }

    /// Numbers with this bit set name pages files (`NNNNNNNN.pages`), not segments.
    static let pagesFileBit: UInt32 = 0x8000_0000

    static func fileName(_ number: UInt32) -> String {
        let digits = String(number & ~pagesFileBit)
        let name = String(repeating: "0", count: max(0, 8 - digits.count)) + digits
        return name + (number & pagesFileBit != 0 ? ".pages" : ".log")
    }

    /// The number (with `pagesFileBit`) of a pages file's name, if it is one.
    static func pagesFileNumber(of name: String) -> UInt32? {
        guard name.hasSuffix(".pages"), name.utf8.count == 14, let n = UInt32(name.prefix(8)), n < pagesFileBit else { return nil }
        return n | pagesFileBit
    }

    /// The segment number of a file name, if it is one.
    static func number(of name: String) -> UInt32? {
        guard name.hasSuffix(".log"), name.utf8.count == 12 else { return nil }
        return UInt32(name.prefix(8))
    }

    var size: Int {
        var st = stat()
        return fstat(fd, &st) == 0 ? Int(st.st_size) : 0
    }

    /// Reads exactly `count` bytes at `offset` into `buffer` (fewer only at the end of the file).
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(SequencerError) -> Int {
        var done = 0
        while done < buffer.count {
            let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw SequencerError(.unavailable, "store: reading \(path) failed: \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    /// `count` bytes at `offset`; DATA_LOSS if the file ends before them.
    func read(_ count: Int, at offset: Int) throws(SequencerError) -> [UInt8] {
        var got = 0
        var failure: SequencerError?
        // Not zeroed first: the read fills it (megabytes for a read-ahead), and what it did not fill is cut off.
        let bytes = [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            do throws(SequencerError) { got = try read(into: UnsafeMutableRawBufferPointer(buffer), at: offset) } catch { failure = error }
            initialized = failure == nil ? got : 0
        }
        if let failure { throw failure }
        guard got == count else {
            throw SequencerError(.dataLoss, "store: \(path) ends at \(offset + got), before the \(count) bytes at \(offset) its index points to")
        }
        return bytes
    }

    /// Tells the kernel these bytes will be read soon, so it reads them from
    /// disk in the background. Only advice: a failure changes nothing.
    func advise(_ range: Range<Int>) {
        _ = posix_fadvise(fd, off_t(range.lowerBound), off_t(range.count), POSIX_FADV_WILLNEED)
    }

    func write(_ bytes: [UInt8], at offset: Int) throws(SequencerError) {
        let error = bytes.withUnsafeBytes { b -> Int32 in
            var done = 0
            while done < b.count {
                let n = pwrite(fd, b.baseAddress! + done, b.count - done, off_t(offset + done))
                if n < 0 {
                    if errno == EINTR { continue }
                    return errno
                }
                done += n
            }
            return 0
        }
        guard error == 0 else {
            throw SequencerError(.unavailable, "store: writing \(path) failed: \(String(cString: strerror(error)))")
        }
    }

    /// Writes `pages` as a batch record lays them out (see `LogRecord`) from
    /// `offset`, through a small staging buffer: one copy of each page, a
    /// write per megabyte. Returns where the pages end.
    func write(pages: [Page], at offset: Int) throws(SequencerError) -> Int {
        var staging: [UInt8] = []
        staging.reserveCapacity(1 << 20)
        var at = offset
        for page in pages {
            staging.append(contentsOf: LogRecord.pagePrefix(page))
            staging.append(contentsOf: page.data)
            if staging.count >= 1 << 20 {
                try write(staging, at: at)
                at += staging.count
                staging.removeAll(keepingCapacity: true)
            }
        }
        if !staging.isEmpty {
            try write(staging, at: at)
            at += staging.count
        }
        return at
    }

    /// Makes everything written so far durable (data and the file's size).
    func sync() throws(SequencerError) {
        guard fdatasync(fd) == 0 else {
            throw SequencerError(.unavailable, "store: fsync of \(path) failed: \(String(cString: strerror(errno)))")
        }
    }

    /// Makes the file at least `size` bytes long, in zeros, without writing
    /// them: the blocks of later appends are then already the file's, so an
    /// append's fsync need not also commit a new file size (about 40% less
    /// time per fsync on ext4 here).
    func allocate(upTo size: Int) throws(SequencerError) {
        let error = posix_fallocate(fd, 0, off_t(size))
        guard error == 0 else {
            throw SequencerError(.unavailable, "store: allocating \(size) bytes for \(path) failed: \(String(cString: strerror(error)))")
        }
    }

    /// Whether every byte from `offset` to the end of the file is zero: an
    /// allocated end that nothing was written to yet.
    func isZero(from offset: Int) throws(SequencerError) -> Bool {
        let end = size
        let zeros = [UInt8](repeating: 0, count: 1 << 20)
        var at = offset
        while at < end {
            let chunk = try read(min(zeros.count, end - at), at: at)
            // memcmp: a byte loop over an allocated segment's megabytes is slow in debug builds.
            let same = chunk.withUnsafeBytes { c in zeros.withUnsafeBytes { z in memcmp(c.baseAddress!, z.baseAddress!, c.count) == 0 } }
            guard same else { return false }
            at += chunk.count
        }
        return true
    }

    func truncate(to size: Int) throws(SequencerError) {
        guard ftruncate(fd, off_t(size)) == 0 else {
            throw SequencerError(.unavailable, "store: truncating \(path) failed: \(String(cString: strerror(errno)))")
        }
        try sync()
    }
}

/// fsyncs a directory, so that a file created or removed in it stays so after a crash.
func syncDirectory(_ path: String) throws(SequencerError) {
    let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard fd >= 0 else { throw SequencerError(.unavailable, "store: cannot open folder \(path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    guard fsync(fd) == 0 else { throw SequencerError(.unavailable, "store: fsync of folder \(path) failed: \(String(cString: strerror(errno)))") }
}
