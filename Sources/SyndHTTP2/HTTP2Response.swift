/// The answer to one HTTP/2 request: headers and trailers together, and the body.
public struct HTTP2Response: Sendable {
    public var headers: [(name: String, value: String)] = []
    public var body: [UInt8] = []

    package init() {}

    public func header(_ name: String) -> String? {
        headers.last(where: { $0.name == name })?.value
    }

    /// Appends DATA to the body. When it starts with a gRPC message's prefix,
    /// room for the whole announced message (up to 64 MiB) is made at once, so
    /// a large answer is not grown and copied step by step.
    public mutating func appendBody(_ data: UnsafeRawBufferPointer) {
        if body.isEmpty, data.count >= 5, data[0] == 0 {
            let announced = Int(data[1]) << 24 | Int(data[2]) << 16 | Int(data[3]) << 8 | Int(data[4])
            body.reserveCapacity(5 + min(announced, 64 << 20))
        }
        body.append(contentsOf: data)
    }

    /// The HTTP `:status`.
    public var status: Int? { header(":status").flatMap { Int($0) } }
}
