import Dispatch
import Synchronization
import SyndProtocol

/// Runs blocking store calls off the event loops and off Swift's cooperative
/// pool, on threads of their own.
///
/// A store call may block: for its fsync, for the store lock while a commit
/// holds it, or for PostgreSQL's answer. On an event loop that would stall
/// every connection of that loop; on the cooperative pool (one thread per
/// core) it would leave no thread for the calls that must never wait, nor for
/// the tasks that do a remote store's work. Only serial DispatchQueues are
/// overcommitting (each gets a thread even while the others are busy): a
/// custom concurrent queue shares the cooperative pool's few threads, so a
/// lane that runs calls side by side is several serial queues.
final class BlockingLane: Sendable {
    private let queues: [DispatchQueue]
    private let next = Atomic<Int>(0)

    /// `concurrent`: calls run side by side, up to 32 at once (for a store
    /// that serializes what it must itself and waits on the network for each call).
    init(label: String, concurrent: Bool = false) {
        queues = (0..<(concurrent ? 32 : 1)).map { DispatchQueue(label: "\(label).\($0)") }
    }

    /// Runs `body` on the lane, then `done` with its outcome (on the lane's thread).
    func run<T: Sendable>(
        _ body: @escaping @Sendable () throws(SequencerError) -> T,
        then done: @escaping @Sendable (Result<T, SequencerError>) -> Void
    ) {
        let queue = queues.count == 1 ? queues[0] : queues[next.add(1, ordering: .relaxed).oldValue % queues.count]
        queue.async {
            done(Result { () throws(SequencerError) -> T in try body() })
        }
    }

    func run<T: Sendable>(_ body: @escaping @Sendable () throws(SequencerError) -> T) async throws(SequencerError) -> T {
        let result: Result<T, SequencerError> = await withCheckedContinuation { continuation in
            run(body) { continuation.resume(returning: $0) }
        }
        return try result.get()
    }
}
