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

extension SequencerError {
    /// A refusal the sequencer gives before it applies anything, so it proves a
    /// commit was not applied: lease and base-version fencing, bad input, size
    /// limits, unknown database. Every other status (UNAVAILABLE, UNKNOWN,
    /// INTERNAL, DEADLINE_EXCEEDED, ...) may come from a proxy or from a failure
    /// after the work began, and proves nothing.
    public var provesNotApplied: Bool {
        guard !isTransport else { return false }
        switch code {
        case .failedPrecondition, .aborted, .invalidArgument, .resourceExhausted, .notFound, .outOfRange:
            return true
        default:
            return false
        }
    }
}
