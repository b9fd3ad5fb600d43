import Foundation
import Testing

/// The README's main job and the examples, run as a user would.
@Suite struct ExamplesTests {
    @Test func demoRunsWithAnEmbeddedSequencer() async throws {
        let run = try await offPool { try runSynd(["demo"]) }
        #expect(run.status == 0, "\(run.error)")
        #expect(run.output.contains("after reconnecting: 100 accounts, total balance 10000, integrity_check: ok"))
        #expect(run.output.contains("wrote 6 transactions with 6 requests"))
        #expect(run.output.contains("a warm read transaction made 0 requests"))
    }

    @Test func swiftAPIExampleRunsTwiceAgainstASequencer() async throws {
        let dir = TemporaryDirectory()
        let path = dir.path
        try await offPool {
            let sequencer = try SequencerProcess(directory: path + "/seq")
            let example = Products.directory.appendingPathComponent("swift-api-example").path
            func run() throws -> String {
                let p = Process()
                p.executableURL = URL(fileURLWithPath: example)
                p.arguments = [sequencer.url]
                let out = Pipe()
                p.standardOutput = out
                try startProcess(p)
                let data = out.fileHandleForReading.readDataToEndOfFile()
                p.waitUntilExit()
                #expect(p.terminationStatus == 0)
                return String(decoding: data, as: UTF8.self)
            }
            #expect(try run().contains("apple\t3\npear\t5\n"))
            #expect(try run().contains("apple\t6\npear\t10\n"))
        }
    }

    /// examples/grdb: GRDB's DatabaseQueue on SyndDB. Migrations run once (a
    /// second run finds them applied), records insert and update in one
    /// transaction, a failed transaction leaves nothing, and every commit
    /// validates (page images agree with the changesets GRDB's writes made).
    @Test func grdbExampleRunsTwiceAndItsCommitsValidate() async throws {
        let dir = TemporaryDirectory()
        let path = dir.path
        try await offPool {
            let sequencer = try SequencerProcess(directory: path + "/seq")
            let name = uniqueName("grdb-library")
            let example = Products.directory.appendingPathComponent("grdb-example").path
            func run() throws -> String {
                let p = Process()
                p.executableURL = URL(fileURLWithPath: example)
                p.arguments = [sequencer.url, name]
                let out = Pipe(), err = Pipe()
                p.standardOutput = out
                p.standardError = err
                try startProcess(p)
                let data = out.fileHandleForReading.readDataToEndOfFile()
                let problem = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                p.waitUntilExit()
                #expect(p.terminationStatus == 0, "\(problem)")
                return String(decoding: data, as: UTF8.self)
            }
            let first = try run()
            #expect(first.contains("Dune\tFrank Herbert\t3\nSolaris\tStanisław Lem\t1\n"), "\(first)")
            #expect(first.contains("migrations: v1: books, v2: copies") && !first.contains("Ghost"), "\(first)")
            let second = try run()
            #expect(second.contains("Dune\tFrank Herbert\t3\nDune\tFrank Herbert\t3\nSolaris\tStanisław Lem\t1\nSolaris\tStanisław Lem\t1\n"), "\(second)")
            let check = try runSynd(["validate", "--sequencer", sequencer.url, "--db", name])
            #expect(check.status == 0 && check.output.hasPrefix("ok: "), "\(check.output) \(check.error)")
            let sql = try runSynd(["sql", "--sequencer", sequencer.url, "--read-only", name, "SELECT count(*) FROM grdb_migrations"])
            #expect(sql.output.trimmingCharacters(in: .whitespacesAndNewlines) == "2", "\(sql.output) \(sql.error)")
        }
    }
}
