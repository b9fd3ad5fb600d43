import CSQLite

/// Writes SQLite's changeset format (https://www.sqlite.org/sessionintro.html,
/// the layout documented in sqlite3session.h), as `sqlite3changeset_apply`
/// and the rest of the changeset API read it.
struct ChangesetWriter {
    /// What was written since the last move to `spill`.
    private(set) var bytes: [UInt8] = []
    /// Past this many bytes (0: never), the changeset moves to a temporary
    /// file in `spillDirectory` (see `settle`).
    private let spillThreshold: Int
    private let spillDirectory: String
    /// The temporary file, once the changeset passed the threshold.
    private var spill: RowBytes?
    /// Bytes moved to `spill` so far.
    private var moved = 0

    init(spillThreshold: Int = 0, spillDirectory: String = "/tmp") {
        self.spillThreshold = spillThreshold
        self.spillDirectory = spillDirectory
    }

    /// Bytes written so far.
    var count: Int { moved + bytes.count }

    /// Called between rows: once the changeset passes the spill threshold,
    /// what is written moves to the temporary file a megabyte at a time.
    mutating func settle() throws(CaptureError) {
        guard spillThreshold > 0, count > spillThreshold, bytes.count >= RowBytes.chunk else { return }
        if spill == nil { spill = RowBytes(threshold: 1, directory: spillDirectory, expected: 2 * RowBytes.chunk) }
        let chunk = bytes
        _ = try spill!.append { $0 += chunk }
        moved += bytes.count
        bytes.removeAll(keepingCapacity: true)
    }

    /// The changeset: in memory, or (once it moved to the file) the file, with the rest moved there too.
    mutating func finish() throws(CaptureError) -> (bytes: [UInt8], spilled: SpilledChangeset?) {
        guard let spill else { return (bytes, nil) }
        let rest = bytes
        _ = try spill.append { $0 += rest }
        moved += bytes.count
        bytes = []
        return ([], SpilledChangeset(spill))
    }

    /// Memory to reserve for a changeset of about `expected` bytes: no more
    /// than stays in memory before the file takes over.
    func reservation(for expected: Int) -> Int {
        spillThreshold > 0 ? min(expected, spillThreshold + 2 * RowBytes.chunk) : expected
    }

    /// A table header: its columns, each one's place in the primary key
    /// (1-based, 0 for none; `sqlite3changeset_apply` compares these bytes
    /// with the table's `PRAGMA table_info` pk column), its name.
    mutating func table(_ name: String, primaryKey: [Int]) {
        bytes.append(0x54)  // 'T'
        varint(UInt64(primaryKey.count))
        bytes += primaryKey.map { UInt8(clamping: $0) }
        bytes += Array(name.utf8)
        bytes.append(0)
    }

    mutating func reserve(_ count: Int) { bytes.reserveCapacity(count) }

    /// Drops everything written after the first `count` bytes (never before a `settle`).
    mutating func truncate(to count: Int) throws(CaptureError) {
        guard count >= moved else {
            throw CaptureError(code: SQLITE_INTERNAL, message: "changeset capture cut its changeset at byte \(count), before the \(moved) bytes already in its temporary file")
        }
        bytes.removeSubrange((count - moved)...)
    }

    mutating func insert(_ row: [CapturedValue], indirect: Bool = false) {
        bytes += [18, indirect ? 1 : 0]  // SQLITE_INSERT
        for v in row { value(v) }
    }

    mutating func delete(_ row: [CapturedValue], indirect: Bool = false) {
        bytes += [9, indirect ? 1 : 0]  // SQLITE_DELETE
        for v in row { value(v) }
    }

    /// An INSERT or DELETE whose record (one value per column) is already encoded.
    mutating func change(_ op: UInt8, indirect: Bool, record: ArraySlice<UInt8>) {
        bytes += [op, indirect ? 1 : 0]
        bytes += record
    }

    /// An UPDATE from two encoded records, as SQLite's session extension
    /// writes it (`sessionAppendUpdate`): a column counts as changed unless
    /// `unchangedLikeSessions` says otherwise; the old record holds the key
    /// and the old values of changed columns, the new record the new values
    /// of changed columns. False, and nothing written, when no column changed.
    mutating func update(oldRecord: ArraySlice<UInt8>, newRecord: ArraySlice<UInt8>, primaryKey: [Int], indirect: Bool) -> Bool {
        let old = Self.spans(oldRecord, primaryKey.count), new = Self.spans(newRecord, primaryKey.count)
        guard old.count == primaryKey.count, new.count == primaryKey.count else { return false }
        var changed = [Bool](repeating: false, count: primaryKey.count)
        for i in primaryKey.indices {
            changed[i] = !Self.unchangedLikeSessions(oldRecord[old[i]], newRecord[new[i]])
        }
        guard changed.contains(true) else { return false }
        bytes += [23, indirect ? 1 : 0]  // SQLITE_UPDATE
        for i in primaryKey.indices {
            if changed[i] || primaryKey[i] > 0 { bytes += oldRecord[old[i]] } else { bytes.append(0) }
        }
        for i in primaryKey.indices {
            if changed[i] { bytes += newRecord[new[i]] } else { bytes.append(0) }
        }
        return true
    }

    /// Whether the session extension takes two encoded values as equal: same
    /// type and bytes, except that reals compare as numbers (0.0 and -0.0 are
    /// equal). Text is UTF-8 on both sides, whatever the database encoding.
    static func unchangedLikeSessions(_ a: ArraySlice<UInt8>, _ b: ArraySlice<UInt8>) -> Bool {
        guard let ta = a.first, let tb = b.first, ta == tb else { return false }
        switch ta {
        case 2:
            func real(_ x: ArraySlice<UInt8>) -> Double {
                Double(bitPattern: x.dropFirst().prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
            }
            return a.count == 9 && b.count == 9 && real(a) == real(b)
        default:
            return a.elementsEqual(b)
        }
    }

    /// Where each of a record's `count` encoded values lies. Two encodings are
    /// equal exactly when the values are identical as `same` compares them.
    static func spans(_ record: ArraySlice<UInt8>, _ count: Int) -> [Range<Int>] {
        var out: [Range<Int>] = []
        out.reserveCapacity(count)
        var i = record.startIndex
        while out.count < count, i < record.endIndex {
            let start = i
            switch record[i] {
            case 1, 2: i += 9
            case 3, 4:
                i += 1
                var n = 0
                var k = 0
                while i < record.endIndex {
                    let b = record[i]
                    i += 1
                    k += 1
                    if k == 9 { n = n << 8 | Int(b); break }
                    n = n << 7 | Int(b & 0x7F)
                    if b & 0x80 == 0 { break }
                }
                i += n
            default: i += 1
            }
            out.append(start..<min(i, record.endIndex))
        }
        return out
    }

    /// Appends one value, as `value` would write it, straight from a column
    /// of a statement's current row.
    static func appendColumn(_ stmt: OpaquePointer, _ i: Int32, _ r: UnsafePointer<sqlite3_api_routines>, to out: inout [UInt8]) {
        switch r.pointee.column_type(stmt, i) {
        case SQLITE_INTEGER:
            out.append(1)
            appendBigEndian(UInt64(bitPattern: r.pointee.column_int64(stmt, i)), to: &out)
        case SQLITE_FLOAT:
            out.append(2)
            appendBigEndian(r.pointee.column_double(stmt, i).bitPattern, to: &out)
        case let type where type == SQLITE_TEXT || type == SQLITE_BLOB:
            // column_text first, then column_bytes: the length of the UTF-8 text.
            let p: UnsafeRawPointer? = type == SQLITE_TEXT ? r.pointee.column_text(stmt, i).map(UnsafeRawPointer.init) : r.pointee.column_blob(stmt, i)
            let n = Int(r.pointee.column_bytes(stmt, i))
            out.append(type == SQLITE_TEXT ? 3 : 4)
            appendVarint(UInt64(n), to: &out)
            if n > 0, let p { out.append(contentsOf: UnsafeRawBufferPointer(start: p, count: n)) }
        default:
            out.append(5)
        }
    }

    /// The old record holds the key and the old values of changed columns; the
    /// new record the new values of changed columns; everything else undefined.
    mutating func update(old: [CapturedValue], new: [CapturedValue], primaryKey: [Int]) {
        bytes += [23, 0]  // SQLITE_UPDATE
        for i in old.indices {
            if primaryKey[i] > 0 || !Self.same(old[i], new[i]) { value(old[i]) } else { bytes.append(0) }
        }
        for i in new.indices {
            if primaryKey[i] == 0 && !Self.same(old[i], new[i]) { value(new[i]) } else { bytes.append(0) }
        }
    }

    /// Identical values, as stored (0.0 and -0.0 differ, as their bytes do).
    static func same(_ a: CapturedValue, _ b: CapturedValue) -> Bool {
        switch (a, b) {
        case (.real(let x), .real(let y)): x.bitPattern == y.bitPattern
        default: a == b
        }
    }

    static func same(_ a: [CapturedValue], _ b: [CapturedValue]) -> Bool {
        a.count == b.count && zip(a, b).allSatisfy { same($0, $1) }
    }

    private mutating func value(_ v: CapturedValue) {
        switch v {
        case .null: bytes.append(5)
        case .integer(let x):
            bytes.append(1)
            bigEndian(UInt64(bitPattern: x))
        case .real(let x):
            bytes.append(2)
            bigEndian(x.bitPattern)
        case .text(let t):
            bytes.append(3)
            varint(UInt64(t.count))
            bytes += t
        case .blob(let b):
            bytes.append(4)
            varint(UInt64(b.count))
            bytes += b
        }
    }

    private mutating func bigEndian(_ x: UInt64) { Self.appendBigEndian(x, to: &bytes) }

    private static func appendBigEndian(_ x: UInt64, to bytes: inout [UInt8]) {
        for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: x >> UInt64(shift))) }
    }

    private mutating func varint(_ v: UInt64) { Self.appendVarint(v, to: &bytes) }

    /// SQLite's varint: 7 bits a byte, most significant first; a ninth byte carries 8.
    private static func appendVarint(_ v: UInt64, to bytes: inout [UInt8]) {
        if v & (0xFF00_0000 << 32) != 0 {
            var out = [UInt8](repeating: 0, count: 9)
            out[8] = UInt8(truncatingIfNeeded: v)
            var x = v >> 8
            for i in stride(from: 7, through: 0, by: -1) {
                out[i] = UInt8(truncatingIfNeeded: (x & 0x7F) | 0x80)
                x >>= 7
            }
            bytes += out
            return
        }
        var groups: [UInt8] = []
        var x = v
        repeat {
            groups.append(UInt8(truncatingIfNeeded: x & 0x7F))
            x >>= 7
        } while x != 0
        for (i, g) in groups.reversed().enumerated() {
            bytes.append(i == groups.count - 1 ? g : g | 0x80)
        }
    }
}
