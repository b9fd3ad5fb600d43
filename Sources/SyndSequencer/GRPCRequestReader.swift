import NIOCore
import SyndProtocol

/// Collects the one request message of a unary or server-streaming call from
/// its DATA frames: gRPC's 5-byte prefix (compressed flag, big-endian length),
/// then the message. A compressed or oversize message is refused as soon as
/// its prefix arrives, so an oversize request is never buffered.
///
/// A Commit request is decoded as it arrives instead of being collected
/// first: a large batch then exists once in memory, not as its bytes and its
/// decoded copy (about 2x the batch at the peak).
struct GRPCRequestReader {
    /// A complete request.
    enum Request {
        /// The message's bytes, for the service to decode.
        case bytes([UInt8])
        /// A Commit request, decoded.
        case commit(CommitRequest)
    }

    /// The largest message accepted, in bytes.
    let limit: Int
    /// Whether the message is a CommitRequest, to be decoded as it arrives.
    var decodesCommit = false
    private var commit: IncrementalDecoder<CommitRequest>?
    /// The prefix read so far (fewer than 5 bytes while it is incomplete).
    private var prefix: [UInt8] = []
    /// The length the prefix announced, while its message is incomplete.
    private var expected: Int?
    private var message: [UInt8] = []
    /// Bytes of the message taken so far, when it is decoded as it arrives.
    private var received = 0
    private var messages = 0

    init(limit: Int) {
        self.limit = limit
    }

    /// Takes the bytes of one DATA frame.
    mutating func append(_ buffer: ByteBuffer) throws(SequencerError) {
        var buffer = buffer
        while buffer.readableBytes > 0 {
            if let expected, commit != nil {
                let n = min(expected - received, buffer.readableBytes)
                var failure: (any Error)?
                buffer.readWithUnsafeReadableBytes { bytes in
                    do { try commit!.append(UnsafeRawBufferPointer(rebasing: bytes.prefix(n))) } catch { failure = error }
                    return n
                }
                if let failure { throw SequencerError(.invalidArgument, "malformed CommitRequest: \(failure)") }
                received += n
                if received == expected { self.expected = nil }
            } else if let expected {
                let n = min(expected - message.count, buffer.readableBytes)
                buffer.readWithUnsafeReadableBytes { bytes in
                    message.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes.prefix(n)))
                    return n
                }
                if message.count == expected { self.expected = nil }
            } else {
                let n = min(5 - prefix.count, buffer.readableBytes)
                prefix += buffer.readBytes(length: n)!
                if prefix.count == 5 { try startMessage() }
            }
        }
    }

    private mutating func startMessage() throws(SequencerError) {
        let flag = prefix[0]
        let length = Int(prefix[1]) << 24 | Int(prefix[2]) << 16 | Int(prefix[3]) << 8 | Int(prefix[4])
        prefix.removeAll(keepingCapacity: true)
        guard flag == 0 else {
            if flag == 1 {
                throw SequencerError(.unimplemented, "compressed gRPC messages are not supported: send them uncompressed (grpc-encoding identity)")
            }
            throw SequencerError(.invalidArgument, "gRPC message prefix has flag byte \(flag); only 0 (uncompressed) is valid")
        }
        guard length <= limit else {
            throw SequencerError(.resourceExhausted, "request message of \(length) bytes exceeds the sequencer's limit of \(limit) bytes (twice max_batch_bytes plus 1 MiB)")
        }
        messages += 1
        guard messages == 1 else {
            throw SequencerError(.invalidArgument, "the request carries more than one message; this call takes exactly one")
        }
        if decodesCommit {
            commit = IncrementalDecoder(length: length, direct: (8, \.changeset))
        } else {
            message.reserveCapacity(length)
        }
        expected = length > 0 ? length : nil
    }

    /// The request message, once the client ended its side of the stream.
    func finish() throws(SequencerError) -> Request {
        if let expected {
            throw SequencerError(.invalidArgument, "the request ended inside its message: \(commit == nil ? message.count : received) of \(expected) bytes arrived")
        }
        guard prefix.isEmpty else {
            throw SequencerError(.invalidArgument, "the request ended inside a message prefix (\(prefix.count) of 5 bytes)")
        }
        guard messages == 1 else { throw SequencerError(.invalidArgument, "the request carries no message; this call takes exactly one") }
        guard let commit else { return .bytes(message) }
        do {
            return .commit(try commit.finish())
        } catch {
            throw SequencerError(.invalidArgument, "malformed CommitRequest: \(error)")
        }
    }
}
