import Foundation
import SyndClient
import SyndDB
import SyndProtocol
import Testing

/// `synd sequencer --log-level --log-format json`: one JSON object per line,
/// with the database, holder and epoch of each lease change and refusal.
@Suite struct SequencerLogTests {
    let dir = TemporaryDirectory()

    static func lines(_ path: String) -> [[String: Any]] {
        let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { line in
            (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
        }
    }

    @Test func jsonLinesSayWhoWasGrantedAndWhoWasRefused() async throws {
        let log = dir.path + "/sequencer.log"
        let sequencer = try SequencerProcess(
            directory: dir.path + "/seq", extraArguments: ["--log-level", "debug", "--log-format", "json"], errorLog: log)
        let name = uniqueName("logged")
        let url = sequencer.url
        let epoch = try await offPool { () -> UInt64 in
            let client = try SequencerClient(url: url)
            _ = try client.open(name, create: true)
            var acquire = AcquireLeaseRequest()
            acquire.database = name
            acquire.holder = "log-test"
            let lease = try client.acquireLease(acquire)
            var stale = onePageCommit(name, lease: lease, holder: "log-test", txn: Array("log-test-1".utf8), base: 7)
            #expect(throws: SequencerError.self) { try client.commit(stale) }
            stale.baseVersion = 0
            #expect(try client.commit(stale).version == 1)
            return lease.epoch
        }
        // Lines are written as they happen; give the process a moment to flush.
        var lines: [[String: Any]] = []
        for _ in 0..<50 {
            lines = Self.lines(log)
            if lines.contains(where: { ($0["message"] as? String) == "committed" }) { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        for line in lines {
            #expect(line["time"] is String && line["level"] is String && line["logger"] as? String == "synd.sequencer", "\(line)")
        }
        let granted = lines.first { ($0["message"] as? String) == "lease granted" && ($0["database"] as? String) == name }
        #expect(granted?["holder"] as? String == "log-test" && granted?["epoch"] as? String == "\(epoch)" && granted?["level"] as? String == "info",
                "\(lines)")
        let refused = lines.first { ($0["message"] as? String)?.hasPrefix("refused Commit") == true }
        #expect(refused?["reason"] as? String == "stale_base" && refused?["database"] as? String == name
                && refused?["txn"] as? String == Array("log-test-1".utf8).map { String(format: "%02x", $0) }.joined(), "\(lines)")
        let committed = lines.first { ($0["message"] as? String) == "committed" }
        #expect(committed?["version"] as? String == "1" && committed?["level"] as? String == "debug", "\(lines)")
    }

    /// The default level leaves out refusals and lease changes: a busy
    /// sequencer's log stays about what an operator must act on.
    @Test func theDefaultLevelLeavesOutRefusalsAndLeaseChanges() async throws {
        let log = dir.path + "/quiet.log"
        let sequencer = try SequencerProcess(directory: dir.path + "/quiet", errorLog: log)
        let name = uniqueName("quiet")
        let url = sequencer.url
        try await offPool {
            let db = try Database.open(name, sequencer: url)
            try db.execute("CREATE TABLE t(x)")
            try db.execute("INSERT INTO t VALUES (1)")
        }
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        #expect(!text.contains("lease granted") && !text.contains("committed"), "\(text)")
    }
}
