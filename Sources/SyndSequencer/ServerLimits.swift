/// What one sequencer lets its clients take, so that a slow or hostile
/// client cannot exhaust its memory, threads or file descriptors. Each
/// refusal is a clear status or a closed connection, never a stall.
///
/// Also bounded elsewhere: a request's size (twice the largest batch plus
/// 1 MiB: RESOURCE_EXHAUSTED), a batch (`--max-batch-mb`), pages per read
/// (4096), streams per connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS,
/// 1024), header lists (16 KiB), and what a stream holds for a client that
/// does not read (HTTP/2 flow control: the next message waits for the last).
public struct ServerLimits: Sendable {
    /// Connections open at once; more are closed as soon as accepted.
    public var maxConnections = 4096
    /// A connection must send the HTTP/2 preface (24 bytes; through TLS, as
    /// many bytes of its handshake) within this, or it is closed.
    public var handshakeTimeout = Duration.seconds(10)

    public init() {}
}
