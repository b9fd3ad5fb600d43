import Foundation
import SyndDB
import SyndLedger
import SyndProtocol
import SyndSQLite
import SyndStorage
@testable import SyndValidator
import Testing

/// The validator compares only the rows a batch changed: honest histories of
/// every shape pass that way exactly as with whole-table comparison, and page
/// images that change a row the changeset does not name are caught at their
/// version however the change is hidden (another page of the table, an
/// overflow page written in place, a b-tree re-pointed at another table's page).
@Suite struct IncrementalValidationTests {
    static func batches(_ store: PageStore, _ name: String) throws -> [Batch] {
        let head = try store.headVersion(of: name)
        return try (1...head).compactMap { try store.batch(database: name, version: $0) }
    }

    /// A history with overflow rows written in place, page splits and merges,
    /// rowid, composite and WITHOUT ROWID keys, and a table without a key.
    static func mixedHistory(_ db: Database, transactions: Int, seed: UInt64) throws {
        var rng = SplitMix(seed: seed)
        try db.execute("""
            BEGIN;
            CREATE TABLE a(id INTEGER PRIMARY KEY, v TEXT, b BLOB);
            CREATE TABLE k(x TEXT, y INT, z BLOB, PRIMARY KEY(y, x)) WITHOUT ROWID;
            CREATE TABLE n(code TEXT PRIMARY KEY, n INT, note TEXT);
            CREATE TABLE loose(x, y);
            CREATE TABLE r(rowid TEXT, code TEXT PRIMARY KEY, v BLOB);
            CREATE INDEX a_v ON a(v);
            COMMIT;
            """)
        for t in 0..<transactions {
            try db.transaction {
                for _ in 0..<Int.random(in: 1...4, using: &rng) {
                    let id = Int.random(in: 1...400, using: &rng)
                    switch Int.random(in: 0..<9, using: &rng) {
                    case 0, 1:
                        let size = [10, 300, 3000, 9000][Int.random(in: 0..<4, using: &rng)]
                        try db.execute("INSERT OR REPLACE INTO a VALUES (\(id), 'v\(id)-\(t)', randomblob(\(size)))")
                    case 2:
                        // Same size: SQLite overwrites the payload, overflow pages included, in place.
                        try db.execute("UPDATE a SET b = randomblob(length(b)) WHERE id = \(id)")
                    case 3:
                        try db.execute("DELETE FROM a WHERE id BETWEEN \(id) AND \(id + 20)")
                    case 4:
                        let text = String(repeating: "k\(id)", count: Int.random(in: 1...900, using: &rng))
                        try db.execute("INSERT OR REPLACE INTO k VALUES ('\(text)', \(id % 7), randomblob(\(id * 3)))")
                    case 5:
                        try db.execute("UPDATE k SET z = randomblob(length(z)) WHERE y = \(id % 7)")
                    case 6:
                        try db.execute("INSERT OR REPLACE INTO n VALUES ('c\(id)', \(t), printf('%.*c', \(id * 5), 'n'))")
                    case 7:
                        try db.execute("DELETE FROM n WHERE n < \(t - 30); DELETE FROM k WHERE y = \(id % 7) AND length(x) > 2000")
                    case 8 where id % 2 == 0:
                        // A column named rowid: the validator reads rows by _rowid_ instead.
                        try db.execute("INSERT OR REPLACE INTO r VALUES ('shadow', 'r\(id % 50)', randomblob(\(id * 7)))")
                    default:
                        try db.execute("INSERT INTO loose VALUES (\(id), randomblob(\(id)))")
                    }
                }
            }
        }
    }

    @Test func honestHistoriesPassCheckingOnlyTheRowsEachBatchChanged() async throws {
        try await withEmbeddedSequencer { server in
            let store = server.service.pageStore
            // Default pages; then small pages in UTF-16 with auto_vacuum, which moves pages around at every commit.
            for (i, setup) in ["", "PRAGMA encoding='UTF-16le'; PRAGMA page_size=1024; PRAGMA auto_vacuum=FULL;"].enumerated() {
                let name = uniqueName("incremental\(i)")
                let db = try Database.open(name, sequencer: server.url)
                for pragma in setup.split(separator: ";") where !pragma.trimmingCharacters(in: .whitespaces).isEmpty { try db.execute(String(pragma)) }
                try Self.mixedHistory(db, transactions: 150, seed: UInt64(41 + i))
                let batches = try Self.batches(store, name)
                let key = store.signingKey.publicKey
                let (failure, validator) = try LedgerTests.validate(batches, publicKey: key, fullCheck: .whenNeeded)
                #expect(failure == nil, "\(failure?.description ?? "")")
                // Only the first batch (and the one that creates the tables) compare whole tables.
                #expect(validator.fullChecks <= 3 && validator.incrementalChecks >= batches.count - 3,
                        "\(validator.fullChecks) full, \(validator.incrementalChecks) incremental of \(batches.count): \(validator.fullCheckReasons)")
                let full = try LedgerTests.validate(batches, publicKey: key, fullCheck: .everyBatch).failure
                #expect(full == nil, "\(full?.description ?? "")")
            }
        }
    }

    /// Batch `index` of `batches` with `edit` applied to its pages, the chain resealed from there on.
    static func doctored(_ batches: [Batch], at index: Int, key: SigningKey, pageCount: UInt32? = nil, _ edit: (inout [Page]) throws -> Void) throws -> [Batch] {
        var result = batches
        try edit(&result[index].pages)
        if let pageCount { result[index].pageCount = pageCount }
        result[index].pages.sort { $0.number < $1.number }
        for i in index..<result.count {
            result[i].pagesHash = BatchSeal.pagesHash(result[i].pages)
            try BatchSeal.seal(&result[i], previousHash: result[i - 1].hash, key: key)
        }
        return result
    }

    /// The newest image, before batch `index`, of each page.
    static func pages(before index: Int, of batches: [Batch]) -> [UInt32: [UInt8]] {
        var images: [UInt32: [UInt8]] = [:]
        for batch in batches[..<index] {
            for page in batch.pages { images[page.number] = page.data }
            images = images.filter { $0.key <= batch.pageCount }
        }
        return images
    }

    static func replace(_ bytes: inout [UInt8], _ old: String, _ new: String) -> Bool {
        let (o, n) = (Array(old.utf8), Array(new.utf8))
        guard let at = (0...(bytes.count - o.count)).first(where: { bytes[$0..<($0 + o.count)].elementsEqual(o) }) else { return false }
        bytes.replaceSubrange(at..<(at + o.count), with: n)
        return true
    }

    static func contains(_ bytes: [UInt8], _ text: String) -> Bool {
        var copy = bytes
        return replace(&copy, text, text)
    }

    static func put(_ page: UInt32, _ data: [UInt8], into pages: inout [Page]) {
        pages.removeAll { $0.number == page }
        pages.append(Page(number: page, data: data))
    }

    @Test func rowsChangedOutsideTheChangesetAreCaughtWithoutComparingWholeTables() async throws {
        try await withEmbeddedSequencer { server in
            let store = server.service.pageStore
            let name = uniqueName("hidden")
            let db = try Database.open(name, sequencer: server.url)
            try db.execute("CREATE TABLE a(id INTEGER PRIMARY KEY, v TEXT, b BLOB); CREATE TABLE c(id INTEGER PRIMARY KEY, v TEXT, b BLOB)")
            for table in ["a", "c"] {
                try db.transaction {
                    for i in 1...400 { try db.execute("INSERT INTO \(table) VALUES (\(i), '\(table)-marker-\(1000 + i)', NULL)") }
                }
            }
            // One row with an overflow chain of a recognisable pattern.
            try db.execute("INSERT INTO a VALUES (1000, 'big', CAST(printf('%.*c', 20000, 'Q') AS BLOB))")
            try db.execute("UPDATE a SET v = 'honest' WHERE id = 7")
            try db.execute("UPDATE c SET v = 'honest too' WHERE id = 9")
            let batches = try Self.batches(store, name)
            let key = store.signingKey
            let last = batches.count - 1
            #expect(try LedgerTests.validate(batches, publicKey: key.publicKey, fullCheck: .whenNeeded).failure == nil)
            let before = Self.pages(before: last, of: batches)
            func expectCaught(_ doctored: [Batch], _ what: String, reason: String? = nil) throws {
                for mode in [Validator.FullCheck.whenNeeded, .everyBatch] {
                    let (failure, validator) = try LedgerTests.validate(doctored, publicKey: key.publicKey, fullCheck: mode)
                    #expect(failure?.version == batches[last].version, "\(what) (\(mode)): \(failure?.description ?? "passed")")
                    if mode == .whenNeeded {
                        #expect(validator.fullChecks <= 2, "\(what): \(validator.fullChecks) full checks")
                        if let reason { #expect(failure?.description.contains(reason) == true, "\(what): \(failure?.description ?? "passed")") }
                    }
                }
            }

            // 1. Another leaf of the same table, with one row's text changed.
            let leaf = try #require(before.first { Self.contains($0.value, "a-marker-1300") })
            var changed = leaf.value
            #expect(Self.replace(&changed, "a-marker-1300", "a-marker-9999"))
            try expectCaught(try Self.doctored(batches, at: last, key: key) { Self.put(leaf.key, changed, into: &$0) }, "a row on another leaf")

            // 2. An overflow page of an untouched row, written in place.
            let overflow = try #require(before.first { $0.value.dropFirst(4).prefix(64).allSatisfy { $0 == UInt8(ascii: "Q") } })
            var flipped = overflow.value
            flipped[100] = UInt8(ascii: "R")
            try expectCaught(try Self.doctored(batches, at: last, key: key) { Self.put(overflow.key, flipped, into: &$0) }, "an overflow page")

            // 3. a's interior page re-pointed from one of its leaves to one of c's
            //    (still listed by c's own interior page: a page listed twice).
            let aLeaf = try #require(before.first { Self.contains($0.value, "a-marker-1200") }).key
            let cLeaf = try #require(before.first { Self.contains($0.value, "c-marker-1200") }).key
            let interior = try #require(before.first { image in
                guard image.key != 1, image.value[0] == 5, let page = try? BTreePage(image.value, number: image.key, usableSize: image.value.count) else { return false }
                return page.children.contains(aLeaf)
            })
            var repointed = interior.value
            let aBytes = withUnsafeBytes(of: aLeaf.bigEndian) { Array($0) }, cBytes = withUnsafeBytes(of: cLeaf.bigEndian) { Array($0) }
            let at = try #require((0...(repointed.count - 4)).first { repointed[$0..<($0 + 4)].elementsEqual(aBytes) })
            repointed.replaceSubrange(at..<(at + 4), with: cBytes)
            try expectCaught(
                try Self.doctored(batches, at: last, key: key) { Self.put(interior.key, repointed, into: &$0) }, "a re-pointed interior page",
                reason: "listed by page \(interior.key) and still by page")

            // 4. The same, after c's leaf was cut loose from c (so it is listed only once):
            //    its rows move from c to a, and a's leaf's rows disappear.
            let cInterior = try #require(before.first { image in
                guard image.key != 1, image.key != interior.key, image.value[0] == 5,
                    let page = try? BTreePage(image.value, number: image.key, usableSize: image.value.count) else { return false }
                return page.children.contains(cLeaf)
            })
            var cRepointed = cInterior.value
            let cAt = try #require((0...(cRepointed.count - 4)).first { cRepointed[$0..<($0 + 4)].elementsEqual(cBytes) })
            cRepointed.replaceSubrange(cAt..<(cAt + 4), with: aBytes)
            try expectCaught(
                try Self.doctored(batches, at: last, key: key) {
                    Self.put(interior.key, repointed, into: &$0)
                    Self.put(cInterior.key, cRepointed, into: &$0)
                }, "two swapped leaves", reason: "disagree")
        }
    }

    /// Rows kept in the file but out of a lookup's way: a cell moved out of
    /// order, an interior key lowered so a child's upper rows fall outside it,
    /// a row given another row's key while the key's index still points elsewhere.
    @Test func rowsALookupWouldNotFindAreCaught() async throws {
        try await withEmbeddedSequencer { server in
            let store = server.service.pageStore
            let name = uniqueName("misplaced")
            let db = try Database.open(name, sequencer: server.url)
            try db.execute("CREATE TABLE a(id INTEGER PRIMARY KEY, v TEXT); CREATE TABLE n(code TEXT PRIMARY KEY, v TEXT)")
            try db.transaction {
                for i in 1...2000 { try db.execute("INSERT INTO a VALUES (\(i), 'a-value-\(1000 + i)')") }
                for i in 100...199 { try db.execute("INSERT INTO n VALUES ('c-\(i)', 'good-\(i)')") }
            }
            try db.execute("DELETE FROM a WHERE id = 5")
            try db.execute("UPDATE a SET v = 'honest' WHERE id = 1999")
            let batches = try Self.batches(store, name)
            let key = store.signingKey
            #expect(try LedgerTests.validate(batches, publicKey: key.publicKey, fullCheck: .whenNeeded).failure == nil)
            func expectCaught(_ doctored: [Batch], at index: Int, _ what: String, _ reason: String) throws {
                let (failure, validator) = try LedgerTests.validate(doctored, publicKey: key.publicKey, fullCheck: .whenNeeded)
                #expect(failure?.version == batches[index].version, "\(what): \(failure?.description ?? "passed")")
                #expect(failure?.description.contains(reason) == true, "\(what): \(failure?.description ?? "passed")")
                #expect(validator.fullChecks <= 2, "\(what): \(validator.fullCheckReasons)")
                let full = try LedgerTests.validate(doctored, publicKey: key.publicKey, fullCheck: .everyBatch).failure
                #expect(full?.version == batches[index].version, "\(what), whole tables: \(full?.description ?? "passed")")
            }
            func parse(_ data: [UInt8], _ number: UInt32) -> BTreePage? { try? BTreePage(data, number: number, usableSize: data.count) }

            // 1. The delete of id 5, whose page still holds it, its pointer moved last.
            let deleting = batches.count - 2
            let before = Self.pages(before: deleting, of: batches)
            let leaf = try #require(before.first { $0.key != 1 && parse($0.value, $0.key)?.cells.contains { $0.rowid == 5 } == true })
            let page = try #require(parse(leaf.value, leaf.key))
            let i = try #require(page.cells.firstIndex { $0.rowid == 5 })
            var moved = leaf.value
            let pointers = 8, count = page.cells.count
            let pointer = Array(moved[(pointers + 2 * i)..<(pointers + 2 * i + 2)])
            moved.removeSubrange((pointers + 2 * i)..<(pointers + 2 * i + 2))
            moved.insert(contentsOf: pointer, at: pointers + 2 * (count - 1))
            try expectCaught(try Self.doctored(batches, at: deleting, key: key) { Self.put(leaf.key, moved, into: &$0) }, at: deleting, "a cell out of order", "out of order")

            // 2. a's interior page with one key lowered: its child's upper rows are out of range.
            let last = batches.count - 1
            let now = Self.pages(before: last, of: batches)
            let interior = try #require(now.first { $0.key != 1 && $0.value[0] == 5 && (parse($0.value, $0.key)?.keys.count ?? 0) > 3 })
            let inner = try #require(parse(interior.value, interior.key))
            func lowerable(_ i: Int) -> Bool {
                let (low, high) = (inner.keys[i - 1], inner.keys[i])
                return low >= 128 && high - low > 2 && high < 16384
            }
            let k = try #require((1..<inner.keys.count).first(where: lowerable))
            var lowered = interior.value
            let cell = Int(lowered[12 + 2 * k]) << 8 | Int(lowered[12 + 2 * k + 1])
            let newKey = inner.keys[k - 1] + 1
            lowered[cell + 4] = UInt8(0x80 | (newKey >> 7))
            lowered[cell + 5] = UInt8(newKey & 0x7f)
            #expect(parse(lowered, interior.key)?.keys[k] == newKey)
            try expectCaught(try Self.doctored(batches, at: last, key: key) { Self.put(interior.key, lowered, into: &$0) }, at: last, "a lowered interior key", "outside the range")

            // 3. n's row 'c-150' renamed 'c-151' in its table page; the key's index still points 'c-151' at the other row.
            let nLeaf = try #require(now.first { Self.contains($0.value, "c-150") && Self.contains($0.value, "good-150") && $0.value[0] == 13 })
            var renamed = nLeaf.value
            #expect(Self.replace(&renamed, "c-150good-150", "c-151good-150"))
            try expectCaught(try Self.doctored(batches, at: last, key: key) { Self.put(nLeaf.key, renamed, into: &$0) }, at: last, "two rows under one key", "index does not lead to the row")
        }
    }

    /// `synd validate` checks signatures off its path, one every 64 batches and
    /// the last, relying on the hash chain in between; a bad one still fails
    /// at its own version, whether or not a checkpoint lands on it.
    @Test func signaturesCheckedAlongsideStillFailAtTheirVersion() async throws {
        try await withEmbeddedSequencer { server in
            let store = server.service.pageStore
            let name = uniqueName("signatures")
            try LedgerTests.bankHistory(server.url, name, transactions: 150)
            let batches = try Self.batches(store, name)
            #expect(batches.count > 130)
            func run(_ batches: [Batch]) throws -> ValidationFailure? {
                let work = TemporaryDirectory()
                let validator = try Validator(directory: work.path, publicKey: store.signingKey.publicKey, deferSignatures: true)
                do throws(ValidationFailure) {
                    for batch in batches { try validator.process(batch) }
                    try validator.finish()
                } catch {
                    return error
                }
                return nil
            }
            #expect(try run(batches) == nil)
            for bad in [100, 128, batches.count - 1] {
                var forged = batches
                forged[bad - 1].signature[7] ^= 0x20
                let failure = try run(forged)
                #expect(failure?.version == forged[bad - 1].version && failure?.reason.contains("signature") == true,
                        "batch \(bad): \(failure?.description ?? "passed")")
            }
        }
    }

    /// In an auto_vacuum database SQLite skips over an overflow page by asking
    /// the pointer map which page follows it: an overflow chain re-pointed
    /// elsewhere while the map still names the old page would let SQLite read a
    /// page the validator never compares (a column read alone shows it, the
    /// whole row does not).
    @Test func aPointerMapThatDisagreesWithAnOverflowChainIsCaught() async throws {
        try await withEmbeddedSequencer { server in
            let store = server.service.pageStore
            let name = uniqueName("ptrmap")
            let db = try Database.open(name, sequencer: server.url)
            try db.execute("PRAGMA page_size=1024")
            try db.execute("PRAGMA auto_vacuum=FULL")
            try db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, a BLOB, b TEXT)")
            try db.execute("INSERT INTO t VALUES (1, zeroblob(3000), 'hello')")
            try db.execute("INSERT INTO t VALUES (2, x'00', 'other')")
            try db.execute("UPDATE t SET b = 'changed' WHERE id = 2")
            let batches = try Self.batches(store, name)
            let key = store.signingKey
            #expect(try LedgerTests.validate(batches, publicKey: key.publicKey, fullCheck: .whenNeeded).failure == nil)
            let last = batches.count - 1
            let now = Self.pages(before: last, of: batches)
            let leaf = try #require(now.first { $0.key != 1 && (try? BTreePage($0.value, number: $0.key, usableSize: 1024))?.cells.contains { $0.rowid == 1 } == true })
            let q1 = try #require(try BTreePage(leaf.value, number: leaf.key, usableSize: 1024).cells.first { $0.rowid == 1 }?.firstOverflow)
            let q2 = BTreePage.uint32(try #require(now[q1]), 0)
            #expect(q2 == q1 + 1, "a chain laid out in order: \(q1) -> \(q2)")
            let count = batches[last].pageCount
            let moved = count + 1
            let doctored = try Self.doctored(batches, at: last, key: key, pageCount: moved) { pages in
                // q1 now leads to a copy of q2 at a new page; q2 itself says something else.
                var first = now[q1]!
                first.replaceSubrange(0..<4, with: withUnsafeBytes(of: moved.bigEndian) { Array($0) })
                var second = now[q2]!
                second[100] = 0x41
                var one = pages.first { $0.number == 1 }?.data ?? now[1]!
                one.replaceSubrange(28..<32, with: withUnsafeBytes(of: moved.bigEndian) { Array($0) })
                Self.put(q1, first, into: &pages)
                Self.put(q2, second, into: &pages)
                Self.put(moved, now[q2]!, into: &pages)
                Self.put(1, one, into: &pages)
            }
            let (failure, validator) = try LedgerTests.validate(doctored, publicKey: key.publicKey, fullCheck: .whenNeeded)
            #expect(failure?.version == batches[last].version && failure?.description.contains("pointer map") == true,
                    "\(failure?.description ?? "passed") \(validator.fullCheckReasons)")
        }
    }
}
