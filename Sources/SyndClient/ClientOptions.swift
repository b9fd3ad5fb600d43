/// Deadlines and retry policy of a `SequencerClient`.
public struct ClientOptions: Sendable {
    /// Deadline of one request, connection set-up included.
    public var requestTimeout: Duration = .seconds(5)
    /// Attempts for a request that is safe to retry (reads, lease calls, and a
    /// commit through its transaction id).
    public var maxAttempts = 5
    /// First backoff; doubles per attempt up to `maxBackoff`, with jitter.
    public var initialBackoff: Duration = .milliseconds(20)
    public var maxBackoff: Duration = .seconds(1)
    /// PEM file of the CA to trust for https sequencers (default: the system store).
    public var tlsCAFile: String?

    public init() {}
}
