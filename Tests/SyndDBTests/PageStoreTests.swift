import SyndProtocol
import SyndStorage
import Testing

/// The embedded store on a real disk: versions, point-in-time reads, retention,
/// idempotency and epochs across reopen.
@Suite struct PageStoreTests {
    let dir = TemporaryDirectory()

    func page(_ n: UInt32, _ fill: UInt8, size: Int = 1024) -> Page {
        var data = [UInt8](repeating: fill, count: size)
        if n == 1 { data[16] = UInt8(size >> 8); data[17] = UInt8(size & 0xFF) }
        return Page(number: n, data: data)
    }

    func commit(_ store: PageStore, _ lease: Lease, base: UInt64, count: UInt32, _ pages: [Page], txn: [UInt8]? = nil) throws -> CommitResponse {
        var r = CommitRequest()
        r.database = "db"
        r.baseVersion = base
        r.leaseEpoch = lease.epoch
        r.holder = lease.holder
        r.txnID = txn ?? (0..<16).map { _ in UInt8.random(in: 0...255) }
        r.pageSize = 1024
        r.pageCount = count
        r.pages = pages
        return try store.commit(r)
    }

    func acquire(_ store: PageStore, holder: String = "w") throws -> Lease {
        var a = AcquireLeaseRequest()
        a.database = "db"
        a.holder = holder
        return try store.acquireLease(a)
    }

    @Test func pointInTimeReadsRetentionAndTruncation() async throws {
        try await offPool {
            var config = StoreConfiguration(directory: dir.path)
            config.retainedVersions = 100
            let store = try PageStore(config)
            _ = try store.open(OpenDatabaseRequest(name: "db", create: true))
            let lease = try acquire(store)
            _ = try commit(store, lease, base: 0, count: 3, [page(1, 1), page(2, 1), page(3, 1)])
            _ = try commit(store, lease, base: 1, count: 3, [page(2, 2)])
            _ = try commit(store, lease, base: 2, count: 1, [page(1, 3)])  // truncate to 1 page

            func read(_ version: UInt64, _ pages: [UInt32]) throws -> ReadPagesResponse {
                var r = ReadPagesRequest()
                r.database = "db"
                r.version = version
                r.pageNumbers = pages
                return try store.readPages(r)
            }
            let v1 = try read(1, [1, 2, 3])
            #expect(v1.pageCount == 3 && v1.pages.map { $0.data[100] } == [1, 1, 1])
            let v2 = try read(2, [2])
            #expect(v2.pages.first?.data[100] == 2)
            let v3 = try read(3, [1, 2])
            #expect(v3.pageCount == 1 && v3.pages.count == 1 && v3.pages[0].data[100] == 3)
            // Growing after truncation reads zeros for pages never rewritten.
            _ = try commit(store, lease, base: 3, count: 3, [page(3, 4)])
            #expect(try read(4, [2]).pages.first?.data == [UInt8](repeating: 0, count: 1024))
            #expect(try read(2, [2]).pages.first?.data[100] == 2)

            // Retention: after 128 more commits, versions below head - 100 are gone.
            for v in 4..<132 { _ = try commit(store, lease, base: UInt64(v), count: 3, [page(2, UInt8(v % 250))]) }
            #expect(throws: SequencerError.self) { _ = try read(2, [2]) }
            #expect(try read(100, [3]).pages.first?.data[100] == 4)
        }
    }

    @Test func idempotentCommitAndEpochsSurviveReopen() async throws {
        try await offPool {
            let txn: [UInt8] = Array(repeating: 7, count: 16)
            let epoch: UInt64
            do {
                let store = try PageStore(StoreConfiguration(directory: dir.path))
                _ = try store.open(OpenDatabaseRequest(name: "db", create: true))
                let lease = try acquire(store)
                epoch = lease.epoch
                let first = try commit(store, lease, base: 0, count: 1, [page(1, 1)], txn: txn)
                let again = try commit(store, lease, base: 0, count: 1, [page(1, 1)], txn: txn)
                #expect(first.version == 1 && !first.duplicate)
                #expect(again.version == 1 && again.duplicate)
            }
            let reopened = try PageStore(StoreConfiguration(directory: dir.path))
            var status = GetCommitStatusRequest()
            status.database = "db"
            status.txnID = txn
            #expect(try reopened.commitStatus(status).state == .committed)
            status.txnID = [1]
            #expect(try reopened.commitStatus(status).state == .notFound)
            // No lease survives a restart (its holder's hold connection closed with
            // the old process): the old epoch is fenced, and the next acquisition,
            // by anyone, gets a new epoch, never a reused one.
            var renew = RenewLeaseRequest()
            renew.database = "db"
            renew.holder = "w"
            renew.epoch = epoch
            #expect(throws: SequencerError.self) { _ = try reopened.renewLease(renew) }
            let next = try acquire(reopened, holder: "other").epoch
            #expect(next > epoch)
            #expect(throws: SequencerError.self) { _ = try acquire(reopened, holder: "w") }

        }
    }
}
