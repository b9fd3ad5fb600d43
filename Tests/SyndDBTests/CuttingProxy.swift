import Foundation
import Synchronization

/// A TCP proxy that can lose a response: once armed, the next bytes the
/// sequencer sends on a connection are swallowed and the connection is cut a
/// moment later, after the sequencer has had time to apply the request. It can
/// also cut every connection at once, both sides (`cutAll`).
final class CuttingProxy: Sendable {
    let port: Int
    private let upstreamPort: Int
    private let listener: Int32
    private let armed = Mutex(false)
    private let cuts = Mutex(0)
    /// Sockets not yet closed; an fd leaves the set before it is closed, so
    /// `cutAll` never touches a number the process reused.
    private let open = Mutex(Set<Int32>())

    init(upstreamPort: Int) throws {
        self.upstreamPort = upstreamPort
        (listener, port) = try LoopbackSocket.listen()
        Thread.detachNewThread { [self] in acceptLoop() }
    }

    deinit { shutdown(listener, Int32(SHUT_RDWR)); close(listener) }

    var url: String { "http://127.0.0.1:\(port)" }

    /// Loses the next response on whichever connection gets one.
    func arm() { armed.withLock { $0 = true } }
    var cutCount: Int { cuts.withLock { $0 } }

    /// Cuts every proxied connection now, both sides, as a failing network or
    /// proxy does: the sequencer and the client both see their connection close.
    func cutAll() {
        open.withLock { fds in for fd in fds { shutdown(fd, Int32(SHUT_RDWR)) } }
    }

    private func acceptLoop() {
        while true {
            let client = accept(listener, nil, nil)
            if client < 0 { return }
            guard let upstream = LoopbackSocket.connect(to: upstreamPort) else { close(client); continue }
            open.withLock { $0.formUnion([client, upstream]) }
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
        open.withLock { _ = $0.remove(source) }
        close(source)
    }
}
