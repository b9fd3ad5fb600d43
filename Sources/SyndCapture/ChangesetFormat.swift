/// Checks that bytes are a well-formed changeset before SQLite's changeset API
/// reads them. A batch's changeset comes from the writer, and SQLite's reader
/// trusts its input: on malformed bytes `sqlite3changeset_next` can run for
/// minutes (found by the validator fuzz target). Every length is checked
/// against the bytes that remain, so this reads each byte once.
///
/// The format (sqlite3session.h, and `ChangesetWriter`): a table header ('T',
/// a varint column count, one primary-key byte per column, the NUL-terminated
/// name), then its changes: an operation (INSERT 18, UPDATE 23, DELETE 9), an
/// indirect flag, and one record (INSERT, DELETE) or two (UPDATE) of one value
/// per column: 0 undefined (UPDATE only), 1 integer and 2 real (8 bytes), 3
/// text and 4 blob (a varint length, then the bytes), 5 NULL.
public enum ChangesetFormat {
    /// SQLite's hard limit on a table's columns.
    static let maxColumns = 32767

    /// Why `bytes` is not a changeset, or nil if it is one.
    public static func problem(in bytes: [UInt8]) -> String? {
        var reader = Reader(bytes: bytes)
        var columns = 0
        while !reader.atEnd {
            let offset = reader.offset
            guard let op = reader.byte() else { return "truncated at byte \(offset)" }
            switch op {
            case 0x54:  // 'T'
                guard let n = reader.varint(), n >= 1, n <= UInt64(maxColumns) else {
                    return "table header at byte \(offset) has a column count outside 1...\(maxColumns)"
                }
                columns = Int(n)
                guard let flags = reader.take(columns) else { return "table header at byte \(offset) is truncated" }
                guard flags.allSatisfy({ Int($0) <= columns }) else {
                    return "table header at byte \(offset) has a primary-key position beyond its \(columns) columns"
                }
                guard let name = reader.cString(), !name.isEmpty else {
                    return "table header at byte \(offset) has no NUL-terminated table name"
                }
            case 18, 23, 9:
                guard columns > 0 else { return "change at byte \(offset) comes before any table header" }
                guard let indirect = reader.byte(), indirect <= 1 else { return "change at byte \(offset) has a bad indirect flag" }
                let records = op == 23 ? 2 : 1
                for _ in 0..<records {
                    for _ in 0..<columns {
                        guard let problem = reader.value(undefinedAllowed: op == 23) else { continue }
                        return "change at byte \(offset): \(problem)"
                    }
                }
            case 0x50:  // 'P'
                return "a patchset, not a changeset (byte \(offset))"
            default:
                return "unknown record type \(op) at byte \(offset)"
            }
        }
        return nil
    }

    private struct Reader {
        let bytes: [UInt8]
        var offset = 0

        var atEnd: Bool { offset >= bytes.count }

        mutating func byte() -> UInt8? {
            guard offset < bytes.count else { return nil }
            defer { offset += 1 }
            return bytes[offset]
        }

        mutating func take(_ n: Int) -> ArraySlice<UInt8>? {
            guard n >= 0, n <= bytes.count - offset else { return nil }
            defer { offset += n }
            return bytes[offset..<offset + n]
        }

        mutating func cString() -> ArraySlice<UInt8>? {
            guard let end = bytes[offset...].firstIndex(of: 0) else { return nil }
            defer { offset = end + 1 }
            return bytes[offset..<end]
        }

        /// SQLite's varint: 7 bits a byte, most significant first; a ninth byte carries 8.
        mutating func varint() -> UInt64? {
            var v: UInt64 = 0
            for i in 0..<9 {
                guard let b = byte() else { return nil }
                if i == 8 { return v << 8 | UInt64(b) }
                v = v << 7 | UInt64(b & 0x7F)
                if b & 0x80 == 0 { return v }
            }
            return v
        }

        /// Skips one value; returns what is wrong with it, if anything.
        mutating func value(undefinedAllowed: Bool) -> String? {
            guard let type = byte() else { return "a record is truncated" }
            switch type {
            case 0: return undefinedAllowed ? nil : "an undefined value outside an UPDATE"
            case 1, 2: return take(8) == nil ? "a number is truncated" : nil
            case 3, 4:
                guard let n = varint(), n <= UInt64(bytes.count - offset), take(Int(n)) != nil else {
                    return "a text or blob is longer than the changeset"
                }
                return nil
            case 5: return nil
            default: return "unknown value type \(type)"
            }
        }
    }
}
