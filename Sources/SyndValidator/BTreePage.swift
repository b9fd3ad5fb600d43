import SyndSQLite

/// One b-tree page of a database file (https://www.sqlite.org/fileformat2.html#b_tree_pages),
/// parsed as far as the validator needs to tell which rows a batch changed:
/// its child pages and its row-holding cells. The bytes come from the writer,
/// so every offset is checked; a page that does not parse is refused, never trusted.
struct BTreePage {
    enum Kind: UInt8 {
        case indexInterior = 2, tableInterior = 5, indexLeaf = 10, tableLeaf = 13
        var isInterior: Bool { self == .indexInterior || self == .tableInterior }
        var isTable: Bool { self == .tableInterior || self == .tableLeaf }
    }

    /// A cell that holds a row: every cell of a table leaf, every cell of an
    /// index page (a WITHOUT ROWID table keeps its rows in an index b-tree).
    struct Cell {
        /// The rowid (table leaves; 0 on index pages).
        var rowid: Int64
        var payloadSize: Int
        /// The payload bytes stored on this page.
        var local: ArraySlice<UInt8>
        /// First overflow page, 0 when the payload is all local.
        var firstOverflow: UInt32
        /// The cell as stored, without an interior cell's child pointer: equal
        /// bytes mean the same row (the overflow pages aside).
        var bytes: ArraySlice<UInt8>
    }

    let kind: Kind
    /// Child pages left to right, the right-most last (interior pages only).
    var children: [UInt32] = []
    /// A table interior page's keys: child i holds rowids up to keys[i] (the right-most child those above the last).
    var keys: [Int64] = []
    var cells: [Cell] = []

    /// - Parameter usableSize: page size less the reserved bytes at each page's end.
    init(_ data: [UInt8], number: UInt32, usableSize: Int) throws(PageFormatError) {
        let h = number == 1 ? 100 : 0
        guard data.count >= usableSize, usableSize >= 480, h + 12 <= usableSize else { throw PageFormatError(number, "is shorter than a page") }
        guard let kind = Kind(rawValue: data[h]) else { throw PageFormatError(number, "is not a b-tree page (type \(data[h]))") }
        self.kind = kind
        let count = Int(data[h + 3]) << 8 | Int(data[h + 4])
        let header = kind.isInterior ? 12 : 8
        let pointers = h + header
        guard pointers + 2 * count <= usableSize else { throw PageFormatError(number, "claims \(count) cells, more than fit") }
        cells.reserveCapacity(kind == .tableInterior ? 0 : count)
        if kind.isInterior { children.reserveCapacity(count + 1) }
        for i in 0..<count {
            let offset = Int(data[pointers + 2 * i]) << 8 | Int(data[pointers + 2 * i + 1])
            guard offset >= pointers + 2 * count, offset + 4 <= usableSize else { throw PageFormatError(number, "cell \(i) starts outside the cell area") }
            var at = offset
            if kind.isInterior {
                let child = Self.uint32(data, at)
                guard child != 0 else { throw PageFormatError(number, "cell \(i) points to page 0") }
                children.append(child)
                at += 4
            }
            if kind == .tableInterior {
                // Only the key: no row lives here.
                guard let key = Self.varint(data, &at, end: usableSize) else { throw PageFormatError(number, "cell \(i) has a bad key") }
                guard keys.last.map({ $0 < key }) ?? true else { throw PageFormatError(number, "has its keys out of order (\(key) after \(keys.last!))") }
                keys.append(key)
                continue
            }
            let start = at
            guard let size = Self.varint(data, &at, end: usableSize), size >= 0, size <= Int64(Int32.max) else {
                throw PageFormatError(number, "cell \(i) has a bad payload size")
            }
            var rowid: Int64 = 0
            if kind == .tableLeaf {
                guard let r = Self.varint(data, &at, end: usableSize) else { throw PageFormatError(number, "cell \(i) has a bad rowid") }
                guard cells.last.map({ $0.rowid < r }) ?? true else { throw PageFormatError(number, "has its rowids out of order (\(r) after \(cells.last!.rowid))") }
                rowid = r
            }
            let payload = Int(size)
            let local = Self.localSize(payload: payload, tableLeaf: kind == .tableLeaf, usableSize: usableSize)
            let overflowBytes = local < payload ? 4 : 0
            guard at + local + overflowBytes <= usableSize else { throw PageFormatError(number, "cell \(i) runs past the page") }
            let overflow = overflowBytes == 0 ? 0 : Self.uint32(data, at + local)
            guard overflowBytes == 0 || overflow != 0 else { throw PageFormatError(number, "cell \(i) has an overflow chain starting at page 0") }
            cells.append(Cell(
                rowid: rowid, payloadSize: payload, local: data[at..<(at + local)], firstOverflow: overflow,
                bytes: data[start..<(at + local + overflowBytes)]))
        }
        if kind.isInterior {
            let right = Self.uint32(data, h + 8)
            guard right != 0 else { throw PageFormatError(number, "has no right-most child") }
            children.append(right)
        }
    }

    /// How many payload bytes a cell keeps on its page (the file format's rule).
    static func localSize(payload: Int, tableLeaf: Bool, usableSize u: Int) -> Int {
        let maxLocal = tableLeaf ? u - 35 : (u - 12) * 64 / 255 - 23
        if payload <= maxLocal { return payload }
        let minLocal = (u - 12) * 32 / 255 - 23
        let k = minLocal + (payload - minLocal) % (u - 4)
        return k <= maxLocal ? k : minLocal
    }

    /// Overflow pages a cell's payload needs beyond its local bytes.
    static func overflowPages(payload: Int, local: Int, usableSize: Int) -> Int {
        payload <= local ? 0 : (payload - local + usableSize - 5) / (usableSize - 4)
    }

    static func uint32(_ d: [UInt8], _ i: Int) -> UInt32 {
        UInt32(d[i]) << 24 | UInt32(d[i + 1]) << 16 | UInt32(d[i + 2]) << 8 | UInt32(d[i + 3])
    }

    /// SQLite's big-endian varint (1 to 9 bytes), or nil when it runs past `end`.
    static func varint<C: RandomAccessCollection<UInt8>>(_ d: C, _ at: inout Int, end: Int) -> Int64? where C.Index == Int {
        var v: UInt64 = 0
        for n in 0..<9 {
            guard at < end else { return nil }
            let b = d[at]
            at += 1
            if n == 8 { return Int64(bitPattern: v << 8 | UInt64(b)) }
            v = v << 7 | UInt64(b & 0x7f)
            if b & 0x80 == 0 { return Int64(bitPattern: v) }
        }
        return nil
    }
}

/// A page that is not what its place in the file requires.
struct PageFormatError: Error, CustomStringConvertible {
    var page: UInt32
    var problem: String
    init(_ page: UInt32, _ problem: String) {
        self.page = page
        self.problem = problem
    }
    var description: String { page == 0 ? problem : "page \(page) \(problem)" }
}

/// The text encoding of a database (the header's byte 56).
enum TextEncoding: UInt32 {
    case utf8 = 1, utf16le = 2, utf16be = 3
}

/// Reads the first fields of a record (https://www.sqlite.org/fileformat2.html#record_format).
enum RecordFields {
    /// Fields `0..<count` of `record`, or nil when the record holds fewer, is
    /// malformed, or has text that is not valid in `encoding` (the caller then
    /// compares the whole table instead).
    static func decode(_ record: [UInt8], count: Int, encoding: TextEncoding) -> [Value]? {
        var at = 0
        guard let headerSize = BTreePage.varint(record, &at, end: record.count), headerSize >= at, headerSize <= record.count else { return nil }
        let headerEnd = Int(headerSize)
        var body = headerEnd
        var values: [Value] = []
        values.reserveCapacity(count)
        while values.count < count {
            guard at < headerEnd, let type = BTreePage.varint(record, &at, end: headerEnd), type >= 0 else { return nil }
            func int(_ n: Int) -> Value? {
                guard body + n <= record.count else { return nil }
                var v: Int64 = Int64(Int8(bitPattern: record[body]))
                for i in 1..<max(n, 1) { v = v << 8 | Int64(record[body + i]) }
                body += n
                return .integer(v)
            }
            let value: Value?
            switch type {
            case 0: value = .null
            case 1: value = int(1)
            case 2: value = int(2)
            case 3: value = int(3)
            case 4: value = int(4)
            case 5: value = int(6)
            case 6: value = int(8)
            case 7:
                if case .integer(let bits)? = int(8) { value = .real(Double(bitPattern: UInt64(bitPattern: bits))) } else { value = nil }
            case 8: value = .integer(0)
            case 9: value = .integer(1)
            case 10, 11: value = nil
            default:
                let n = Int((type - 12) / 2)
                guard body + n <= record.count else { return nil }
                let bytes = record[body..<(body + n)]
                body += n
                if type % 2 == 0 {
                    value = .blob(Array(bytes))
                } else {
                    value = text(bytes, encoding).map(Value.text)
                }
            }
            guard let value else { return nil }
            values.append(value)
        }
        return values
    }

    /// True when `record`'s header and its first `count` fields are all in `record`
    /// (a key early in a long record is read without its overflow pages).
    static func covers(_ record: [UInt8], count: Int) -> Bool {
        var at = 0
        guard let headerSize = BTreePage.varint(record, &at, end: record.count), headerSize >= at, headerSize <= record.count else { return false }
        var body = Int(headerSize)
        for _ in 0..<count {
            guard at < Int(headerSize), let type = BTreePage.varint(record, &at, end: Int(headerSize)), type >= 0 else { return false }
            switch type {
            case 0, 8, 9, 10, 11: break
            case 1, 2, 3, 4: body += Int(type)
            case 5: body += 6
            case 6, 7: body += 8
            default: body += Int((type - 12) / 2)
            }
            guard body <= record.count else { return false }
        }
        return true
    }

    private static func text(_ bytes: ArraySlice<UInt8>, _ encoding: TextEncoding) -> String? {
        switch encoding {
        case .utf8:
            return String(validating: bytes, as: UTF8.self)
        case .utf16le, .utf16be:
            guard bytes.count % 2 == 0 else { return nil }
            var units: [UInt16] = []
            units.reserveCapacity(bytes.count / 2)
            var i = bytes.startIndex
            while i < bytes.endIndex {
                let (a, b) = (UInt16(bytes[i]), UInt16(bytes[i + 1]))
                units.append(encoding == .utf16le ? a | b << 8 : a << 8 | b)
                i += 2
            }
            return String(validating: units, as: UTF16.self)
        }
    }
}
