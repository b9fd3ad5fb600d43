/// The answer to one HTTP/2 request: headers and trailers together, and the body.
public struct HTTP2Response: Sendable {
    public var headers: [(name: String, value: String)] = []
    public var body: [UInt8] = []

    package init() {}

    public func header(_ name: String) -> String? {
        headers.last(where: { $0.name == name })?.value
    }

    /// The HTTP `:status`.
    public var status: Int? { header(":status").flatMap { Int($0) } }
}
