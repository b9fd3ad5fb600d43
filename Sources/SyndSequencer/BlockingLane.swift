import Dispatch
import SyndProtocol

/// Runs blocking store calls one after another on a thread of their own,
/// off Swift's cooperative pool.
///
/// The pool has one thread per core (two here). A store call blocks it: a
/// commit for its SQLite transaction and fsync, anything else that needs the
/// store lock for as long as that commit holds it. Two such calls inline would
/// leave no thread for the calls that must never wait, such as another
/// database's lease renewal. A serial DispatchQueue is overcommitting: it gets
/// a thread of its own even while the pool's threads are busy.
struct BlockingLane: Sendable {
    private let queue: DispatchQueue

    init(label: String) {
        queue = DispatchQueue(label: label)
    }

    func run<T: Sendable>(_ body: @escaping @Sendable () throws(SequencerError) -> T) async throws(SequencerError) -> T {
        let result: Result<T, SequencerError> = await withCheckedContinuation { continuation in
            queue.async {
                continuation.resume(returning: Result { () throws(SequencerError) -> T in try body() })
            }
        }
        return try result.get()
    }
}
