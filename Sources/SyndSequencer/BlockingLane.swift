import Dispatch
import SyndProtocol

/// Runs blocking store calls one after another on a thread of their own, off
/// the event loops and off Swift's cooperative pool.
///
/// A store call may block: for its SQLite transaction and fsync, or for the
/// store lock while a commit holds it. On an event loop that would stall every
/// connection of that loop; on the cooperative pool (one thread per core) it
/// would leave no thread for the calls that must never wait. A serial
/// DispatchQueue is overcommitting: it gets a thread of its own even while the
/// other threads are busy.
struct BlockingLane: Sendable {
    private let queue: DispatchQueue

    /// `concurrent`: calls run side by side (for a store that serializes
    /// what it must itself and waits on the network for each call).
    init(label: String, concurrent: Bool = false) {
        queue = concurrent ? DispatchQueue(label: label, attributes: .concurrent) : DispatchQueue(label: label)
    }

    /// Runs `body` on the lane, then `done` with its outcome (on the lane's thread).
    func run<T: Sendable>(
        _ body: @escaping @Sendable () throws(SequencerError) -> T,
        then done: @escaping @Sendable (Result<T, SequencerError>) -> Void
    ) {
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
