import Synchronization

/// The calls a server is running, so that `stop` can wait for them, cancel
/// the long ones, and shut the event loops down only once nothing will hop
/// back onto them.
final class CallRegistry: Sendable {
    /// Unary calls handed to the service whose reply has not come back yet.
    private let unary = Atomic<Int>(0)
    private let tasks = Mutex<(next: UInt64, running: [UInt64: Task<Void, Never>])>((0, [:]))

    func unaryBegan() { unary.wrappingAdd(1, ordering: .relaxed) }
    func unaryEnded() { unary.wrappingSubtract(1, ordering: .releasing) }

    /// Runs `body` as a task that `cancelAll` cancels.
    @discardableResult
    func start(_ body: @escaping @Sendable () async -> Void) -> Task<Void, Never> {
        tasks.withLock { s in
            let id = s.next
            s.next += 1
            // The task removes itself; the lock held here orders that after the insertion.
            let task = Task {
                await body()
                self.tasks.withLock { _ = $0.running.removeValue(forKey: id) }
            }
            s.running[id] = task
            return task
        }
    }

    func cancelAll() {
        for task in tasks.withLock({ Array($0.running.values) }) { task.cancel() }
    }

    var isIdle: Bool {
        unary.load(ordering: .acquiring) == 0 && tasks.withLock { $0.running.isEmpty }
    }
}
