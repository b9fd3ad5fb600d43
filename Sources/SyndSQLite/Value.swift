/// A SQLite value (https://www.sqlite.org/datatype3.html).
public enum Value: Sendable, Hashable, CustomStringConvertible {
    case null
    case integer(Int64)
    case real(Double)
    case text(String)
    case blob([UInt8])

    public var description: String {
        switch self {
        case .null: "NULL"
        case .integer(let v): String(v)
        case .real(let v): String(v)
        case .text(let v): v
        case .blob(let v): "x'" + v.map { b in (b < 16 ? "0" : "") + String(b, radix: 16) }.joined() + "'"
        }
    }

    public var int64: Int64? { if case .integer(let v) = self { v } else { nil } }
    public var string: String? { if case .text(let v) = self { v } else { nil } }
    public var double: Double? {
        switch self {
        case .real(let v): v
        case .integer(let v): Double(v)
        default: nil
        }
    }
}

/// A value that can be bound to a statement parameter.
public protocol SQLiteBindable: Sendable {
    var sqliteValue: Value { get }
}

extension Value: SQLiteBindable { public var sqliteValue: Value { self } }
extension Int: SQLiteBindable { public var sqliteValue: Value { .integer(Int64(self)) } }
extension Int64: SQLiteBindable { public var sqliteValue: Value { .integer(self) } }
extension Int32: SQLiteBindable { public var sqliteValue: Value { .integer(Int64(self)) } }
extension Double: SQLiteBindable { public var sqliteValue: Value { .real(self) } }
extension String: SQLiteBindable { public var sqliteValue: Value { .text(self) } }
extension Bool: SQLiteBindable { public var sqliteValue: Value { .integer(self ? 1 : 0) } }
extension Array: SQLiteBindable where Element == UInt8 { public var sqliteValue: Value { .blob(self) } }
extension Optional: SQLiteBindable where Wrapped: SQLiteBindable {
    public var sqliteValue: Value { self?.sqliteValue ?? .null }
}
