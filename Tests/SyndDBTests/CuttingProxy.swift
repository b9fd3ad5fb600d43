import Foundation
import Synchronization

/// A TCP proxy that can lose a response: once armed, the next bytes the
/// sequencer sends on a connection are swallowed and the connection is cut a
/// moment later, after the sequencer has had time to apply the request.
final class CuttingProxy: Sendable {
    let port: Int
    private let upstreamPort: Int
    private let listener: Int32
    private let armed = Mutex(false)
    private let cuts = Mutex(0)

    init(upstreamPort: Int) throws {
        self.upstreamPort = upstreamPort
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.listener = listener
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, len) == 0 && getsockname(listener, $0, &len) == 0 }
        }
        guard bound, listen(listener, 16) == 0 else { throw TestFailure("proxy cannot listen") }
        port = Int(UInt16(bigEndian: addr.sin_port))
        _ = self.listener
        Thread.detachNewThread { [self] in acceptLoop() }
    }

    deinit { shutdown(listener, Int32(SHUT_RDWR)); close(listener) }

    var url: String { "http://127.0.0.1:\(port)" }

    /// Loses the next response on whichever connection gets one.
    func arm() { armed.withLock { $0 = true } }
    var cutCount: Int { cuts.withLock { $0 } }

    private func acceptLoop() {
        while true {
            let client = accept(listener, nil, nil)
            if client < 0 { return }
            let upstream = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            addr.sin_port = UInt16(upstreamPort).bigEndian
            let ok = withUnsafePointer(to: &addr) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(upstream, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
            }
            guard ok else { close(client); close(upstream); continue }
            Thread.detachNewThread { [self] in pump(from: client, to: upstream, cutting: false) }
            Thread.detachNewThread { [self] in pump(from: upstream, to: client, cutting: true) }
        }
    }

    private func pump(from source: Int32, to target: Int32, cutting: Bool) {
        var buffer = [UInt8](repeating: 0, count: 65536)
        var swallowing = false
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(source, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            if cutting && !swallowing && armed.withLock({ a in defer { a = false }; return a }) {
                swallowing = true
                cuts.withLock { $0 += 1 }
                let (s, t) = (source, target)
                Thread.detachNewThread {
                    usleep(300_000)
                    shutdown(s, Int32(SHUT_RDWR))
                    shutdown(t, Int32(SHUT_RDWR))
                }
            }
            if swallowing { continue }
            var sent = 0
            while sent < n {
                let m = buffer.withUnsafeBytes { send(target, $0.baseAddress! + sent, n - sent, Int32(MSG_NOSIGNAL)) }
                if m <= 0 { break }
                sent += m
            }
        }
        shutdown(target, Int32(SHUT_RDWR))
        close(source)
    }
}
