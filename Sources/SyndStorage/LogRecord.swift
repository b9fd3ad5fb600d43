import SyndProtocol

/// The on-disk form of one `LogStore` record.
///
/// A record is a 20-byte header and a payload:
///
///     magic u32 "SYNR" | kind u8 | 3 zero bytes | payload length u32 | payload CRC-32C u32 | header CRC-32C u32 (of the 16 bytes before it)
///
/// All integers are little-endian. Payloads by kind:
///
/// - create: database u64, name (UTF-8, the rest)
/// - batch / drop: database u64, version u64, txn id length u16, txn id,
///   seal length u32, seal (the `Batch` message without its pages), page
///   count u32, then per page: number u32, CRC-32C u32, length u32, bytes.
///   Page bytes are stored as the client sent them, so a read is one `pread`.
/// - epoch ceiling: database u64, ceiling u64
/// - prune: database u64, keep-from version u64
/// - external batch: like a batch up to its page count, then per page:
///   number u32, CRC-32C u32, length u32, offset u64 in its pages file
///   (`NNNNNNNN.pages`, named after `pages file` u32 before the count). Large
///   batches are written this way (see `LogStore`), so that their bytes never
///   hold up other databases' commits in the log's writer.
/// - compacted: database u64, first version u64, last version u64, page size
///   u32, page count u32 (of the last version), entry count u32, then per
///   entry: number u32, version u64, CRC-32C u32, length u32, place u32; a
///   place of 0 means the bytes follow, one with `LogSegment.pagesFileBit`
///   names a pages file and an offset u64 in it follows. Length 0: the page
///   was cut off at that version. Written only by compaction (see
///   `LogStore+Compaction`), in place of batches older than the retention
///   window: it keeps what reads still see of them (their live page images)
///   and forgets the rest (seals, changesets, commit ids, superseded images).
/// - covers: last segment number u32. The first record of a segment that
///   compaction merged from this one and the ones after it, through that
///   number: those files are gone (or, after a crash, left over and removed).
/// - group end: group sequence u64. Records take effect only with the group
///   end that follows them: a group is what one fsync made durable, so a crash
///   leaves whole groups, and anything after the last intact group end is a
///   torn tail.
struct LogRecord {
    enum Kind: UInt8 {
        case create = 1, batch = 2, drop = 3, epochCeiling = 4, prune = 5, groupEnd = 6, externalBatch = 7, compacted = 8, covers = 9
    }

    static let magic: UInt32 = 0x524E_5953  // "SYNR"
    static let headerSize = 20

    /// The record ready to write: its bytes are these parts, one after
    /// another. A batch's changeset is a part of its own, the batch's buffer
    /// itself, so a large changeset is written without being copied.
    var parts: [[UInt8]]
    /// Bytes of the whole record.
    let length: Int
    /// For batch records: where each page's bytes start, from the record's first byte.
    var pagePositions: [(number: UInt32, position: Int, checksum: UInt32, length: UInt32)] = []

    /// Batches with more page bytes than this get a pages file of their own.
    static let inlineLimit = 1 << 20

    /// Encodes `record`.
    init(_ record: StoreRecord) {
        var w = LogWriterBuffer()
        w.reserveHeader()
        switch record {
        case .create(let database, let name):
            w.u64(UInt64(bitPattern: database))
            w.append(Array(name.utf8))
            self.init(.create, w)
        case .batch(let database, let txnID, let batch), .drop(let database, let txnID, let batch):
            let kind: Kind
            if case .drop = record { kind = .drop } else { kind = .batch }
            Self.writeBatchStart(&w, database: database, txnID: txnID, batch: batch)
            var pages = LogWriterBuffer()
            pages.u32(UInt32(batch.pages.count))
            pages.reserve(batch.pages.reduce(0) { $0 + 12 + $1.data.count })
            let pagesStart = w.count + batch.changeset.count
            var positions: [(number: UInt32, position: Int, checksum: UInt32, length: UInt32)] = []
            positions.reserveCapacity(batch.pages.count)
            for page in batch.pages {
                pages.u32(page.number)
                pages.u32(page.checksum)
                pages.u32(UInt32(page.data.count))
                positions.append((page.number, pagesStart + pages.count, page.checksum, UInt32(page.data.count)))
                pages.append(page.data)
            }
            self.init(kind, w, changeset: batch.changeset, rest: pages.bytes)
            pagePositions = positions
        case .epochCeiling(let database, let ceiling):
            w.u64(UInt64(bitPattern: database))
            w.u64(ceiling)
            self.init(.epochCeiling, w)
        case .prune(let database, let keepFrom):
            w.u64(UInt64(bitPattern: database))
            w.u64(keepFrom)
            self.init(.prune, w)
        }
    }

    /// The record of `kind` whose payload is `w`'s bytes after the header, then `changeset`, then `rest`.
    private init(_ kind: Kind, _ w: LogWriterBuffer, changeset: [UInt8] = [], rest: [UInt8] = []) {
        var w = w
        var checksum = w.bytes.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[LogRecord.headerSize...])) }
        checksum = CRC32C.checksum(changeset, continuing: checksum)
        checksum = CRC32C.checksum(rest, continuing: checksum)
        let length = w.count + changeset.count + rest.count
        w.finishHeader(kind, payloadLength: UInt32(length - LogRecord.headerSize), payloadChecksum: checksum)
        parts = [w.bytes]
        if !changeset.isEmpty { parts.append(changeset) }
        if !rest.isEmpty { parts.append(rest) }
        self.length = length
    }

    /// An external batch record for `batch`, whose pages were written to pages file `file` at `offsets`.
    init(external database: Int64, txnID: [UInt8], batch: Batch, file: UInt32, offsets: [Int]) {
        var w = LogWriterBuffer()
        w.reserveHeader()
        Self.writeBatchStart(&w, database: database, txnID: txnID, batch: batch)
        var pages = LogWriterBuffer()
        pages.u32(file)
        pages.u32(UInt32(batch.pages.count))
        pages.reserve(batch.pages.count * 20)
        var positions: [(number: UInt32, position: Int, checksum: UInt32, length: UInt32)] = []
        positions.reserveCapacity(batch.pages.count)
        for (page, offset) in zip(batch.pages, offsets) {
            pages.u32(page.number)
            pages.u32(page.checksum)
            pages.u32(UInt32(page.data.count))
            pages.u64(UInt64(offset))
            positions.append((page.number, offset, page.checksum, UInt32(page.data.count)))
        }
        self.init(.externalBatch, w, changeset: batch.changeset, rest: pages.bytes)
        pagePositions = positions
    }

    /// What every batch-like record starts with: database, version, commit
    /// id, seal. The seal is the `Batch` message without its pages; its
    /// changeset field comes last, and this writes only that field's key and
    /// length: its bytes follow, as a part of their own.
    private static func writeBatchStart(_ w: inout LogWriterBuffer, database: Int64, txnID: [UInt8], batch: Batch) {
        w.u64(UInt64(bitPattern: database))
        w.u64(batch.version)
        w.u16(UInt16(txnID.count))
        w.append(txnID)
        var seal = batch
        seal.pages = []
        seal.changeset = []
        let sealBytes = seal.serializedBytes()
        var changesetKey = ProtoWriter()
        if !batch.changeset.isEmpty {
            changesetKey.tag(7, .lengthDelimited)
            changesetKey.varint(UInt64(batch.changeset.count))
        }
        w.u32(UInt32(sealBytes.count + changesetKey.bytes.count + batch.changeset.count))
        w.append(sealBytes)
        w.append(changesetKey.bytes)
    }

    /// What precedes a page's bytes in a batch record: number, CRC-32C, length.
    static func pagePrefix(_ page: Page) -> [UInt8] {
        var w = LogWriterBuffer()
        w.u32(page.number)
        w.u32(page.checksum)
        w.u32(UInt32(page.data.count))
        return w.bytes
    }

    /// One page image a compacted record keeps: inline `data`, or `length`
    /// bytes at `offset` of pages file `file` (nil: inline).
    struct KeptImage {
        var number: UInt32
        var version: UInt64
        var checksum: UInt32
        var length: UInt32
        var file: UInt32?
        var offset: Int = 0
        var data: [UInt8] = []
    }

    /// A compacted record of versions `first...last` of `database`, keeping
    /// `images` (in version order). `pagePositions` gives, per inline image,
    /// where its bytes start from the record's first byte.
    init(compacted database: Int64, first: UInt64, last: UInt64, pageSize: UInt32, pageCount: UInt32, images: [KeptImage]) {
        var w = LogWriterBuffer()
        w.reserveHeader()
        w.u64(UInt64(bitPattern: database))
        w.u64(first)
        w.u64(last)
        w.u32(pageSize)
        w.u32(pageCount)
        w.u32(UInt32(images.count))
        w.reserve(images.reduce(0) { $0 + 32 + $1.data.count })
        var positions: [(number: UInt32, position: Int, checksum: UInt32, length: UInt32)] = []
        for image in images {
            w.u32(image.number)
            w.u64(image.version)
            w.u32(image.checksum)
            w.u32(image.length)
            w.u32(image.file ?? 0)
            if image.file != nil {
                w.u64(UInt64(image.offset))
            } else {
                positions.append((image.number, w.count, image.checksum, image.length))
                w.append(image.data)
            }
        }
        self.init(.compacted, w)
        pagePositions = positions
    }

    /// A covers record: this segment holds what segments through `last` held.
    init(coversThrough last: UInt32) {
        var w = LogWriterBuffer()
        w.reserveHeader()
        w.u32(last)
        self.init(.covers, w)
    }

    /// A group end record.
    init(groupEnd sequence: UInt64) {
        var w = LogWriterBuffer()
        w.reserveHeader()
        w.u64(sequence)
        self.init(.groupEnd, w)
    }

    /// A header read back: what it says, if it is intact.
    struct Header {
        var kind: Kind
        var payloadLength: Int
        var payloadChecksum: UInt32
    }

    /// Parses a 20-byte header; nil if it is not an intact header of a known kind.
    static func header(_ raw: UnsafeRawBufferPointer) -> Header? {
        guard raw.count >= headerSize,
            raw.loadUnaligned(fromByteOffset: 0, as: UInt32.self).littleEndian == magic,
            CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[0..<16])) == raw.loadUnaligned(fromByteOffset: 16, as: UInt32.self).littleEndian,
            let kind = Kind(rawValue: raw[4])
        else { return nil }
        return Header(
            kind: kind, payloadLength: Int(raw.loadUnaligned(fromByteOffset: 8, as: UInt32.self).littleEndian),
            payloadChecksum: raw.loadUnaligned(fromByteOffset: 12, as: UInt32.self).littleEndian)
    }
}

/// A growing record buffer with little-endian appends.
struct LogWriterBuffer {
    private(set) var bytes: [UInt8] = []
    var count: Int { bytes.count }

    mutating func reserve(_ extra: Int) { bytes.reserveCapacity(bytes.count + extra) }
    mutating func reserveHeader() { bytes.append(contentsOf: repeatElement(0, count: LogRecord.headerSize)) }
    mutating func append(_ b: [UInt8]) { bytes.append(contentsOf: b) }
    mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }

    /// Fills in the header of a payload that may continue past these bytes.
    mutating func finishHeader(_ kind: LogRecord.Kind, payloadLength: UInt32, payloadChecksum: UInt32) {
        bytes.withUnsafeMutableBytes { h in
            h.storeBytes(of: LogRecord.magic.littleEndian, toByteOffset: 0, as: UInt32.self)
            h[4] = kind.rawValue
            h.storeBytes(of: payloadLength.littleEndian, toByteOffset: 8, as: UInt32.self)
            h.storeBytes(of: payloadChecksum.littleEndian, toByteOffset: 12, as: UInt32.self)
            let headerChecksum = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: h[0..<16]))
            h.storeBytes(of: headerChecksum.littleEndian, toByteOffset: 16, as: UInt32.self)
        }
    }
}

/// Reads a payload's fields in order; any overrun is damage.
struct LogPayloadReader {
    let raw: UnsafeRawBufferPointer
    var offset: Int

    init(_ raw: UnsafeRawBufferPointer, offset: Int = 0) {
        self.raw = raw
        self.offset = offset
    }

    struct Overrun: Error {}

    mutating func take(_ n: Int) throws(Overrun) -> UnsafeRawBufferPointer {
        guard n >= 0, offset + n <= raw.count else { throw Overrun() }
        defer { offset += n }
        return UnsafeRawBufferPointer(rebasing: raw[offset..<(offset + n)])
    }
    mutating func u16() throws(Overrun) -> UInt16 { try take(2).loadUnaligned(as: UInt16.self).littleEndian }
    mutating func u32() throws(Overrun) -> UInt32 { try take(4).loadUnaligned(as: UInt32.self).littleEndian }
    mutating func u64() throws(Overrun) -> UInt64 { try take(8).loadUnaligned(as: UInt64.self).littleEndian }
    mutating func bytes(_ n: Int) throws(Overrun) -> [UInt8] { Array(try take(n)) }
    var remaining: Int { raw.count - offset }
}
