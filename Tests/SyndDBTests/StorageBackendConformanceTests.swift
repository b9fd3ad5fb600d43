import Dispatch
import Synchronization
import SyndProtocol
import SyndStorage
import Testing

/// The contract of `StorageBackend` (see its doc comment), which every backend
/// must pass: run against each of them on a real disk. A new backend joins by
/// adding a case to `Backend`.
@Suite struct StorageBackendConformanceTests {
    enum Backend: String, CaseIterable, CustomStringConvertible {
        case log
        var description: String { rawValue }

        /// Opens the backend kept in `directory` (a new one if it is empty).
        func open(_ directory: String) throws -> any StorageBackend {
            switch self {
            case .log: try LogStore(directory: directory + "/log")
            }
        }
    }

    let dir = TemporaryDirectory()

    static func page(_ number: UInt32, _ fill: UInt8, size: Int = 1024) -> Page {
        Page(number: number, data: [UInt8](repeating: fill, count: size))
    }

    static func batch(_ version: UInt64, count: UInt32, _ pages: [Page], name: String = "db") -> Batch {
        var b = Batch()
        b.database = name
        b.version = version
        b.pageSize = 1024
        b.pageCount = count
        b.pages = pages
        b.changeset = [1, 2, 3, UInt8(truncatingIfNeeded: version)]
        b.hash = [UInt8](repeating: UInt8(truncatingIfNeeded: version), count: 32)
        b.committedAtMs = 1_700_000_000_000 + version * 1000
        return b
    }

    /// Appends and waits for durability.
    static func append(_ backend: any StorageBackend, _ records: [StoreRecord]) throws {
        let done = DispatchSemaphore(value: 0)
        let failure = Mutex<SequencerError?>(nil)
        for r in records {
            backend.append(r) { result in
                if case .failure(let e) = result { failure.withLock { $0 = e } }
                done.signal()
            }
        }
        for _ in records { done.wait() }
        if let e = failure.withLock({ $0 }) { throw e }
    }

    static func txn(_ n: Int) -> [UInt8] { Array("txn-\(n)".utf8) }

    @Test(arguments: Backend.allCases) func durableRecordsSurviveReopen(_ kind: Backend) async throws {
        try await offPool {
            do {
                let backend = try kind.open(dir.path)
                #expect(backend.recovered.isEmpty)
                try Self.append(backend, [
                    .create(database: 7, name: "db"),
                    .epochCeiling(database: 7, ceiling: 1023),
                    .batch(database: 7, txnID: Self.txn(1), batch: Self.batch(1, count: 2, [Self.page(1, 1), Self.page(2, 1)])),
                    .batch(database: 7, txnID: Self.txn(2), batch: Self.batch(2, count: 2, [Self.page(2, 2)])),
                ])
            }
            let backend = try kind.open(dir.path)
            let db = try #require(backend.recovered.first)
            #expect(backend.recovered.count == 1)
            #expect(db.id == 7 && db.name == "db" && db.version == 2 && db.pageSize == 1024 && db.pageCount == 2 && db.epochCeiling == 1023)
            #expect(try backend.page(database: 7, number: 1, version: 2)?.data.first == 1)
            #expect(try backend.page(database: 7, number: 2, version: 2)?.data.first == 2)
            #expect(try backend.page(database: 7, number: 2, version: 1)?.data.first == 1)
            #expect(backend.committedVersion(database: 7, txnID: Self.txn(2)) == 2)
            #expect(backend.committedVersion(database: 7, txnID: Self.txn(3)) == nil)
            let stored = try #require(try backend.batch(database: 7, version: 2))
            #expect(stored == Self.batch(2, count: 2, [Self.page(2, 2)]), "a batch reads back exactly as it was appended")
            #expect(backend.sizes(database: 7, version: 1)! == (1024, 2))
            #expect(backend.committedAt(database: 7, version: 1) == 1_700_000_001_000, "commit times, for reads as of a time")
            #expect(backend.committedAt(database: 7, version: 2) == 1_700_000_002_000)
            #expect(backend.committedAt(database: 7, version: 3) == nil)
        }
    }

    /// Batches of several megabytes (the embedded log writes their pages and
    /// changesets from the request's buffers) read back exactly, before and
    /// after reopening.
    @Test(arguments: Backend.allCases) func largeBatchesReadBackExactly(_ kind: Backend) async throws {
        try await offPool {
            var big = Self.batch(1, count: 3000, (1...3000).map { n in
                Page(number: UInt32(n), data: (0..<1024).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ n) })
            })
            big.changeset = [UInt8](repeating: 9, count: 5000)
            // Few pages with a changeset of megabytes (a large delete, say): the changeset sits before the pages.
            var wide = Self.batch(2, count: 3000, [Self.page(5, 5)])
            wide.changeset = (0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 13) }
            do {
                let backend = try kind.open(dir.path)
                try Self.append(backend, [
                    .create(database: 1, name: "db"),
                    .batch(database: 1, txnID: Self.txn(1), batch: big),
                    .batch(database: 1, txnID: Self.txn(2), batch: wide),
                ])
                #expect(try backend.batch(database: 1, version: 1) == big)
                #expect(try backend.batch(database: 1, version: 2) == wide)
            }
            let backend = try kind.open(dir.path)
            #expect(try backend.batch(database: 1, version: 1) == big)
            #expect(try backend.batch(database: 1, version: 2) == wide)
            for n: UInt32 in [1, 5, 1500, 3000] {
                let expected = n == 5 ? Self.page(5, 5).data : big.pages[Int(n) - 1].data
                #expect(try backend.page(database: 1, number: n, version: 2)?.data == expected, "page \(n)")
            }
            #expect(try backend.page(database: 1, number: 5, version: 1)?.data == big.pages[4].data)
        }
    }

    /// Many pages at once answer exactly what one page at a time does, in the
    /// order asked: images of several batches, small and large, repeated,
    /// never written and cut off.
    @Test(arguments: Backend.allCases) func manyPagesAtOnceMatchOneAtATime(_ kind: Backend) async throws {
        try await offPool {
            let backend = try kind.open(dir.path)
            let large = Self.batch(2, count: 2000, (1...2000).map { n in
                Page(number: UInt32(n), data: (0..<1024).map { UInt8(truncatingIfNeeded: $0 &+ n) })
            })
            try Self.append(backend, [
                .create(database: 1, name: "db"),
                .batch(database: 1, txnID: Self.txn(1), batch: Self.batch(1, count: 3000, [Self.page(1, 1), Self.page(2500, 1), Self.page(3000, 1)])),
                .batch(database: 1, txnID: Self.txn(2), batch: large),
                .batch(database: 1, txnID: Self.txn(3), batch: Self.batch(3, count: 2600, [Self.page(7, 3), Self.page(8, 3)])),
            ])
            let asked: [UInt32] = [8, 1, 2, 3, 2500, 2999, 3000, 7, 1999, 2000, 1, 1500, 2001, 9, 10, 11]
            for version: UInt64 in [1, 2, 3] {
                let many = try backend.pages(database: 1, numbers: asked, version: version)
                let one = try asked.map { try backend.page(database: 1, number: $0, version: version) }
                #expect(many == one, "version \(version)")
            }
            #expect(try backend.pages(database: 1, numbers: [3000], version: 3) == [nil], "cut off by version 3's page count")
        }
    }

    @Test(arguments: Backend.allCases) func smallerPageCountCutsOffPagesForLaterVersions(_ kind: Backend) async throws {
        try await offPool {
            let backend = try kind.open(dir.path)
            try Self.append(backend, [
                .create(database: 1, name: "db"),
                .batch(database: 1, txnID: Self.txn(1), batch: Self.batch(1, count: 3, [Self.page(1, 1), Self.page(2, 1), Self.page(3, 1)])),
                .batch(database: 1, txnID: Self.txn(2), batch: Self.batch(2, count: 1, [Self.page(1, 2)])),
                .batch(database: 1, txnID: Self.txn(3), batch: Self.batch(3, count: 3, [Self.page(2, 3)])),
            ])
            #expect(try backend.page(database: 1, number: 3, version: 1)?.data.first == 1, "older versions keep the page")
            #expect(try backend.page(database: 1, number: 3, version: 2) == nil, "cut off by the smaller page count")
            #expect(try backend.page(database: 1, number: 3, version: 3) == nil, "growing again reads zeros, not the old page")
            #expect(try backend.page(database: 1, number: 2, version: 3)?.data.first == 3)
        }
    }

    @Test(arguments: Backend.allCases) func dropForgetsEverythingBeforeIt(_ kind: Backend) async throws {
        try await offPool {
            do {
                let backend = try kind.open(dir.path)
                var drop = Self.batch(3, count: 0, [])
                drop.pageSize = 0
                try Self.append(backend, [
                    .create(database: 1, name: "db"),
                    .batch(database: 1, txnID: Self.txn(1), batch: Self.batch(1, count: 1, [Self.page(1, 1)])),
                    .batch(database: 1, txnID: Self.txn(2), batch: Self.batch(2, count: 1, [Self.page(1, 2)])),
                    .drop(database: 1, txnID: Self.txn(3), batch: drop),
                ])
                #expect(try backend.page(database: 1, number: 1, version: 3) == nil)
                #expect(try backend.batch(database: 1, version: 2) == nil)
                #expect(backend.committedVersion(database: 1, txnID: Self.txn(1)) == nil)
                try Self.append(backend, [.batch(database: 1, txnID: Self.txn(4), batch: Self.batch(4, count: 1, [Self.page(1, 4)]))])
            }
            let backend = try kind.open(dir.path)
            let db = try #require(backend.recovered.first)
            #expect(db.version == 4 && db.oldestVersion == 3 && db.pageCount == 1)
            #expect(try backend.page(database: 1, number: 1, version: 4)?.data.first == 4)
            #expect(try backend.batch(database: 1, version: 3)?.pageCount == 0, "the drop batch is kept: it is the oldest")
            #expect(try backend.batch(database: 1, version: 1) == nil)
        }
    }

    @Test(arguments: Backend.allCases) func pruneKeepsWhatReadsAtTheOldestVersionSee(_ kind: Backend) async throws {
        try await offPool {
            do {
                let backend = try kind.open(dir.path)
                try Self.append(backend, [
                    .create(database: 1, name: "db"),
                    .batch(database: 1, txnID: Self.txn(1), batch: Self.batch(1, count: 2, [Self.page(1, 1), Self.page(2, 1)])),
                    .batch(database: 1, txnID: Self.txn(2), batch: Self.batch(2, count: 2, [Self.page(1, 2)])),
                    .batch(database: 1, txnID: Self.txn(3), batch: Self.batch(3, count: 2, [Self.page(1, 3)])),
                    .prune(database: 1, keepFrom: 2),
                ])
            }
            let backend = try kind.open(dir.path)
            #expect(backend.recovered.first?.oldestVersion == 2)
            #expect(try backend.page(database: 1, number: 2, version: 2)?.data.first == 1, "an image older than keepFrom that keepFrom still sees is kept")
            #expect(try backend.page(database: 1, number: 1, version: 2)?.data.first == 2)
            #expect(try backend.page(database: 1, number: 1, version: 3)?.data.first == 3)
            #expect(try backend.batch(database: 1, version: 2) != nil)
            #expect(backend.committedAt(database: 1, version: 1) == nil, "a pruned batch's time is gone with it")
            #expect(backend.committedAt(database: 1, version: 2) == 1_700_000_002_000)
        }
    }

    /// Group commit: many databases appending at once all complete, each
    /// database's records in order, and all of them are there after reopen.
    @Test(arguments: Backend.allCases) func concurrentAppendsOfManyDatabases(_ kind: Backend) async throws {
        try await offPool {
            let databases = 8
            let versions = 40
            do {
                let backend = try kind.open(dir.path)
                try Self.append(backend, (1...databases).map { .create(database: Int64($0), name: "db\($0)") })
                let order = Mutex<[Int: [UInt64]]>([:])
                DispatchQueue.concurrentPerform(iterations: databases) { i in
                    let id = Int64(i + 1)
                    let done = DispatchSemaphore(value: 0)
                    for v in 1...versions {
                        let b = Self.batch(UInt64(v), count: 2, [Self.page(1, UInt8(v)), Self.page(2, UInt8(i))], name: "db\(id)")
                        backend.append(.batch(database: id, txnID: Self.txn(v), batch: b)) { result in
                            if case .success = result { order.withLock { $0[i, default: []].append(UInt64(v)) } }
                            done.signal()
                        }
                    }
                    for _ in 1...versions { done.wait() }
                }
                for i in 0..<databases {
                    #expect(order.withLock { $0[i] } == (1...versions).map(UInt64.init), "completions of db\(i + 1) in order")
                }
            }
            let backend = try kind.open(dir.path)
            #expect(backend.recovered.count == databases)
            for r in backend.recovered {
                #expect(r.version == UInt64(versions))
                for v in [1, versions / 2, versions] {
                    #expect(try backend.page(database: r.id, number: 1, version: UInt64(v))?.data.first == UInt8(v))
                }
            }
        }
    }
}
