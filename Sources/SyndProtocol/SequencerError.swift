/// A refusal or failure reported by the sequencer, or met on the way to it:
/// a gRPC status code and a message a person can act on.
public struct SequencerError: Error, Sendable, Equatable, CustomStringConvertible {
    public var code: GRPCStatusCode
    public var message: String
    /// The failure was in the transport (connect, I/O, deadline), not an answer.
    public var isTransport = false
    /// The request may have reached the sequencer before the transport failed.
    public var requestMayHaveBeenSent = false
    /// A commit whose outcome could not be learned.
    public var outcomeUnknown = false

    public init(_ code: GRPCStatusCode, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \(message)" }
}
