import Synchronization

/// A one-way signal: closed once, awaited by any number of tasks, and able to
/// run callbacks at the moment it closes. A call's stream uses one to say its
/// client left; the server uses one to say it stopped.
final class Latch: Sendable {
    private struct State: ~Copyable {
        var isClosed = false
        var nextID: UInt64 = 0
        var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
        var callbacks: [@Sendable () -> Void] = []
    }
    private let state = Mutex(State())

    init() {}

    var isClosed: Bool { state.withLock { $0.isClosed } }

    /// Closes the latch: wakes every waiter and runs every callback (once).
    func close() {
        let (waiters, callbacks) = state.withLock { s -> ([CheckedContinuation<Void, Never>], [@Sendable () -> Void]) in
            guard !s.isClosed else { return ([], []) }
            s.isClosed = true
            defer { s.waiters = [:]; s.callbacks = [] }
            return (Array(s.waiters.values), s.callbacks)
        }
        for waiter in waiters { waiter.resume() }
        for callback in callbacks { callback() }
    }

    /// Runs `callback` when the latch closes, or now if it is closed.
    func whenClosed(_ callback: @escaping @Sendable () -> Void) {
        let now = state.withLock { s -> Bool in
            if s.isClosed { return true }
            s.callbacks.append(callback)
            return false
        }
        if now { callback() }
    }

    /// Returns once the latch is closed, or when the task is cancelled.
    func wait() async {
        let id = state.withLock { s -> UInt64 in
            s.nextID += 1
            return s.nextID
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let now = state.withLock { s -> Bool in
                    if s.isClosed || Task.isCancelled { return true }
                    s.waiters[id] = c
                    return false
                }
                if now { c.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { $0.waiters.removeValue(forKey: id) }
            waiter?.resume()
        }
    }
}
