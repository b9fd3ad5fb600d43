import Foundation
import SyndClient
import SyndLedger
import SyndPostgres
import SyndProtocol
import SyndStorage
import Testing

/// The contract of `SequencerStore`, run against every store: the embedded
/// one and PostgreSQL's (a real server, started by scripts/with-postgres.sh).
/// Versions and point-in-time reads, fencing, exactly-once commits, the
/// sealed hash chain, retention, drop, and commit notifications.
@Suite struct SequencerStoreConformanceTests {
    static let kinds = StoreKind.allCases.filter(\.available)
    let dir = TemporaryDirectory()

    static func page(_ n: UInt32, _ fill: UInt8, size: Int = 1024) -> Page {
        var data = [UInt8](repeating: fill, count: size)
        if n == 1 { data[16] = UInt8(size >> 8); data[17] = UInt8(size & 0xFF) }
        return Page(number: n, data: data)
    }

    static func txn() -> [UInt8] { (0..<16).map { _ in UInt8.random(in: 0...255) } }

    static func request(_ lease: Lease, base: UInt64, count: UInt32, _ pages: [Page], txn: [UInt8] = txn(), db: String = "db") -> CommitRequest {
        var r = CommitRequest()
        r.database = db
        r.baseVersion = base
        r.leaseEpoch = lease.epoch
        r.holder = lease.holder
        r.txnID = txn
        r.pageSize = 1024
        r.pageCount = count
        r.pages = pages
        r.changeset = Array("changeset at \(base + 1)".utf8)
        return r
    }

    static func acquire(_ store: any SequencerStore, holder: String = "w", ttl: UInt32 = 120_000, db: String = "db") throws -> Lease {
        var a = AcquireLeaseRequest()
        a.database = db
        a.holder = holder
        a.ttlMs = ttl
        return try store.acquireLease(a)
    }

    static func read(_ store: any SequencerStore, _ version: UInt64, _ pages: [UInt32], db: String = "db") throws -> ReadPagesResponse {
        var r = ReadPagesRequest()
        r.database = db
        r.version = version
        r.pageNumbers = pages
        return try store.readPages(r)
    }

    static func code(_ body: () throws -> some Any) -> GRPCStatusCode? {
        do {
            _ = try body()
            return nil
        } catch let e as SequencerError {
            return e.code
        } catch {
            return .unknown
        }
    }

    @Test(arguments: kinds) func versionsPointInTimeReadsTruncationAndRegrowth(_ kind: StoreKind) async throws {
        let (store, keep) = try await kind.make(dir.path)
        defer { store.shutdown(); withExtendedLifetime(keep) {} }
        try await offPool {
            _ = try store.open(OpenDatabaseRequest(name: "db", create: true))
            let lease = try Self.acquire(store)
            #expect(try store.commit(Self.request(lease, base: 0, count: 3, [Self.page(1, 1), Self.page(2, 1), Self.page(3, 1)])).version == 1)
            #expect(try store.commit(Self.request(lease, base: 1, count: 3, [Self.page(2, 2)])).version == 2)
            #expect(try store.commit(Self.request(lease, base: 2, count: 1, [Self.page(1, 3)])).version == 3)  // truncated to 1 page
            #expect(try store.commit(Self.request(lease, base: 3, count: 3, [Self.page(1, 4)])).version == 4)  // grown again

            let v1 = try Self.read(store, 1, [1, 2, 3])
            #expect(v1.pageCount == 3 && v1.pages.map { $0.data[100] } == [1, 1, 1])
            #expect(try Self.read(store, 2, [2, 3]).pages.map { $0.data[100] } == [2, 1])
            let v3 = try Self.read(store, 3, [1, 2])
            #expect(v3.pageCount == 1 && v3.pages.count == 1 && v3.pages[0].data[100] == 3)
            // Pages cut off by the truncation read as zeros once the database grows again.
            let v4 = try Self.read(store, 4, [1, 2, 3])
            #expect(v4.pageCount == 3 && v4.pages.map { $0.data[100] } == [4, 0, 0])
            #expect(v4.pages.allSatisfy { $0.isIntact })
            // The head by default; versions past it are refused.
            #expect(try Self.read(store, 0, [1]).version == 4)
            #expect(Self.code { try Self.read(store, 5, [1]) } == .outOfRange)

            // A reopen from version 3 names the pages written since; from
            // version 2, pages 2 and 3 changed too (cut off, now zeros): it
            // names them, or says it does not know (the reader drops its cache).
            var since = OpenDatabaseRequest(name: "db", create: false)
            since.sinceVersion = 3
            let info = try #require(try store.openExisting(since))
            #expect(info.version == 4 && info.pageCount == 3)
            #expect(info.changesKnown && Set(info.changedPages) == [1])
            since.sinceVersion = 2
            let across = try #require(try store.openExisting(since))
            #expect(!across.changesKnown || Set(across.changedPages).isSuperset(of: [1, 2, 3]))
            // Time travel by version.
            var past = OpenDatabaseRequest(name: "db", create: false)
            past.atVersion = 2
            let old = try #require(try store.openExisting(past))
            #expect(old.version == 2 && old.pageCount == 3 && old.committedAtMs > 0)
        }
    }

    @Test(arguments: kinds) func writersAreFencedByHolderEpochAndExpiry(_ kind: StoreKind) async throws {
        let (store, keep) = try await kind.make(dir.path)
        defer { store.shutdown(); withExtendedLifetime(keep) {} }
        try await offPool {
            _ = try store.open(OpenDatabaseRequest(name: "db", create: true))
            let first = try Self.acquire(store, holder: "a")
            // Another holder is refused while the lease is live.
            #expect(Self.code { try Self.acquire(store, holder: "b") } == .failedPrecondition)
            _ = try store.commit(Self.request(first, base: 0, count: 1, [Self.page(1, 1)]))
            // A commit under someone else's name, or an old epoch, is refused.
            var impostor = first
            impostor.holder = "b"
            #expect(Self.code { try store.commit(Self.request(impostor, base: 1, count: 1, [Self.page(1, 2)])) } == .failedPrecondition)
            // Released: the next holder gets a higher epoch, and the old one is fenced.
            var release = ReleaseLeaseRequest()
            release.database = "db"
            release.holder = "a"
            release.epoch = first.epoch
            #expect(try store.releaseLease(release))
            #expect(try !store.releaseLease(release))
            let second = try Self.acquire(store, holder: "b")
            #expect(second.epoch > first.epoch)
            #expect(second.info?.version == 1)
            #expect(Self.code { try store.commit(Self.request(first, base: 1, count: 1, [Self.page(1, 2)])) } == .failedPrecondition)
            // A stale base version is refused as ABORTED.
            #expect(Self.code { try store.commit(Self.request(second, base: 0, count: 1, [Self.page(1, 2)])) } == .aborted)
            // Renewal extends only the live lease of that holder and epoch.
            var renew = RenewLeaseRequest()
            renew.database = "db"
            renew.holder = "b"
            renew.epoch = second.epoch
            // Long enough for the checks below on a loaded machine, short enough to wait out.
            renew.ttlMs = 1000
            #expect(try store.renewLease(renew).epoch == second.epoch)
            var hold = HoldLeaseRequest()
            hold.database = "db"
            hold.holder = "b"
            hold.epoch = second.epoch
            #expect(try store.heldLease(hold).epoch == second.epoch)
            // Lapsed: commit, renewal and hold check are refused, and another holder may take it.
            usleep(1_300_000)
            #expect(Self.code { try store.commit(Self.request(second, base: 1, count: 1, [Self.page(1, 2)])) } == .failedPrecondition)
            #expect(Self.code { try store.renewLease(renew) } == .failedPrecondition)
            #expect(Self.code { try store.heldLease(hold) } == .failedPrecondition)
            let third = try Self.acquire(store, holder: "c")
            #expect(third.epoch > second.epoch)
            // Unknown databases are NOT_FOUND.
            #expect(Self.code { try Self.acquire(store, holder: "a", db: "nope") } == .notFound)
            #expect(try store.openExisting(OpenDatabaseRequest(name: "nope", create: false)) == nil)
        }
    }

    @Test(arguments: kinds) func aRetriedCommitGetsItsFirstOutcome(_ kind: StoreKind) async throws {
        let (store, keep) = try await kind.make(dir.path)
        defer { store.shutdown(); withExtendedLifetime(keep) {} }
        try await offPool {
            _ = try store.open(OpenDatabaseRequest(name: "db", create: true))
            let lease = try Self.acquire(store)
            let txn = Self.txn()
            let request = Self.request(lease, base: 0, count: 1, [Self.page(1, 1)], txn: txn)
            let first = try store.commit(request)
            let again = try store.commit(request)
            #expect(first.version == 1 && !first.duplicate)
            #expect(again.version == 1 && again.duplicate)
            // Even after the database moved on and the lease changed hands.
            _ = try store.commit(Self.request(lease, base: 1, count: 1, [Self.page(1, 2)]))
            var release = ReleaseLeaseRequest()
            release.database = "db"
            release.holder = lease.holder
            release.epoch = lease.epoch
            #expect(try store.releaseLease(release))
            _ = try Self.acquire(store, holder: "other")
            let late = try store.commit(request)
            #expect(late.version == 1 && late.duplicate)
            var status = GetCommitStatusRequest()
            status.database = "db"
            status.txnID = txn
            let found = try store.commitStatus(status)
            #expect(found.state == .committed && found.version == 1)
            status.txnID = Self.txn()
            #expect(try store.commitStatus(status).state == .notFound)

            // A commit refused because its lease lapsed, sent again with the same
            // id under a new lease (what the VFS does), is decided afresh and applied;
            // the very same request again gets the same refusal.
            _ = try Self.acquire(store, holder: "other", ttl: 60)
            usleep(200_000)
            let mine = try Self.acquire(store, holder: "late", ttl: 60)
            usleep(200_000)
            let again2 = Self.request(mine, base: 2, count: 1, [Self.page(1, 7)])
            #expect(Self.code { try store.commit(again2) } == .failedPrecondition)
            #expect(Self.code { try store.commit(again2) } == .failedPrecondition)
            var renewed = again2
            renewed.leaseEpoch = try Self.acquire(store, holder: "late").epoch
            let applied = try store.commit(renewed)
            #expect(applied.version == 3 && !applied.duplicate)
        }
    }

    @Test(arguments: kinds) func batchesAreSealedInOneHashChainUnderTheStoresKey(_ kind: StoreKind) async throws {
        let (store, keep) = try await kind.make(dir.path)
        defer { store.shutdown(); withExtendedLifetime(keep) {} }
        try await offPool {
            _ = try store.open(OpenDatabaseRequest(name: "db", create: true))
            let lease = try Self.acquire(store)
            let written: [[Page]] = [
                [Self.page(3, 7), Self.page(1, 1), Self.page(2, 1)], [Self.page(2, 2)], [Self.page(1, 3), Self.page(3, 3)],
            ]
            for (i, pages) in written.enumerated() {
                _ = try store.commit(Self.request(lease, base: UInt64(i), count: 3, pages))
            }
            let verifier = BatchVerifier(publicKey: store.sequencerKey.publicKey)
            var previous = BatchSeal.genesis
            for version in 1...UInt64(written.count) {
                let batch = try #require(try store.batch(database: "db", version: version))
                #expect(verifier.problem(with: batch, expectedVersion: version, previousHash: previous) == nil)
                #expect(batch.pages.map(\.number).sorted() == written[Int(version) - 1].map(\.number).sorted())
                #expect(batch.changeset == Array("changeset at \(version)".utf8))
                previous = batch.hash
            }
            #expect(try store.batch(database: "db", version: 4) == nil)
            #expect(try store.headVersion(of: "db") == 3)
        }
    }

    @Test(arguments: kinds) func theStatusListsEveryDatabaseWithItsHeadAndLease(_ kind: StoreKind) async throws {
        let (store, keep) = try await kind.make(dir.path)
        defer { store.shutdown(); withExtendedLifetime(keep) {} }
        try await offPool {
            _ = try store.open(OpenDatabaseRequest(name: "db", create: true))
            _ = try store.open(OpenDatabaseRequest(name: "other", create: true))
            let lease = try Self.acquire(store)
            _ = try store.commit(Self.request(lease, base: 0, count: 2, [Self.page(1, 1), Self.page(2, 1)]))
            let statuses = try store.databaseStatuses()
            #expect(statuses.map(\.name) == ["db", "other"])
            let db = try #require(statuses.first)
            #expect(db.version == 1 && db.pageCount == 2 && db.pageSize == 1024 && db.oldestVersion == 1)
            #expect(db.lease?.holder == "w" && db.lease?.epoch == lease.epoch && (db.lease?.msLeft ?? 0) > 60_000)
            #expect(statuses.last?.version == 0 && statuses.last?.lease == nil)
            #expect(try store.storedBytes() > 0)
            // A dropped database is not listed.
            var drop = DropDatabaseRequest()
            drop.database = "db"
            drop.holder = lease.holder
            drop.epoch = lease.epoch
            _ = try store.drop(drop)
            #expect(try store.databaseStatuses().map(\.name) == ["other"])
        }
    }

    @Test(arguments: kinds) func versionsPastTheRetentionWindowAreLetGo(_ kind: StoreKind) async throws {
        let (store, keep) = try await kind.make(dir.path) { $0.retainedVersions = 16 }
        defer { store.shutdown(); withExtendedLifetime(keep) {} }
        try await offPool {
            _ = try store.open(OpenDatabaseRequest(name: "db", create: true))
            let lease = try Self.acquire(store)
            _ = try store.commit(Self.request(lease, base: 0, count: 2, [Self.page(1, 1), Self.page(2, 1)]))
            for v in 1..<64 {
                _ = try store.commit(Self.request(lease, base: UInt64(v), count: 2, [Self.page(1, UInt8(v + 1))]))
            }
            // Pruning may run after the commit's answer: wait for the last one.
            var oldest: UInt64 = 1
            for _ in 0..<250 {
                oldest = try store.oldestVersion(of: "db")
                if oldest == 64 - 16 { break }
                usleep(20_000)
            }
            #expect(oldest == 64 - 16)
            #expect(Self.code { try Self.read(store, 1, [1]) } == .outOfRange)
            #expect(Self.code { try store.batch(database: "db", version: 1) } == .outOfRange)
            // What the oldest version kept sees is still there, page 2 from version 1 included.
            let atOldest = try Self.read(store, oldest, [1, 2])
            #expect(atOldest.pages.map { $0.data[100] } == [UInt8(oldest), 1])
            #expect(try Self.read(store, 64, [1, 2]).pages.map { $0.data[100] } == [64, 1])
        }
    }

    @Test(arguments: kinds) func aDropIsSealedAndTheDatabaseStartsOverEmpty(_ kind: StoreKind) async throws {
        let (store, keep) = try await kind.make(dir.path)
        defer { store.shutdown(); withExtendedLifetime(keep) {} }
        try await offPool {
            _ = try store.open(OpenDatabaseRequest(name: "db", create: true))
            let lease = try Self.acquire(store)
            _ = try store.commit(Self.request(lease, base: 0, count: 2, [Self.page(1, 1), Self.page(2, 1)]))
            var drop = DropDatabaseRequest()
            drop.database = "db"
            // Refused while another writer's lease is live.
            #expect(Self.code { try store.drop(drop) } == .failedPrecondition)
            drop.holder = lease.holder
            drop.epoch = lease.epoch
            #expect(try store.drop(drop).version == 2)
            #expect(try store.drop(drop).version == 0)  // already dropped
            #expect(try store.openExisting(OpenDatabaseRequest(name: "db", create: false)) == nil)
            let reopened = try store.open(OpenDatabaseRequest(name: "db", create: true))
            #expect(reopened.version == 2 && reopened.pageCount == 0 && reopened.oldestVersion == 2)
            // The chain goes on through the drop batch.
            let dropBatch = try #require(try store.batch(database: "db", version: 2))
            #expect(dropBatch.pages.isEmpty && dropBatch.pageCount == 0)
            let verifier = BatchVerifier(publicKey: store.sequencerKey.publicKey)
            let next = try Self.acquire(store, holder: "b")
            #expect(next.epoch > lease.epoch)
            _ = try store.commit(Self.request(next, base: 2, count: 1, [Self.page(1, 9)]))
            let after = try #require(try store.batch(database: "db", version: 3))
            #expect(verifier.problem(with: after, expectedVersion: 3, previousHash: dropBatch.hash) == nil)
            #expect(try Self.read(store, 3, [1]).pages.first?.data[100] == 9)
        }
    }

    @Test(arguments: kinds) func aCommitWakesItsDatabasesWatchers(_ kind: StoreKind) async throws {
        let (store, keep) = try await kind.make(dir.path)
        defer { store.shutdown(); withExtendedLifetime(keep) {} }
        let lease = try await offPool {
            _ = try store.open(OpenDatabaseRequest(name: "db", create: true))
            return try Self.acquire(store)
        }
        let signal = LeaseSignal()
        let watch = try store.watchVersions(of: "db", signal: signal)
        defer { store.stopWatching("db", id: watch) }
        // A fire left from the watch's start (a reconnect) is not what this test is about.
        await signal.wait(upTo: .milliseconds(300))
        let start = ContinuousClock.now
        try await offPool { _ = try store.commit(Self.request(lease, base: 0, count: 1, [Self.page(1, 1)])) }
        await signal.wait(upTo: .seconds(5))
        #expect(ContinuousClock.now - start < .seconds(2))
        #expect(try await offPool { try store.headVersion(of: "db") } == 1)
    }
}
