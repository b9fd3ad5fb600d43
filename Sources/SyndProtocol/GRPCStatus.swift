/// gRPC status codes (https://grpc.github.io/grpc/core/md_doc_statuscodes.html).
public enum GRPCStatusCode: Int, Sendable, CustomStringConvertible {
    case ok = 0, cancelled, unknown, invalidArgument, deadlineExceeded, notFound, alreadyExists,
        permissionDenied, resourceExhausted, failedPrecondition, aborted, outOfRange, unimplemented,
        `internal`, unavailable, dataLoss, unauthenticated

    public var description: String {
        switch self {
        case .ok: "OK"
        case .cancelled: "CANCELLED"
        case .unknown: "UNKNOWN"
        case .invalidArgument: "INVALID_ARGUMENT"
        case .deadlineExceeded: "DEADLINE_EXCEEDED"
        case .notFound: "NOT_FOUND"
        case .alreadyExists: "ALREADY_EXISTS"
        case .permissionDenied: "PERMISSION_DENIED"
        case .resourceExhausted: "RESOURCE_EXHAUSTED"
        case .failedPrecondition: "FAILED_PRECONDITION"
        case .aborted: "ABORTED"
        case .outOfRange: "OUT_OF_RANGE"
        case .unimplemented: "UNIMPLEMENTED"
        case .internal: "INTERNAL"
        case .unavailable: "UNAVAILABLE"
        case .dataLoss: "DATA_LOSS"
        case .unauthenticated: "UNAUTHENTICATED"
        }
    }
}

/// gRPC length-prefixed message framing over HTTP/2 DATA frames.
public enum GRPCFraming {
    /// One uncompressed message with its 5-byte prefix.
    public static func frame(_ message: [UInt8]) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(message.count + 5)
        out.append(0)
        // Callers keep messages far below 4 GiB (the VFS refuses larger batches).
        let n = UInt32(clamping: message.count)
        out.append(UInt8(n >> 24)); out.append(UInt8((n >> 16) & 0xFF))
        out.append(UInt8((n >> 8) & 0xFF)); out.append(UInt8(n & 0xFF))
        out.append(contentsOf: message)
        return out
    }

    /// The single message of a unary response body.
    public static func unframe(_ body: [UInt8]) throws -> [UInt8] {
        Array(body[try messageRange(body)])
    }

    /// Where the single message of a unary response body lies in it.
    public static func messageRange(_ body: [UInt8]) throws -> Range<Int> {
        guard body.count >= 5 else { throw ProtocolError("gRPC response body of \(body.count) bytes has no message") }
        guard body[0] == 0 else { throw ProtocolError("compressed gRPC message is not supported") }
        let n = Int(body[1]) << 24 | Int(body[2]) << 16 | Int(body[3]) << 8 | Int(body[4])
        guard body.count == 5 + n else { throw ProtocolError("gRPC frame says \(n) bytes, body has \(body.count - 5)") }
        return 5..<body.count
    }
}

/// The gRPC method paths of synddb.v1.Sequencer.
public enum SequencerMethod: String, Sendable, CaseIterable {
    case getCapabilities = "/synddb.v1.Sequencer/GetCapabilities"
    case openDatabase = "/synddb.v1.Sequencer/OpenDatabase"
    case acquireLease = "/synddb.v1.Sequencer/AcquireLease"
    case renewLease = "/synddb.v1.Sequencer/RenewLease"
    case releaseLease = "/synddb.v1.Sequencer/ReleaseLease"
    case holdLease = "/synddb.v1.Sequencer/HoldLease"
    case readPages = "/synddb.v1.Sequencer/ReadPages"
    case commit = "/synddb.v1.Sequencer/Commit"
    case getCommitStatus = "/synddb.v1.Sequencer/GetCommitStatus"
    case dropDatabase = "/synddb.v1.Sequencer/DropDatabase"
    case getStatus = "/synddb.v1.Sequencer/GetStatus"
    case getSequencerKey = "/synddb.v1.Sequencer/GetSequencerKey"
    case streamBatches = "/synddb.v1.Sequencer/StreamBatches"
    case createSnapshot = "/synddb.v1.Sequencer/CreateSnapshot"
}
