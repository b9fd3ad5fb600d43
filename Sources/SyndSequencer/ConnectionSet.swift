import NIOCore
import Synchronization

/// The open connections of a server, so that `stop` can ask them to wind
/// down and then close them.
final class ConnectionSet: Sendable {
    private let channels = Mutex<[ObjectIdentifier: any Channel]>([:])
    private let count = Atomic<Int>(0)

    /// Connections open now or being set up (see `reserve`).
    private let open = Atomic<Int>(0)

    /// Connections accepted since the server started.
    var accepted: Int { count.load(ordering: .relaxed) }

    /// Takes a place for a new connection; false (and none taken) if `limit` are open.
    func reserve(limit: Int) -> Bool {
        if open.add(1, ordering: .relaxed).newValue <= limit { return true }
        open.subtract(1, ordering: .relaxed)
        return false
    }

    /// Gives back a place taken by `reserve` (the connection closed).
    func release() { open.subtract(1, ordering: .relaxed) }

    /// Keeps `channel` until it closes.
    func insert(_ channel: any Channel) {
        let id = ObjectIdentifier(channel)
        count.add(1, ordering: .relaxed)
        channels.withLock { $0[id] = channel }
        channel.closeFuture.whenComplete { _ in self.channels.withLock { _ = $0.removeValue(forKey: id) } }
    }

    var all: [any Channel] { channels.withLock { Array($0.values) } }
}
