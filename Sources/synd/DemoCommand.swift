import ArgumentParser
import Dispatch
import Foundation
import SyndDB
import SyndSequencer
import SyndStorage

struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run a short workload and show the data surviving a reconnect.",
        discussion: "Without --sequencer, starts an embedded sequencer in a temporary folder.")

    @Option(help: "Sequencer URL, e.g. http://127.0.0.1:8433.")
    var sequencer: String?

    @Option(help: "Database name.")
    var database: String = "demo"

    func run() async throws {
        var embedded: SequencerServer?
        let url: String
        if let sequencer {
            url = sequencer
        } else {
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("synd-demo-\(getpid())").path
            embedded = try await SequencerServer.start(store: StoreConfiguration(directory: dir))
            url = embedded!.url
            print("started an embedded sequencer at \(url) (data: \(dir))")
        }
        let name = database
        let result: Result<Void, any Error> = await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(returning: Result { try Self.workload(name: name, url: url) })
            }
        }
        await embedded?.stop()
        if sequencer == nil {
            try? FileManager.default.removeItem(atPath: FileManager.default.temporaryDirectory.appendingPathComponent("synd-demo-\(getpid())").path)
        }
        try result.get()
    }

    static func workload(name: String, url: String) throws {
        do {
            let db = try Database.open(name, sequencer: url)
            try db.execute("CREATE TABLE IF NOT EXISTS accounts(id INTEGER PRIMARY KEY, owner TEXT NOT NULL, balance INTEGER NOT NULL)")
            let before = db.statistics
            let start = try db.scalar("SELECT count(*) FROM accounts")?.int64 ?? 0
            let insert = try db.prepare("INSERT INTO accounts(owner, balance) VALUES (?, ?)")
            for i in 0..<5 {
                try db.transaction {
                    for j in 0..<20 { try insert.run(["owner-\(start + Int64(i * 20 + j))", 100]) }
                }
            }
            try db.transaction {
                try db.query("UPDATE accounts SET balance = balance - 10 WHERE id = 1")
                try db.query("UPDATE accounts SET balance = balance + 10 WHERE id = 2")
            }
            let after = db.statistics
            print("wrote 6 transactions with \(after.requests - before.requests) requests to the sequencer; database '\(name)' is at version \(after.version)")
            // While it holds the writer lease, nobody else can have written: its cache is current.
            let w0 = db.statistics.requests
            _ = try db.scalar("SELECT max(balance) FROM accounts")
            print("a warm read transaction made \(db.statistics.requests - w0) requests")
        }
        // A new connection, the same data.
        let again = try Database.open(name, sequencer: url)
        let rows = try again.scalar("SELECT count(*) FROM accounts")?.int64 ?? 0
        let total = try again.scalar("SELECT sum(balance) FROM accounts")?.int64 ?? 0
        let check = try again.scalar("PRAGMA integrity_check")?.string ?? "?"
        print("after reconnecting: \(rows) accounts, total balance \(total), integrity_check: \(check)")
    }
}
