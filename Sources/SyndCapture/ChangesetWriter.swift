/// Writes SQLite's changeset format (https://www.sqlite.org/sessionintro.html,
/// the layout documented in sqlite3session.h), as `sqlite3changeset_apply`
/// and the rest of the changeset API read it.
struct ChangesetWriter {
    private(set) var bytes: [UInt8] = []

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

    mutating func insert(_ row: [CapturedValue]) {
        bytes += [18, 0]  // SQLITE_INSERT, not indirect
        for v in row { value(v) }
    }

    mutating func delete(_ row: [CapturedValue]) {
        bytes += [9, 0]  // SQLITE_DELETE
        for v in row { value(v) }
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

    private mutating func bigEndian(_ x: UInt64) {
        for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: x >> UInt64(shift))) }
    }

    /// SQLite's varint: 7 bits a byte, most significant first; a ninth byte carries 8.
    private mutating func varint(_ v: UInt64) {
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
