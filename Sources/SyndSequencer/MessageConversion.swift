import SwiftProtobuf
import SyndGRPC
import SyndProtocol

// The store speaks the hand-written Foundation-free messages; gRPC speaks the
// generated ones. Converting through the wire format keeps the two in lock step:
// any drift between them shows up as a decoding failure here and in the tests.

extension SwiftProtobuf.Message {
    func converted<M: WireMessage>(to type: M.Type = M.self) throws -> M {
        let bytes: [UInt8] = try serializedBytes()
        return try M(serializedBytes: bytes)
    }
}

extension WireMessage {
    func converted<M: SwiftProtobuf.Message>(to type: M.Type = M.self) throws -> M {
        try M(serializedBytes: serializedBytes())
    }
}
