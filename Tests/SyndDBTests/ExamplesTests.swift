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
}
