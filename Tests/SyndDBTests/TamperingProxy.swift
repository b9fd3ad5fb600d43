import Foundation
import Synchronization

/// A TCP proxy that rewrites what the sequencer sends: every occurrence of
/// `marker` becomes `replacement` (same length), as a hostile network or a
/// man in the middle would. h2c carries page images as they are, so a marker
/// written into a row reaches the client inside a page.
final class TamperingProxy: Sendable {
    let port: Int
    private let upstreamPort: Int
    private let listener: Int32
    private let marker: [UInt8]
    private let replacement: [UInt8]
    private let rewrites = Mutex(0)

    init(upstreamPort: Int, marker: String, replacement: String) throws {
        precondition(marker.utf8.count == replacement.utf8.count)
        self.upstreamPort = upstreamPort
        self.marker = Array(marker.utf8)
        self.replacement = Array(replacement.utf8)
        (listener, port) = try LoopbackSocket.listen()
        Thread.detachNewThread { [self] in acceptLoop() }
    }

    deinit { shutdown(listener, Int32(SHUT_RDWR)); close(listener) }

    var url: String { "http://127.0.0.1:\(port)" }
    /// Markers rewritten so far.
    var rewritten: Int { rewrites.withLock { $0 } }

    private func acceptLoop() {
        while true {
            let client = accept(listener, nil, nil)
            if client < 0 { return }
            guard let upstream = LoopbackSocket.connect(to: upstreamPort) else { close(client); continue }
            Thread.detachNewThread { [self] in pump(from: client, to: upstream, rewriting: false) }
            Thread.detachNewThread { [self] in pump(from: upstream, to: client, rewriting: true) }
        }
    }

    private func pump(from source: Int32, to target: Int32, rewriting: Bool) {
        var buffer = [UInt8](repeating: 0, count: 65536)
        var pending: [UInt8] = []
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(source, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            pending += buffer[0..<n]
            var out = pending
            var keep = 0
            if rewriting {
                var i = 0
                while i + marker.count <= out.count {
                    if out[i] == marker[0], Array(out[i..<(i + marker.count)]) == marker {
                        out.replaceSubrange(i..<(i + marker.count), with: replacement)
                        rewrites.withLock { $0 += 1 }
                        i += marker.count
                    } else {
                        i += 1
                    }
                }
                // A tail that may be the start of a marker waits for the next bytes.
                for k in stride(from: min(marker.count - 1, out.count), to: 0, by: -1)
                where Array(out.suffix(k)) == Array(marker.prefix(k)) {
                    keep = k
                    break
                }
            }
            pending = Array(out.suffix(keep))
            let send = Array(out.dropLast(keep))
            var sent = 0
            while sent < send.count {
                let m = send.withUnsafeBytes { Foundation.send(target, $0.baseAddress! + sent, send.count - sent, Int32(MSG_NOSIGNAL)) }
                if m <= 0 { break }
                sent += m
            }
        }
        shutdown(target, Int32(SHUT_RDWR))
        close(source)
    }
}
