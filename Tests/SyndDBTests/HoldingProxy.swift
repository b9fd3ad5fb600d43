import Foundation
import Synchronization

/// A TCP proxy that can hold requests: while holding, bytes from clients are
/// kept instead of forwarded (the client sees a sequencer that does not
/// answer). `deliverFirstHeld` then forwards what the first held connection
/// sent, late, as a delayed network would; `dropHeld` drops the others
/// (their connections close).
final class HoldingProxy: Sendable {
    let port: Int
    private let upstreamPort: Int
    private let listener: Int32
    private struct State {
        var holding = false
        var nextID = 0
        var heldOrder: [Int] = []
        var deliver: Int?
        var dropping = false
        var keep: Int?
        /// Bytes the sequencer sent back on the delivered connection.
        var answeredAfterDelivery = 0
    }
    private let state = Mutex(State())

    init(upstreamPort: Int) throws {
        self.upstreamPort = upstreamPort
        (listener, port) = try LoopbackSocket.listen()
        Thread.detachNewThread { [self] in acceptLoop() }
    }

    deinit { shutdown(listener, Int32(SHUT_RDWR)); close(listener) }

    var url: String { "http://127.0.0.1:\(port)" }

    func hold() { state.withLock { $0.holding = true } }

    /// Forwards the first held connection's bytes; the others stay held.
    func deliverFirstHeld() {
        state.withLock { s in s.deliver = s.heldOrder.first }
    }

    /// Whether the sequencer answered what `deliverFirstHeld` forwarded.
    var deliveredWasAnswered: Bool { state.withLock { $0.answeredAfterDelivery > 0 } }

    /// Drops every connection still held (but the first, with `keepingFirst`);
    /// new connections pass again.
    func dropHeld(keepingFirst: Bool = false) {
        state.withLock { s in
            s.holding = false
            s.dropping = true
            if keepingFirst { s.keep = s.heldOrder.first }
        }
    }

    private func acceptLoop() {
        while true {
            let client = accept(listener, nil, nil)
            if client < 0 { return }
            guard let upstream = LoopbackSocket.connect(to: upstreamPort) else { close(client); continue }
            let id = state.withLock { s in defer { s.nextID += 1 }; return s.nextID }
            Thread.detachNewThread { [self] in requests(id: id, from: client, to: upstream) }
            Thread.detachNewThread { [self] in answers(id: id, from: upstream, to: client) }
        }
    }

    private static func sendAll(_ fd: Int32, _ bytes: [UInt8]) {
        var sent = 0
        while sent < bytes.count {
            let m = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + sent, bytes.count - sent, Int32(MSG_NOSIGNAL)) }
            if m <= 0 { return }
            sent += m
        }
    }

    private func requests(id: Int, from client: Int32, to upstream: Int32) {
        var buffer = [UInt8](repeating: 0, count: 65536)
        var held: [UInt8] = []
        var clientClosed = false
        defer {
            shutdown(upstream, Int32(SHUT_RDWR))
            close(client)
        }
        while true {
            let s = state.withLock { $0 }
            if !held.isEmpty && s.deliver == id {
                Self.sendAll(upstream, held)
                held = []
                // Give the sequencer time to serve what arrived late (a
                // PostgreSQL-backed one answers after PostgreSQL's round trips).
                if clientClosed { usleep(3_000_000); return }
            } else if !held.isEmpty && s.dropping && s.keep != id {
                return
            }
            if clientClosed {
                if held.isEmpty { return }
                usleep(10_000)
                continue
            }
            var p = pollfd(fd: client, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 20) > 0 else { continue }
            let n = buffer.withUnsafeMutableBytes { recv(client, $0.baseAddress, $0.count, 0) }
            if n <= 0 {
                clientClosed = true
                continue
            }
            let holding = state.withLock { st -> Bool in
                if st.holding && held.isEmpty && st.deliver != id { st.heldOrder.append(id) }
                return st.holding && st.deliver != id
            }
            if holding || !held.isEmpty {
                held += buffer[0..<n]
            } else {
                Self.sendAll(upstream, Array(buffer[0..<n]))
            }
        }
    }

    private func answers(id: Int, from upstream: Int32, to client: Int32) {
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(upstream, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            state.withLock { s in if s.deliver == id { s.answeredAfterDelivery += n } }
            Self.sendAll(client, Array(buffer[0..<n]))
        }
        shutdown(client, Int32(SHUT_RDWR))
        close(upstream)
    }
}
