/// Where a server-streaming call sends its messages: the HTTP/2 stream of the
/// call on the server, something simpler in tests and fuzzing.
public protocol SequencerResponseStream: Sendable {
    /// Sends one encoded response message. Returns once the transport took it
    /// (so a slow client slows the sender down); throws once the client is gone.
    func send(_ message: [UInt8]) async throws

    /// Sends several messages in order, as one write where the transport can.
    func send(all messages: [[UInt8]]) async throws

    /// Returns once the client left: it reset the stream or its connection
    /// closed. Also returns when the calling task is cancelled.
    func clientLeft() async
}

extension SequencerResponseStream {
    public func send(all messages: [[UInt8]]) async throws {
        for message in messages { try await send(message) }
    }
}
