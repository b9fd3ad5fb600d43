// GRDB on SyndDB: a DatabaseQueue whose database lives in a sequencer, with
// GRDB's migrations, records and transactions. Run it with
//
//     swift run synd sequencer --data /tmp/synd --port 8433 &
//     swift run grdb-example http://127.0.0.1:8433 examples/grdb-library
//     swift run synd validate --sequencer http://127.0.0.1:8433 --db examples/grdb-library
//
// What it needs from GRDB's configuration:
// - the `synddb` VFS registered (`Database.registerVFS()`) and the database
//   opened by its `file:` URI (`Database.uri(...)`); Debian's SQLite accepts
//   URI filenames without SQLITE_OPEN_URI;
// - a DatabaseQueue. DatabasePool needs WAL, which the VFS does not offer
//   (every commit is one batch on the sequencer, not a local WAL file);
// - journal_mode MEMORY (the rollback journal never needs to leave the
//   process: the sequencer applies a commit whole or not at all), set in
//   `prepareDatabase`;
// - a busy timeout (`configuration.busyMode`), as for any SQLite file that
//   other connections write to.
import GRDB
import SyndDB
#if canImport(Glibc)
import Glibc
#endif

struct Book: Codable, FetchableRecord, MutablePersistableRecord {
    var id: Int64?
    var title: String
    var author: String
    var copies: Int

    mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

let arguments = CommandLine.arguments.dropFirst()
let url = arguments.first ?? "http://127.0.0.1:8433"
let name = arguments.dropFirst().first ?? "examples/grdb-library"
do {
    SyndDB.Database.registerVFS()
    var configuration = Configuration()
    configuration.busyMode = .timeout(10)
    configuration.prepareDatabase { db in try db.execute(sql: "PRAGMA journal_mode=MEMORY") }
    let queue = try DatabaseQueue(path: SyndDB.Database.uri(name, sequencer: url), configuration: configuration)

    var migrator = DatabaseMigrator()
    migrator.registerMigration("v1: books") { db in
        try db.create(table: "book") { t in
            t.autoIncrementedPrimaryKey("id")
            t.column("title", .text).notNull()
            t.column("author", .text).notNull()
        }
    }
    migrator.registerMigration("v2: copies") { db in
        try db.alter(table: "book") { t in t.add(column: "copies", .integer).notNull().defaults(to: 1) }
    }
    try migrator.migrate(queue)

    // Records, in one transaction: one atomic, durable commit to the sequencer.
    try queue.write { db in
        var dune = Book(id: nil, title: "Dune", author: "Frank Herbert", copies: 2)
        try dune.insert(db)
        var solaris = Book(id: nil, title: "Solaris", author: "Stanisław Lem", copies: 1)
        try solaris.insert(db)
        dune.copies += 1
        try dune.update(db)
    }
    // A transaction that fails leaves nothing behind.
    do {
        try queue.write { db in
            var ghost = Book(id: nil, title: "Ghost", author: "nobody", copies: 1)
            try ghost.insert(db)
            throw DatabaseError(resultCode: .SQLITE_ABORT, message: "changed my mind")
        }
    } catch let error as DatabaseError where error.message == "changed my mind" {}

    let books = try queue.read { db in try Book.order(Column("title")).fetchAll(db) }
    for book in books { print("\(book.title)\t\(book.author)\t\(book.copies)") }
    let applied = try queue.read { db in try migrator.appliedMigrations(db) }
    print("migrations: \(applied.joined(separator: ", "))")
} catch {
    let line = Array("grdb-example: \(error)\n".utf8)
    _ = write(2, line, line.count)
    exit(1)
}
