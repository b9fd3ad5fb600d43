import Foundation
import Synchronization
import SyndDB
import Testing

/// Lease hand-overs as fast as two processes can take turns. A load test:
/// `scripts/test.sh` runs it apart from the timing-sensitive suites (it keeps
/// both cores busy for seconds).
@Suite struct HandOverStormTests {
    /// Two processes taking turns as fast as they can: a thousand hand-overs
    /// in a few seconds. Every turn resets HTTP/2 streams (the previous
    /// holder's HoldLease call, AcquireLease waits), far more than the HTTP/2
    /// server's default limit (200 per 30 s), which closed a writer's
    /// connection with its calls in flight (REFUSED_STREAM; `synd bench
    /// --workloads writers` failed 3 runs in 3).
    @Test func twoProcessesTakingTurnsFastLoseNoCall() async throws {
        try await withEmbeddedSequencer { server in
            let name = uniqueName("turns")
            let setup = try Database.open(name, sequencer: server.url)
            try setup.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, who TEXT)")
            let uri = "file:\(name)?vfs=synddb&sequencer=\(server.url)"
            let turns = 700
            let results = Mutex<[(status: Int32, output: String)]>([])
            let writers = ["a", "b"].map { who in
                Thread {
                    let r = (try? ManyWritersTests.python("""
                        import sqlite3, sys
                        c = sqlite3.connect(":memory:"); c.enable_load_extension(True); c.load_extension(sys.argv[1]); c.close()
                        db = sqlite3.connect(sys.argv[2], uri=True, isolation_level=None, timeout=30)
                        for i in range(\(turns)):
                            db.execute("BEGIN IMMEDIATE")
                            db.execute("INSERT INTO t(who) VALUES ('\(who)')")
                            db.execute("COMMIT")
                        print("done")
                        """, uri)) ?? (-1, "python3 did not start")
                    results.withLock { $0.append(r) }
                }
            }
            for w in writers { w.start() }
            while writers.contains(where: { !$0.isFinished }) { usleep(20_000) }
            let finished = results.withLock { $0 }
            #expect(finished.count == 2)
            for r in finished { #expect(r.status == 0 && r.output.contains("done"), "\(r.output.suffix(600))") }
            #expect(try setup.scalar("SELECT count(*) FROM t") == .integer(Int64(2 * turns)))
        }
    }
}
