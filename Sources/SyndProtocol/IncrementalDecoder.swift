/// Decodes a message from its bytes as they arrive, one top-level field at a
/// time, so that a large request never exists twice in memory: its encoded
/// form and its decoded form.
///
/// Each top-level field is collected whole (key, length and value), then
/// handed to the message's own `decode(field:wire:from:)`, so the result, and
/// every refusal, is what `M(serializedBytes:)` gives for the same bytes. The
/// one exception is `direct`: a length-delimited bytes field whose value is
/// appended straight into the message as it arrives (a commit's changeset),
/// instead of being collected and then copied.
public struct IncrementalDecoder<M: WireMessage> {
    private var message = M()
    /// The field being collected: its key and, for length-delimited fields, its length prefix and value.
    private var field: [UInt8] = []
    private var state = State.key
    private let direct: (number: Int, path: WritableKeyPath<M, [UInt8]>)?
    /// Bytes of the message not yet taken: no length may point past them.
    private var unread: Int

    private enum State {
        /// Reading the key varint.
        case key
        /// Reading a varint value (`wire` varint) or a length varint (`wire` lengthDelimited).
        case varint(WireType)
        /// `remaining` bytes of the field's value are still to come.
        case value(remaining: Int)
        /// `remaining` bytes of the direct field's value are still to come.
        case directValue(remaining: Int)
    }

    /// `length`: the message's size, as its framing announced it. `direct`:
    /// the number of a length-delimited bytes field and where the message
    /// keeps it, to be filled without a copy.
    public init(length: Int, direct: (number: Int, path: WritableKeyPath<M, [UInt8]>)? = nil) {
        self.unread = length
        self.direct = direct
    }

    /// Takes the next bytes of the message.
    public mutating func append(_ bytes: UnsafeRawBufferPointer) throws {
        guard bytes.count <= unread else { throw ProtocolError("more bytes than the message's announced length") }
        var at = 0
        // `unread` counts what follows the byte being looked at, so a length can be checked against it.
        defer { unread -= at }
        while at < bytes.count {
            switch state {
            case .key, .varint:
                let byte = bytes[at]
                at += 1
                field.append(byte)
                guard field.count <= 20 else { throw ProtocolError("varint longer than 10 bytes") }
                if byte & 0x80 == 0 { try varintEnded(unread: unread - at) }
            case .value(let remaining):
                let n = min(remaining, bytes.count - at)
                field.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[at..<(at + n)]))
                at += n
                if n == remaining {
                    try fieldEnded()
                } else {
                    state = .value(remaining: remaining - n)
                }
            case .directValue(let remaining):
                let n = min(remaining, bytes.count - at)
                message[keyPath: direct!.path].append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[at..<(at + n)]))
                at += n
                state = n == remaining ? .key : .directValue(remaining: remaining - n)
            }
        }
    }

    /// The message, once all its bytes arrived.
    public func finish() throws -> M {
        switch state {
        case .key where field.isEmpty: return message
        case .key, .varint: throw ProtocolError("truncated varint")
        case .value, .directValue: throw ProtocolError("message ends inside a field")
        }
    }

    /// A varint ended: the key (then read the wire type's value), a varint value, or a length.
    private mutating func varintEnded(unread: Int) throws {
        switch state {
        case .key:
            var reader = ProtoReader(field)
            guard let (_, wire) = try reader.nextField() else { return }
            switch wire {
            case .varint, .lengthDelimited: state = .varint(wire)
            case .fixed64: state = .value(remaining: 8)
            case .fixed32: state = .value(remaining: 4)
            }
        case .varint(.lengthDelimited):
            // The field's key and length are in `field`; the length is its last varint.
            var reader = ProtoReader(field)
            guard let (number, _) = try reader.nextField() else { return }
            let prefix = try reader.lengthPrefix()
            guard prefix <= UInt64(unread) else { throw ProtocolError("length \(prefix) past end of message") }
            let length = Int(prefix)
            if let direct, number == direct.number {
                field.removeAll(keepingCapacity: true)
                // The last occurrence of a bytes field wins, as in a whole decode.
                message[keyPath: direct.path] = []
                message[keyPath: direct.path].reserveCapacity(length)
                state = length > 0 ? .directValue(remaining: length) : .key
            } else if length == 0 {
                try fieldEnded()
            } else {
                state = .value(remaining: length)
            }
        default:
            try fieldEnded()
        }
    }

    /// The field in `field` is complete: the message decodes it.
    private mutating func fieldEnded() throws {
        var reader = ProtoReader(field)
        if let (number, wire) = try reader.nextField() {
            do {
                try message.decode(field: number, wire: wire, from: &reader)
            } catch is SkippedField {}
        }
        field.removeAll(keepingCapacity: field.count <= 1 << 16)
        state = .key
    }
}
