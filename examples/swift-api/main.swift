// A Swift program using SyndDB: open a database in a sequencer, write in a
// transaction, read it back. Run it with
//
//     swift run synd sequencer --data /tmp/synd --port 8433 &
//     swift run swift-api-example http://127.0.0.1:8433
import SyndDB
import SyndSQLite
#if canImport(Glibc)
import Glibc
#endif

let url = CommandLine.arguments.dropFirst().first ?? "http://127.0.0.1:8433"
do {
    let db = try Database.open("examples/inventory", sequencer: url)
    try db.execute("CREATE TABLE IF NOT EXISTS items(sku TEXT PRIMARY KEY, quantity INTEGER NOT NULL)")

    // One transaction = one atomic, durable commit to the sequencer.
    try db.transaction {
        let upsert = try db.prepare(
            "INSERT INTO items(sku, quantity) VALUES (?, ?) ON CONFLICT(sku) DO UPDATE SET quantity = quantity + excluded.quantity")
        try upsert.run(["apple", 3])
        try upsert.run(["pear", 5])
    }

    for row in try db.query("SELECT sku, quantity FROM items ORDER BY sku") {
        print("\(row[0])\t\(row[1])")
    }
    let stats = db.statistics
    print("database version \(stats.version), \(stats.commits) commit(s) from this connection")
} catch let error as SQLiteError {
    // SQLite's code and message, with SyndDB's detail (e.g. which writer holds the lease).
    print("error: \(error)")
    exit(1)
}
