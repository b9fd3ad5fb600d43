import Foundation
import Synchronization
import SyndDB

/// One writer thread per database, each committing transaction `i` (1, 2, ...)
/// in a loop until stopped, for tests that kill the sequencer under them: it
/// records which commits were acknowledged and which failed or are unknown.
final class CommitLoops: Sendable {
    struct Outcome {
        var acked: [Int64] = []
        var uncertain: [Int64] = []
        var errors: [String] = []
        var opened = false
    }

    let outcomes: Mutex<[Outcome]>
    private let stopped = Atomic(false)
    /// Writers not yet finished.
    private let running = Atomic(0)

    /// Starts the writers on databases `names` at `url`, and waits until each has opened its database.
    init(names: [String], url: String, transaction: @escaping @Sendable (Int64) -> String) {
        outcomes = Mutex([Outcome](repeating: Outcome(), count: names.count))
        running.store(names.count, ordering: .sequentiallyConsistent)
        for (index, name) in names.enumerated() {
            Thread { [self] in
                run(index, name, url: url, transaction: transaction)
                running.subtract(1, ordering: .sequentiallyConsistent)
            }.start()
        }
        for _ in 0..<1000 where !outcomes.withLock({ $0.allSatisfy(\.opened) }) { usleep(10_000) }
    }

    private func run(_ index: Int, _ name: String, url: String, transaction: @Sendable (Int64) -> String) {
        var options = DatabaseOptions()
        options.timeoutMs = 1000
        guard let db = try? Database.open(name, sequencer: url, options: options) else {
            outcomes.withLock { $0[index].errors.append("cannot open"); $0[index].opened = true }
            return
        }
        outcomes.withLock { $0[index].opened = true }
        var i: Int64 = 0
        while !stopped.load(ordering: .relaxed) {
            i += 1
            do {
                try db.execute(transaction(i))
                outcomes.withLock { $0[index].acked.append(i) }
            } catch {
                if !db.connection.isAutocommit { try? db.execute("ROLLBACK") }
                outcomes.withLock { $0[index].uncertain.append(i); $0[index].errors.append("\(error)") }
                usleep(20_000)
            }
        }
    }

    /// Acknowledged commits so far, per database.
    var acked: [Int] { outcomes.withLock { $0.map(\.acked.count) } }

    /// Stops the writers and waits for them.
    func stop() {
        stopped.store(true, ordering: .relaxed)
        while running.load(ordering: .sequentiallyConsistent) > 0 { usleep(10_000) }
    }
}
