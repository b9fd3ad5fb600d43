/// A row's identity in a changeset: its rowid (a rowid table whose INTEGER
/// PRIMARY KEY is the rowid) or its primary-key values in column order.
enum RowKey: Hashable {
    case rowid(Int64)
    case values([CapturedValue])
}

/// The rows one table's changes touched, in the order SQLite's session
/// extension writes them, with what it records about each.
///
/// The session extension keeps a table's changes in a hash table keyed by
/// primary key (sqlite3session.c: `sessionPreupdateOneChange`,
/// `sessionGrowHash`) and writes them bucket by bucket. Replaying the same
/// calls on the same hash function and growth rule gives the same order, so
/// capture's changeset can be byte-for-byte the session extension's.
struct SessionOrder {
    struct Entry {
        var key: RowKey
        var hash: UInt32
        /// The first change to this key inserted it: the row did not exist
        /// before the transaction.
        var inserted: Bool
        /// Every change to this key came from a trigger or a foreign key action.
        var indirect: Bool
        var next: Int
    }

    private(set) var entries: [Entry] = []
    private var buckets: [Int] = []

    /// One call of the session extension's `sessionPreupdateOneChange`: an
    /// INSERT (of the new key), or an UPDATE or DELETE (of the old key); an
    /// UPDATE makes both calls. A nil key (NULL in the primary key) is ignored,
    /// as the session extension ignores it, after the hash table may grow.
    mutating func record(_ key: RowKey?, inserted: Bool, indirect: Bool) {
        grow()
        guard let key else { return }
        let hash = Self.hash(key)
        let bucket = Int(hash % UInt32(buckets.count))
        if let i = find(key, hash: hash, bucket: bucket) {
            if !indirect { entries[i].indirect = false }
            return
        }
        entries.append(Entry(key: key, hash: hash, inserted: inserted, indirect: indirect, next: buckets[bucket]))
        buckets[bucket] = entries.count - 1
    }

    /// The entry of `key`, if a change recorded it. Walks the key's bucket, as
    /// the session extension does: its own hash table, with no second one
    /// keyed by Swift's hashing (which cost as much as the rest of capture's
    /// bookkeeping on 100-row commits).
    func find(_ key: RowKey) -> Int? {
        guard !buckets.isEmpty else { return nil }
        let hash = Self.hash(key)
        return find(key, hash: hash, bucket: Int(hash % UInt32(buckets.count)))
    }

    private func find(_ key: RowKey, hash: UInt32, bucket: Int) -> Int? {
        var i = buckets[bucket]
        while i >= 0 {
            if entries[i].hash == hash, entries[i].key == key { return i }
            i = entries[i].next
        }
        return nil
    }

    /// The entries in the session extension's output order.
    var order: [Int] {
        var out: [Int] = []
        out.reserveCapacity(entries.count)
        for head in buckets {
            var i = head
            while i >= 0 {
                out.append(i)
                i = entries[i].next
            }
        }
        return out
    }

    /// `sessionGrowHash`: double the table (256 buckets first) once it is half
    /// full, moving entries bucket by bucket, each to the front of its new chain.
    private mutating func grow() {
        guard buckets.isEmpty || entries.count >= buckets.count / 2 else { return }
        let size = 2 * (buckets.isEmpty ? 128 : buckets.count)
        var fresh = [Int](repeating: -1, count: size)
        for head in buckets {
            var i = head
            while i >= 0 {
                let next = entries[i].next
                let bucket = Int(entries[i].hash % UInt32(size))
                entries[i].next = fresh[bucket]
                fresh[bucket] = i
                i = next
            }
        }
        buckets = fresh
    }

    /// `sessionPreupdateHash` without the modulo: each key value's type, then
    /// its value (integers and the bits of reals as 64 bits, text as UTF-8).
    static func hash(_ key: RowKey) -> UInt32 {
        var h: UInt32 = 0
        func append(_ x: UInt32) { h = (h << 3) ^ h ^ x }
        func append64(_ x: UInt64) {
            append(UInt32(truncatingIfNeeded: x))
            append(UInt32(truncatingIfNeeded: x >> 32))
        }
        switch key {
        case .rowid(let r):
            append(1)  // SQLITE_INTEGER
            append64(UInt64(bitPattern: r))
        case .values(let values):
            for v in values {
                switch v {
                case .integer(let x):
                    append(1)
                    append64(UInt64(bitPattern: x))
                case .real(let x):
                    append(2)
                    append64(x.bitPattern)
                case .text(let bytes):
                    append(3)
                    for b in bytes { append(UInt32(b)) }
                case .blob(let bytes):
                    append(4)
                    for b in bytes { append(UInt32(b)) }
                case .null:
                    append(5)
                }
            }
        }
        return h
    }
}
