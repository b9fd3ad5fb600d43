import SyndProtocol

/// gRPC length-prefixed framing as the client parses a unary answer's body
/// (`GRPCFraming.unframe`), and the framing it sends (`GRPCFraming.frame`).
///
/// Promises: `unframe` returns or throws a `ProtocolError` with a message; what
/// it accepts is exactly one uncompressed frame whose message, framed again,
/// is the input; and `frame` then `unframe` gives the message back.
public enum FramingTarget {
    public static let name = "framing"

    public static func run(_ data: [UInt8]) {
        do {
            let message = try GRPCFraming.unframe(data)
            guard GRPCFraming.frame(message) == data else {
                violated(name, "unframe accepted \(data.count) bytes that are not one frame of its result")
            }
        } catch let error as ProtocolError {
            guard !error.description.isEmpty else { violated(name, "a ProtocolError without a message") }
        } catch {
            violated(name, "unframe threw \(type(of: error)), not a ProtocolError")
        }
        guard (try? GRPCFraming.unframe(GRPCFraming.frame(data))) == data else {
            violated(name, "frame then unframe did not give the \(data.count) bytes back")
        }
    }

    /// A few frames and near-frames.
    public static var seeds: [[UInt8]] {
        [
            GRPCFraming.frame([]),
            GRPCFraming.frame([0x08, 0x01]),
            GRPCFraming.frame(Array("synddb".utf8)),
            [1, 0, 0, 0, 2, 0x08, 0x01],  // compressed flag
            [0, 0, 0, 0, 9, 0x08],  // length past the end
            [0, 0, 0],  // short prefix
        ]
    }
}
