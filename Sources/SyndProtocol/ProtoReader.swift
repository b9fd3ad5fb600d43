/// A malformed protobuf message or gRPC frame.
public struct ProtocolError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Decodes protobuf wire format without Foundation.
public struct ProtoReader {
    private let buffer: [UInt8]
    private var index: Int
    private let end: Int
    /// The wire type of the field being read (nil inside a packed run).
    private var fieldWire: WireType?

    public init(_ buffer: [UInt8]) {
        self.buffer = buffer
        self.index = 0
        self.end = buffer.count
    }

    /// A reader of the bytes of `buffer` in `range` (a message inside a larger buffer, read without a copy).
    public init(_ buffer: [UInt8], range: Range<Int>) {
        self.buffer = buffer
        self.index = range.lowerBound
        self.end = range.upperBound
    }

    public var isAtEnd: Bool { index >= end }

    /// A varint field's value.
    public mutating func varint() throws -> UInt64 {
        try expectField(.varint)
        return try rawVarint()
    }

    private mutating func rawVarint() throws -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard index < end else { throw ProtocolError("truncated varint") }
            let byte = buffer[index]
            index += 1
            guard shift < 64 else { throw ProtocolError("varint longer than 10 bytes") }
            result |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return result }
            shift += 7
        }
    }

    /// The next field's number and wire type, or nil at the end.
    public mutating func nextField() throws -> (Int, WireType)? {
        guard !isAtEnd else { return nil }
        fieldWire = nil
        let key = try rawVarint()
        guard let wire = WireType(rawValue: UInt8(key & 7)) else {
            throw ProtocolError("unsupported wire type \(key & 7)")
        }
        let field = Int(key >> 3)
        guard field > 0 else { throw ProtocolError("field number 0") }
        fieldWire = wire
        return (field, wire)
    }

    private mutating func lengthDelimitedRange() throws -> Range<Int> {
        try expectField(.lengthDelimited)
        let length = try rawVarint()
        guard length <= UInt64(end - index) else { throw ProtocolError("length \(length) past end of message") }
        let range = index..<(index + Int(length))
        index = range.upperBound
        return range
    }

    /// The length prefix of a length-delimited field whose value is not in
    /// this buffer (an incremental decode): the varint alone, unchecked.
    public mutating func lengthPrefix() throws -> UInt64 {
        try rawVarint()
    }

    public mutating func bytes() throws -> [UInt8] {
        Array(buffer[try lengthDelimitedRange()])
    }

    /// Where a bytes field's value lies in the buffer, for a reader that keeps it there.
    public mutating func bytesRange() throws -> Range<Int> {
        try lengthDelimitedRange()
    }

    public mutating func string() throws -> String {
        let range = try lengthDelimitedRange()
        guard let s = String(validating: buffer[range], as: UTF8.self) else {
            throw ProtocolError("string field is not valid UTF-8")
        }
        return s
    }

    public mutating func uint32() throws -> UInt32 {
        UInt32(truncatingIfNeeded: try varint())
    }

    public mutating func message<M: WireMessage>(_ type: M.Type = M.self) throws -> M {
        var inner = ProtoReader(buffer, range: try lengthDelimitedRange())
        return try M(reader: &inner)
    }

    /// A repeated uint32, packed or not.
    public mutating func appendUInt32(_ wire: WireType, to values: inout [UInt32]) throws {
        if wire == .lengthDelimited {
            var inner = ProtoReader(buffer, range: try lengthDelimitedRange())
            while !inner.isAtEnd { values.append(try inner.uint32()) }
        } else {
            values.append(try uint32())
        }
    }

    /// A known field sent with another wire type is skipped, as generated
    /// SwiftProtobuf code does (it keeps it as an unknown field): reading it
    /// as the expected type would take its bytes for something else.
    private mutating func expectField(_ expected: WireType) throws {
        guard let wire = fieldWire, wire != expected else { return }
        fieldWire = nil
        try skip(wire)
        throw SkippedField()
    }

    public func expect(_ wire: WireType, _ expected: WireType) throws {
        guard wire == expected else { throw ProtocolError("wire type \(wire) where \(expected) was expected") }
    }

    /// Skips a field this version does not know (forward compatibility).
    public mutating func skip(_ wire: WireType) throws {
        fieldWire = nil
        switch wire {
        case .varint: _ = try rawVarint()
        case .fixed64: try advance(8)
        case .fixed32: try advance(4)
        case .lengthDelimited: _ = try lengthDelimitedRange()
        }
    }

    private mutating func advance(_ n: Int) throws {
        guard end - index >= n else { throw ProtocolError("truncated fixed-width field") }
        index += n
    }
}

/// A message of the SyndDB protocol (proto/synddb/v1/sequencer.proto).
public protocol WireMessage: Sendable, Equatable {
    init()
    func encode(to writer: inout ProtoWriter)
    mutating func decode(field: Int, wire: WireType, from reader: inout ProtoReader) throws
}

/// A field skipped for its wire type; its message decodes on.
struct SkippedField: Error {}

extension WireMessage {
    public init(reader: inout ProtoReader) throws {
        self.init()
        while let (field, wire) = try reader.nextField() {
            do {
                try decode(field: field, wire: wire, from: &reader)
            } catch is SkippedField {
                continue
            }
        }
    }

    public init(serializedBytes: [UInt8]) throws {
        var reader = ProtoReader(serializedBytes)
        try self.init(reader: &reader)
    }

    public func serializedBytes() -> [UInt8] {
        var writer = ProtoWriter()
        encode(to: &writer)
        return writer.bytes
    }
}
