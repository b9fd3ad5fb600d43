import Foundation
import SyndClient
import SyndDB
import SyndProtocol
import Testing

/// `synd status` and `synd drop [--force]` against a real sequencer process.
@Suite struct StatusCommandTests {
    let dir = TemporaryDirectory()

    static func status(_ url: String, _ extra: [String] = []) throws -> [String: Any] {
        let run = try runSynd(["status", "--sequencer", url, "--json"] + extra)
        guard run.status == 0, let object = try JSONSerialization.jsonObject(with: Data(run.output.utf8)) as? [String: Any] else {
            throw TestFailure("synd status failed: \(run.output) \(run.error)")
        }
        return object
    }

    static func database(_ status: [String: Any], _ name: String) -> [String: Any]? {
        (status["databases"] as? [[String: Any]])?.first { $0["name"] as? String == name }
    }

    /// Every database with its head, oldest version, size, live lease and
    /// followers; one database on its own; a missing one is an error.
    @Test func statusShowsHeadsLeasesAndFollowers() async throws {
        let sequencer = try SequencerProcess(directory: dir.path + "/seq")
        let url = sequencer.url
        let (a, b) = (uniqueName("status-a"), uniqueName("status-b"))
        try await offPool {
            let writer = try Database.open(a, sequencer: url)
            try writer.execute("CREATE TABLE t(x)")
            for i in 1...5 { try writer.execute("INSERT INTO t VALUES (\(i))") }
            let head = writer.statistics.version
            _ = try SequencerClient(url: url).open(b, create: true)
            let follower = Follower(client: try SequencerClient(url: url), database: a, version: 0, heartbeatMs: 100, maxQueuedBytes: 1 << 20)
            follower.start()
            defer { follower.stop() }

            var status: [String: Any] = [:]
            for _ in 0..<100 {
                status = try Self.status(url)
                // Counted once it opened, caught up once it was sent the head.
                if let d = Self.database(status, a), d["follow_streams"] as? Int == 1, d["follower_lag_versions"] as? Int == 0 { break }
                usleep(50_000)
            }
            let shown = try #require(Self.database(status, a), "\(status)")
            #expect(shown["version"] as? Int == Int(head) && shown["oldest_version"] as? Int == 1)
            #expect((shown["size_bytes"] as? Int ?? 0) >= 8192 && shown["page_size"] as? Int == 4096)
            let lease = try #require(shown["lease"] as? [String: Any], "the writer's lease: \(shown)")
            #expect((lease["holder"] as? String)?.isEmpty == false && (lease["ms_left"] as? Int ?? 0) > 0)
            #expect(shown["follow_streams"] as? Int == 1 && shown["follower_lag_versions"] as? Int == 0)
            let empty = try #require(Self.database(status, b))
            #expect(empty["version"] as? Int == 0 && empty["lease"] == nil)
            #expect((status["store_bytes"] as? Int ?? 0) > 0 && (status["connections"] as? Int ?? 0) >= 1)

            // One database, as a table.
            let one = try runSynd(["status", "--sequencer", url, "--db", b])
            #expect(one.status == 0 && one.output.contains("DATABASE") && one.output.contains(b) && !one.output.contains(a), "\(one.output)")
            let missing = try runSynd(["status", "--sequencer", url, "--db", a + "-missing"])
            #expect(missing.status != 0 && (missing.output + missing.error).contains("does not exist"), "\(missing.output) \(missing.error)")
            withExtendedLifetime(writer) {}
        }
    }

    /// A database whose writer is live is dropped only with --force; that
    /// writer's next commit then fails and does not bring it back.
    @Test func dropIsRefusedWhileAWriterIsLiveUnlessForced() async throws {
        let sequencer = try SequencerProcess(directory: dir.path + "/drop")
        let url = sequencer.url
        let name = uniqueName("forced")
        try await offPool {
            let writer = try Database.open(name, sequencer: url)
            try writer.execute("CREATE TABLE t(x)")
            try writer.execute("INSERT INTO t VALUES (1)")

            let refused = try runSynd(["drop", "--sequencer", url, name])
            #expect(refused.status != 0 && (refused.output + refused.error).contains("--force"), "\(refused.output) \(refused.error)")
            #expect(Self.database(try Self.status(url), name) != nil)

            let forced = try runSynd(["drop", "--sequencer", url, "--force", name])
            #expect(forced.status == 0 && forced.output.contains("dropped '\(name)'"), "\(forced.output) \(forced.error)")
            #expect(Self.database(try Self.status(url), name) == nil)

            #expect(throws: (any Error).self) { try writer.execute("INSERT INTO t VALUES (2)") }
            #expect(Self.database(try Self.status(url), name) == nil)
        }
    }
}
