import Foundation
import SyndDB
import SyndLedger
import SyndProtocol
import SyndStorage
import Testing

/// Snapshots: the sequencer seals one every --snapshot-every versions (or on
/// `synd snapshot`), a validator starts from the newest one past the
/// retention window and checks everything after it, and a snapshot whose pages
/// or seal were changed is refused.
@Suite struct SnapshotTests {
    let dir = TemporaryDirectory()

    static func snapshotFiles(_ data: String, _ name: String) -> [String] {
        let folder = data + "/snapshots/" + name.utf8.map { String(format: "%02x", $0) }.joined()
        return ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).filter { $0.hasSuffix(".snapshot") }.sorted()
            .map { folder + "/" + $0 }
    }

    @Test func aValidatorStartsFromASnapshotBeyondRetentionAndChecksWhatFollows() async throws {
        let data = dir.path + "/seq"
        let sequencer = try await offPool {
            try SequencerProcess(directory: data, extraArguments: ["--retain", "30", "--snapshot-every", "20", "--snapshots-kept", "2"])
        }
        let url = sequencer.url
        let name = uniqueName("snap")
        try await offPool {
            try LedgerTests.bankHistory(url, name, transactions: 90)
            // Big rows too: a snapshot of several parts' worth of overflow pages.
            let db = try Database.open(name, sequencer: url)
            try db.execute("CREATE TABLE blobs(id INTEGER PRIMARY KEY, b BLOB)")
            for i in 1...6 { try db.execute("INSERT INTO blobs VALUES (\(i), randomblob(300000))") }
            try db.execute("UPDATE accounts SET owner = 'after the snapshots' WHERE id = 2")
        }
        // Ten commits more; then the periodic snapshots, made in the background, settle:
        // none is due (the head is less than 20 past the newest) and the newest two are kept.
        var head = try await offPool { () -> UInt64 in
            let db = try Database.open(name, sequencer: url)
            for i in 1...10 { try db.execute("UPDATE accounts SET balance = balance + \(i) WHERE id = \(i)") }
            return db.statistics.version
        }
        var files: [String] = []
        var newest: UInt64 = 0
        for _ in 0..<300 {
            let now = Self.snapshotFiles(data, name)
            newest = now.compactMap { UInt64($0.split(separator: "/").last!.dropLast(".snapshot".count)) }.max() ?? 0
            if now == files, now.count == 2, head < newest + 20 { break }
            files = now
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(files.count == 2 && head < newest + 20, "\(files), head \(head)")
        #expect(newest >= 20 && newest <= head)
        if newest == head {
            // At least one batch after the snapshot to check (one commit cannot make another due).
            head = try await offPool { () -> UInt64 in
                let db = try Database.open(name, sequencer: url)
                try db.execute("UPDATE accounts SET balance = balance + 1 WHERE id = 1")
                return db.statistics.version
            }
        }
        // From the first batch: pruned, and the message says what to do.
        let plain = try await offPool { try runSynd(["validate", "--sequencer", url, "--db", name]) }
        #expect(plain.status != 0 && plain.output.contains("--from-snapshot"), "\(plain.output) \(plain.error)")
        // From the snapshot: passes, checking every batch after it.
        let (status, output, error) = try await offPool { try runSynd(["validate", "--sequencer", url, "--db", name, "--from-snapshot", "--stats"]) }
        #expect(status == 0, "\(output) \(error)")
        #expect(output.contains("ok: \(head - newest) \(head - newest == 1 ? "batch" : "batches") of '\(name)' verified after the snapshot at version \(newest) "), "\(output)")

        // An explicit snapshot at the head; a lying writer after it is caught at its version.
        let made = try await offPool { try runSynd(["snapshot", "--sequencer", url, name]) }
        #expect(made.status == 0 && made.output.contains("snapshot of '\(name)' at version"), "\(made.output) \(made.error)")
        let liarVersion = try await offPool { () -> UInt64 in
            var options = DatabaseOptions()
            options.captureChangesets = false
            let liar = try Database.open(name, sequencer: url, options: options)
            try liar.execute("UPDATE accounts SET owner = 'mallory' WHERE id = 3")
            return liar.statistics.version
        }
        let caught = try await offPool { try runSynd(["validate", "--sequencer", url, "--db", name, "--from-snapshot"]) }
        #expect(caught.status != 0 && caught.output.contains("FAILED at version \(liarVersion)") && caught.output.contains("mallory"),
                "\(caught.output) \(caught.error)")
    }

    @Test func aSnapshotWhosePagesOrSealWereChangedIsRefused() async throws {
        let data = dir.path + "/tamper"
        let sequencer = try await offPool { try SequencerProcess(directory: data) }
        let url = sequencer.url
        let name = uniqueName("forged")
        try await offPool {
            try LedgerTests.bankHistory(url, name, transactions: 20)
            #expect(try runSynd(["snapshot", "--sequencer", url, name]).status == 0)
        }
        let file = try #require(Self.snapshotFiles(data, name).first)
        let original = try Data(contentsOf: URL(fileURLWithPath: file))
        // A page byte (owner text lives in the pages), then a byte of the seal's signature.
        let pageOffset = try #require(original.range(of: Data("owner3".utf8))).lowerBound
        // The seal ends with its signature, then the two snapshot flags (6 bytes), then the 12-byte trailer.
        let signatureByte = original.count - 12 - 10
        for (offset, expected) in [(pageOffset, "pages_hash"), (signatureByte, "signature")] {
            var forged = original
            forged[offset] ^= 0x01
            try forged.write(to: URL(fileURLWithPath: file))
            let (status, output, error) = try await offPool { try runSynd(["validate", "--sequencer", url, "--db", name, "--from-snapshot"]) }
            #expect(status != 0 && output.contains(expected), "\(expected): \(output) \(error)")
        }
        try original.write(to: URL(fileURLWithPath: file))
        let honest = try await offPool { try runSynd(["validate", "--sequencer", url, "--db", name, "--from-snapshot"]) }
        #expect(honest.status == 0, "\(honest.output) \(honest.error)")
        // Dropping the database deletes its snapshots; a snapshot of the dropped (empty) database validates.
        #expect(try await offPool { try runSynd(["drop", "--sequencer", url, name]) }.status == 0)
        #expect(Self.snapshotFiles(data, name).isEmpty)
        let empty = try await offPool { () -> (Int32, Int32, String) in
            let made = try runSynd(["snapshot", "--sequencer", url, name])
            let checked = try runSynd(["validate", "--sequencer", url, "--db", name, "--from-snapshot"])
            return (made.status, checked.status, made.output + made.error + checked.output + checked.error)
        }
        #expect(empty.0 == 0 && empty.1 == 0, "\(empty.2)")
    }

    /// `synd validate --follow --from-snapshot` keeps up as a writer commits and
    /// stops, non-zero, at the first batch whose changeset leaves out a change.
    @Test func aFollowingValidatorStopsAtTheFirstLyingBatch() async throws {
        let data = dir.path + "/follow"
        let sequencer = try await offPool { try SequencerProcess(directory: data) }
        let url = sequencer.url
        let name = uniqueName("followed")
        try await offPool {
            try LedgerTests.bankHistory(url, name, transactions: 10)
            #expect(try runSynd(["snapshot", "--sequencer", url, name]).status == 0)
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Products.synd)
        process.arguments = ["validate", "--sequencer", url, "--db", name, "--from-snapshot", "--follow"]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = out
        try startProcess(process)
        let liarVersion = try await offPool { () -> UInt64 in
            let db = try Database.open(name, sequencer: url)
            for i in 1...40 { try db.execute("UPDATE accounts SET balance = balance + \(i) WHERE id = \(1 + i % 5)") }
            usleep(300_000)
            // Still following: nothing was wrong so far.
            #expect(process.isRunning)
            var options = DatabaseOptions()
            options.captureChangesets = false
            let liar = try Database.open(name, sequencer: url, options: options)
            try liar.execute("UPDATE accounts SET owner = 'mallory' WHERE id = 4")
            return liar.statistics.version
        }
        process.waitForExit(timeout: .seconds(30))
        // Ended (a zombie, or reaped): Foundation's isRunning may not know yet.
        let stat = (try? String(contentsOfFile: "/proc/\(process.processIdentifier)/stat", encoding: .utf8)) ?? ""
        let ended = stat.isEmpty || stat.split(separator: ")").last?.split(separator: " ").first.map { $0 == "Z" || $0 == "X" } == true
        let output = String(decoding: out.fileHandleForReading.availableData, as: UTF8.self)
        #expect(ended, "still following after the lying batch: \(output)")
        if ended {
            process.waitUntilExit()
            #expect(process.terminationStatus != 0)
        } else {
            process.terminate()
        }
        #expect(output.contains("FAILED at version \(liarVersion)") && output.contains("mallory"), "\(output)")
    }
}
