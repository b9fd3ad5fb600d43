import Foundation
import SyndProtocol
import SyndValidator

/// Runs a validator on a thread of its own, fed from the batch stream through
/// a bounded queue, so that receiving and decoding the next batches overlaps
/// with checking this one.
final class ValidationPipeline: @unchecked Sendable {
    // Safe: `queue`, `failure` and `seeded` are guarded by `lock`; the
    // validator is used only by the pipeline's thread until `finish()` joined it.
    let validator: Validator
    private let lock = NSCondition()
    private var queue: [Batch] = []
    private var queuedBytes = 0
    private var closed = false
    private var done = false
    private var failure: ValidationFailure?
    /// When the snapshot the validator started from was in place.
    private(set) var seeded: ContinuousClock.Instant?
    static let maxQueued = 512
    static let maxQueuedBytes = 64 << 20

    init(_ validator: Validator) {
        self.validator = validator
        let thread = Thread { [self] in run() }
        thread.name = "synd.validate"
        thread.start()
    }

    /// Queues a batch; false once validation failed (stop the stream).
    func submit(_ batch: Batch) -> Bool {
        let size = batch.pages.reduce(batch.changeset.count) { $0 + $1.data.count }
        lock.lock()
        defer { lock.unlock() }
        while failure == nil, !queue.isEmpty, queue.count >= Self.maxQueued || queuedBytes + size > Self.maxQueuedBytes { lock.wait() }
        guard failure == nil else { return false }
        queue.append(batch)
        queuedBytes += size
        lock.broadcast()
        return true
    }

    private func run() {
        let clock = ContinuousClock()
        while true {
            lock.lock()
            while queue.isEmpty, !closed { lock.wait() }
            if queue.isEmpty {
                done = true
                lock.broadcast()
                lock.unlock()
                return
            }
            let batch = queue.removeFirst()
            queuedBytes -= batch.pages.reduce(batch.changeset.count) { $0 + $1.data.count }
            lock.broadcast()
            lock.unlock()
            do throws(ValidationFailure) {
                try validator.process(batch)
                if batch.snapshotLast {
                    lock.lock()
                    seeded = clock.now
                    lock.unlock()
                }
            } catch {
                lock.lock()
                failure = error
                queue.removeAll()
                closed = true
                done = true
                lock.broadcast()
                lock.unlock()
                return
            }
        }
    }

    /// Waits for every queued batch and signature; the first failure, if any.
    func finish() -> ValidationFailure? {
        lock.lock()
        closed = true
        lock.broadcast()
        while !done { lock.wait() }
        let failure = self.failure
        lock.unlock()
        if let failure { return failure }
        do throws(ValidationFailure) {
            try validator.finish()
        } catch {
            return error
        }
        return nil
    }
}
