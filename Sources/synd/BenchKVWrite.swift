import SyndSQLite

/// The statement of go-dqlite's `kvwrite` benchmark, so that local SQLite,
/// SyndDB and dqlite commit the same rows: one `INSERT OR REPLACE` of a random
/// 32-letter key and a value (half one repeated letter, half random letters),
/// each its own (autocommit) transaction.
struct KVWrite {
    static let schema = "CREATE TABLE IF NOT EXISTS model(key TEXT, value TEXT, UNIQUE(key))"
    static let keyBytes = 32
    static let letters = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".utf8)

    let insert: Statement
    var rng: SplitMix64

    init(_ connection: Connection, seed: UInt64) throws {
        try connection.execute(Self.schema)
        insert = try connection.prepare("INSERT OR REPLACE INTO model(key, value) VALUES (?, ?)")
        rng = SplitMix64(seed: seed)
    }

    /// One row in its own transaction; returns when it is durable.
    mutating func commitOne(valueBytes: Int) throws {
        let key = letters(Self.keyBytes)
        // Built as bytes: String(repeating:count:) appends one Character at a
        // time, which cost this benchmark's processes about 6% of their CPU.
        var value = [UInt8](repeating: Self.letters[Int(rng.next() % 52)], count: valueBytes / 2)
        value.reserveCapacity(valueBytes)
        for _ in 0..<(valueBytes - valueBytes / 2) { value.append(Self.letters[Int(rng.next() % 52)]) }
        try insert.run([key, String(decoding: value, as: UTF8.self)])
    }

    mutating func letters(_ n: Int) -> String {
        String(decoding: (0..<n).map { _ in Self.letters[Int(rng.next() % 52)] }, as: UTF8.self)
    }
}
