import NIOHPACK
import SyndProtocol

/// The HTTP/2 header blocks of a gRPC response.
enum GRPCResponseHeaders {
    /// Before the first message.
    static let ok: HPACKHeaders = [":status": "200", "content-type": "application/grpc", "grpc-accept-encoding": "identity"]

    /// After the last message of a call that succeeded.
    static let okTrailers: HPACKHeaders = ["grpc-status": "0"]

    /// The trailers of a failed call: only the status when the response
    /// headers went out already, else a trailers-only response (HTTP status,
    /// content type and gRPC status in one block).
    static func trailers(for error: SequencerError, afterHeaders: Bool, httpStatus: Int = 200) -> HPACKHeaders {
        var headers: HPACKHeaders = afterHeaders
            ? [:]
            : [":status": String(httpStatus), "content-type": "application/grpc", "grpc-accept-encoding": "identity"]
        headers.add(name: "grpc-status", value: String(error.code.rawValue))
        headers.add(name: "grpc-message", value: percentEncoded(error.message))
        return headers
    }

    /// gRPC's percent-encoding of grpc-message: UTF-8 bytes outside printable
    /// ASCII, and '%' itself, become %XX.
    static func percentEncoded(_ message: String) -> String {
        let utf8 = message.utf8
        guard utf8.contains(where: { $0 < 0x20 || $0 > 0x7E || $0 == 0x25 }) else { return message }
        let hex = Array("0123456789ABCDEF".utf8)
        var out = [UInt8]()
        out.reserveCapacity(utf8.count + 16)
        for byte in utf8 {
            if byte < 0x20 || byte > 0x7E || byte == 0x25 {
                out += [0x25, hex[Int(byte >> 4)], hex[Int(byte & 0xF)]]
            } else {
                out.append(byte)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
