import Foundation
import SyndClient
import SyndDB
import SyndProtocol
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `synd sequencer --metrics-port`: Prometheus text at /metrics, scraped over
/// real HTTP from a real sequencer process after a known workload.
@Suite struct MetricsTests {
    let dir = TemporaryDirectory()

    /// One scrape: each sample by name, with its labels.
    struct Scrape {
        var samples: [(name: String, labels: [String: String], value: Double)] = []
        var text = ""

        init(_ text: String) {
            self.text = text
            for line in text.split(separator: "\n") where !line.hasPrefix("#") {
                guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
                let key = line[..<space]
                var labels: [String: String] = [:]
                var name = String(key)
                if let brace = key.firstIndex(of: "{") {
                    name = String(key[..<brace])
                    for pair in key[key.index(after: brace)..<key.index(before: key.endIndex)].split(separator: ",") {
                        let parts = pair.split(separator: "=", maxSplits: 1)
                        guard parts.count == 2 else { continue }
                        labels[String(parts[0])] = String(parts[1].dropFirst().dropLast())
                    }
                }
                samples.append((name, labels, value))
            }
        }

        /// The value of `name` with exactly these labels (nil: not there).
        func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
            samples.first { $0.name == name && $0.labels == labels }?.value
        }

        func all(_ name: String) -> [(labels: [String: String], value: Double)] {
            samples.filter { $0.name == name }.map { ($0.labels, $0.value) }
        }
    }

    /// GET over a plain TCP connection (HTTP/1.1, Connection: close): status and body.
    static func get(port: Int, path: String) throws -> (status: Int, body: String) {
        let fd = try ResourceLimitTests.connectTCP(port)
        defer { close(fd) }
        let request = Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".utf8)
        guard write(fd, request, request.count) == request.count else { throw TestFailure("write: \(errno)") }
        var response: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(fd, &chunk, chunk.count)
            if n <= 0 { break }
            response += chunk[0..<n]
        }
        let text = String(decoding: response, as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n") else { throw TestFailure("no HTTP response: \(text)") }
        let status = Int(text.split(separator: " ", maxSplits: 2).dropFirst().first ?? "") ?? 0
        return (status, String(text[split.upperBound...]))
    }

    static func metricsPort(_ sequencer: SequencerProcess) throws -> Int {
        guard let range = sequencer.announcement.range(of: "metrics http://127.0.0.1:"),
            let port = Int(sequencer.announcement[range.upperBound...].prefix(while: \.isNumber))
        else { throw TestFailure("no metrics URL in: \(sequencer.announcement)") }
        return port
    }

    /// Two writers through the VFS and a raw client whose commits are
    /// applied, retried and refused for each reason: every counter says
    /// exactly what happened, and each database's gauges its head.
    @Test func theCountersMatchTheWorkloadExactly() async throws {
        let sequencer = try SequencerProcess(directory: dir.path + "/seq", extraArguments: ["--metrics-port", "0"])
        let port = try Self.metricsPort(sequencer)
        let url = sequencer.url
        let (a, b, c) = (uniqueName("metrics-a"), uniqueName("metrics-b"), uniqueName("metrics-c"))

        let heads = try await offPool { () -> [String: UInt64] in
            var heads: [String: UInt64] = [:]
            for (name, rows) in [(a, 20), (b, 7)] {
                let db = try Database.open(name, sequencer: url)
                try db.execute("CREATE TABLE t(x)")
                for i in 1...rows { try db.execute("INSERT INTO t VALUES (\(i))") }
                heads[name] = db.statistics.version
            }
            return heads
        }
        #expect(heads[a] == 21 && heads[b] == 8)

        // Database c, by hand: one commit applied, its retry, then refusals.
        try await offPool {
            let client = try SequencerClient(url: url)
            _ = try client.open(c, create: true)
            var acquire = AcquireLeaseRequest()
            acquire.database = c
            acquire.holder = "metrics-test"
            let lease = try client.acquireLease(acquire)
            let good = onePageCommit(c, lease: lease, holder: "metrics-test", txn: Array("metrics-1".utf8))
            #expect(try client.commit(good).version == 1)
            #expect(try client.commit(good).duplicate)
            // One page read by hand (the VFS writers may have read more).
            var read = ReadPagesRequest()
            read.database = c
            read.version = 1
            read.pageNumbers = [1]
            #expect(try client.readPages(read).pages.count == 1)
            func refused(_ edit: (inout CommitRequest) -> Void) -> GRPCStatusCode? {
                var r = good
                r.txnID = (0..<16).map { _ in UInt8.random(in: 0...255) }
                edit(&r)
                do {
                    _ = try client.commit(r)
                    return nil
                } catch {
                    return error.code
                }
            }
            for _ in 0..<2 { #expect(refused { $0.baseVersion = 0 } == .aborted) }  // stale: c is at 1
            for _ in 0..<3 { #expect(refused { $0.pageSize = 3000 } == .invalidArgument) }
            #expect(refused { $0.leaseEpoch += 1; $0.baseVersion = 1 } == .failedPrecondition)
            #expect(refused { $0.database = c + "-missing" } == .notFound)
        }

        // A client connected while it is scraped.
        let (status, body) = try await offPool { () -> (Int, String) in
            let connected = try SequencerClient(url: url)
            _ = try connected.capabilities()
            return try withExtendedLifetime(connected) { try Self.get(port: port, path: "/metrics") }
        }
        #expect(status == 200)
        let scrape = Scrape(body)
        let commit = "Commit"
        let applied = Double(heads[a]! + heads[b]! + 1)
        #expect(scrape.value("synddb_commits_total") == applied, "\(body)")
        #expect(scrape.value("synddb_commit_duplicates_total") == 1)
        let refusals = scrape.all("synddb_refusals_total").filter { $0.labels["method"] == commit }
        #expect(Dictionary(uniqueKeysWithValues: refusals.map { ($0.labels["reason"]!, $0.value) })
            == ["stale_base": 2, "invalid": 3, "lease": 1, "not_found": 1], "\(refusals)")
        #expect(scrape.value("synddb_requests_total", ["method": commit]) == applied + 1 + 7)
        #expect(scrape.value("synddb_commit_duration_seconds_count") == applied + 1)
        #expect(scrape.value("synddb_batch_pages_count") == applied)
        #expect((scrape.value("synddb_batch_bytes_sum") ?? 0) >= 4096 * applied)
        for (name, head) in [(a, heads[a]!), (b, heads[b]!), (c, 1)] {
            #expect(scrape.value("synddb_database_version", ["database": name]) == Double(head), "\(name)")
            #expect((scrape.value("synddb_database_size_bytes", ["database": name]) ?? 0) >= 4096)
        }
        #expect((scrape.value("synddb_leases_granted_total") ?? 0) >= 3)
        #expect((scrape.value("synddb_connections") ?? 0) >= 1)
        #expect((scrape.value("synddb_store_size_bytes") ?? 0) > 0)
        #expect((scrape.value("synddb_pages_read_total") ?? 0) >= 1)
        #expect((scrape.value("synddb_requests_total", ["method": "ReadPages"]) ?? 0) >= 1)
        if !PostgresTest.storeForAllTests {
            // Group commit: at most one fsync per commit, at least one in all.
            let fsyncs = scrape.value("synddb_fsync_duration_seconds_count") ?? 0
            #expect(fsyncs >= 1 && fsyncs <= applied + 10, "\(fsyncs) fsyncs for \(applied) commits")
        }
        #expect(body.contains("# TYPE synddb_commits_total counter"))
        #expect(body.contains("# TYPE synddb_commit_duration_seconds histogram"))

        // Only /metrics is served.
        #expect(try await offPool { try Self.get(port: port, path: "/") }.status == 404)
    }

    /// A follow stream is counted per database, with its lag behind the head
    /// (0 once it was sent everything).
    @Test func followStreamsAndTheirLagAreShown() async throws {
        let sequencer = try SequencerProcess(directory: dir.path + "/follow", extraArguments: ["--metrics-port", "0"])
        let port = try Self.metricsPort(sequencer)
        let url = sequencer.url
        let name = uniqueName("metrics-follow")
        try await offPool {
            let db = try Database.open(name, sequencer: url)
            try db.execute("CREATE TABLE t(x)")
            try db.execute("INSERT INTO t VALUES (1)")
        }
        let follower = try await offPool { () -> Follower in
            let f = Follower(client: try SequencerClient(url: url), database: name, version: 0, heartbeatMs: 100, maxQueuedBytes: 1 << 20)
            f.start()
            return f
        }
        defer { follower.stop() }
        var scrape = Scrape("")
        for _ in 0..<100 {
            scrape = Scrape(try await offPool { try Self.get(port: port, path: "/metrics") }.body)
            if scrape.value("synddb_follow_streams", ["database": name]) == 1,
                scrape.value("synddb_follower_lag_versions", ["database": name]) == 0
            {
                break
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(scrape.value("synddb_follow_streams", ["database": name]) == 1, "\(scrape.text)")
        #expect(scrape.value("synddb_follower_lag_versions", ["database": name]) == 0)
    }
}
