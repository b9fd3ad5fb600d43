/// A failure below gRPC: connecting, TLS, socket I/O, HTTP/2 framing, deadline.
public struct TransportError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable {
        case badURL
        case connect
        case tls
        case io
        case deadline
        case http2
    }

    public var kind: Kind
    public var message: String
    /// True when the request may have reached the server before the failure,
    /// so its outcome is unknown.
    public var requestMayHaveBeenSent: Bool

    public init(_ kind: Kind, _ message: String, requestMayHaveBeenSent: Bool = false) {
        self.kind = kind
        self.message = message
        self.requestMayHaveBeenSent = requestMayHaveBeenSent
    }

    public var description: String { message }
}
