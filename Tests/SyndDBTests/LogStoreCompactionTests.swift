import Dispatch
import Foundation
import Synchronization
import SyndProtocol
import SyndStorage
import Testing

/// The log gives back the space of what reads no longer see, on the real
/// files: after compaction every kept version reads exactly as before (pages,
/// sealed batches, commit ids), so does the store reopened from the rewritten
/// files, and a crash at any step of a rewrite leaves a store that opens whole.
@Suite struct LogStoreCompactionTests {
    let dir = TemporaryDirectory()
    typealias C = StorageBackendConformanceTests
    var logPath: String { dir.path + "/log" }

    /// Small segments, compaction only when asked (so that the test decides when).
    static func options(stop: (@Sendable (CompactionStep) -> Bool)? = nil) -> LogStoreOptions {
        var o = LogStoreOptions()
        o.segmentLimit = 128 << 10
        o.compactAutomatically = false
        o.compactionStop = stop
        return o
    }

    /// What was appended, to check reads against.
    final class Model: @unchecked Sendable {
        // @unchecked: used by one test thread at a time.
        var batches: [UInt64: Batch] = [:]
        var oldest: UInt64 = 0
        var head: UInt64 = 0

        /// The bytes of page `number` a read at `version` must see (nil: never written or cut off).
        func expected(_ number: UInt32, at version: UInt64) -> [UInt8]? {
            var v = version
            while v >= 1, let b = batches[v] {
                if number > b.pageCount { return nil }
                if let p = b.pages.first(where: { $0.number == number }) { return p.data }
                v -= 1
            }
            return nil
        }
    }

    /// Appends versions `from...to` of database 1: each rewrites 3 of 24
    /// pages with its own bytes, shrinks to 16 pages now and then (cutting
    /// off the rest) and grows back, carries a changeset, and every 4th
    /// version is followed by a prune keeping the last `retain`.
    ///
    /// `big` names the versions that instead write pages 1...k of 4 KiB (over
    /// `LogRecord.inlineLimit`: a pages file of their own); with it, the
    /// database has 280 more pages, which large batches fill.
    func appendHistory(_ store: LogStore, _ model: Model, from: UInt64, to: UInt64, retain: UInt64,
                       big: ((UInt64) -> UInt32?)? = nil) throws {
        for v in from...to {
            let shrink = (v / 40) % 3 == 1
            let count: UInt32 = (shrink ? 16 : 24) + (big == nil ? 0 : 280)
            var pages: [Page] = []
            if let k = big?(v) {
                pages = (1...min(k, count)).map { n in Page(number: n, data: (0..<4096).map { UInt8(truncatingIfNeeded: Int(n) &* 7 &+ $0 &+ Int(v)) }) }
            } else {
                let first = UInt32(v % UInt64(count - 2)) + 1
                pages = (first...(first + 2)).map { n in Page(number: n, data: (0..<1024).map { UInt8(truncatingIfNeeded: Int(n) &* 31 &+ $0 &+ Int(v)) }) }
            }
            var batch = C.batch(v, count: count, pages)
            batch.changeset = (0..<300).map { UInt8(truncatingIfNeeded: $0 &* Int(v)) }
            try C.append(store, [.batch(database: 1, txnID: C.txn(Int(v)), batch: batch)])
            model.batches[v] = batch
            model.head = v
            if v % 4 == 0, v > retain {
                try C.append(store, [.prune(database: 1, keepFrom: v - retain)])
                model.oldest = v - retain
            }
        }
    }

    /// Every kept version reads as the model says: pages, batches, commit ids, sizes.
    func expectReads(_ store: LogStore, _ model: Model, _ context: String) throws {
        let maxPage: UInt32 = 24 + 280
        for v in max(1, model.oldest)...model.head {
            let numbers = Array(1...maxPage)
            let read = try store.pages(database: 1, numbers: numbers, version: v)
            for (n, page) in zip(numbers, read) {
                let want = model.expected(n, at: v)
                if page?.data != want {
                    Issue.record("\(context): page \(n) at version \(v) reads \(page.map { "\($0.data.count) bytes" } ?? "nil"), not \(want.map { "its \($0.count) bytes" } ?? "nil")")
                    return
                }
            }
            let batch = try store.batch(database: 1, version: v)
            #expect(batch == model.batches[v], "\(context): batch \(v) reads back exactly")
            #expect(store.committedVersion(database: 1, txnID: C.txn(Int(v))) == v, "\(context): commit id of \(v)")
            #expect(store.sizes(database: 1, version: v).map { $0.pageCount } == model.batches[v]!.pageCount)
            #expect(store.committedAt(database: 1, version: v) == model.batches[v]!.committedAtMs, "\(context): commit time of \(v)")
        }
        if model.oldest > 1 {
            #expect(try store.batch(database: 1, version: model.oldest - 1) == nil, "\(context): a batch past the window is gone")
        }
    }

    /// Bytes of every file but the newest segment (which appends allocate ahead, megabytes at a time).
    func folderBytes() throws -> Int {
        let all = try FileManager.default.contentsOfDirectory(atPath: logPath)
        let newest = all.filter { $0.hasSuffix(".log") }.max()
        return try all.filter { $0 != newest }.reduce(0) {
            $0 + ((try FileManager.default.attributesOfItem(atPath: logPath + "/" + $1)[.size] as? Int) ?? 0)
        }
    }

    /// Compacts until a pass rewrites nothing, then checks that further
    /// passes find nothing either: a copy is not rewritten again until more of it dies.
    func expectSettles(_ store: LogStore, _ context: String) throws {
        var passes = 0
        while store.compact().segments > 0, passes < 6 { passes += 1 }
        let bytes = try folderBytes()
        for _ in 0..<3 {
            let again = store.compact()
            #expect(again.segments == 0, "\(context): a pass with nothing new to free rewrote \(again.segments) segment(s)")
        }
        #expect(try folderBytes() == bytes, "\(context)")
    }

    func names(_ suffix: String) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: logPath).filter { $0.hasSuffix(suffix) }.sorted()
    }

    @Test func overwrittenPagesAndOldBatchesGiveBackTheirSpaceAndKeptVersionsReadTheSame() async throws {
        try await offPool {
            let model = Model()
            do {
                let store = try LogStore(directory: logPath, options: Self.options())
                try C.append(store, [.create(database: 1, name: "db"), .epochCeiling(database: 1, ceiling: 77)])
                try appendHistory(store, model, from: 1, to: 700, retain: 30)
                let before = try folderBytes()
                let report = store.compact()
                let after = try folderBytes()
                #expect(report.failures.isEmpty, "\(report.failures)")
                #expect(report.segments >= 5, "closed segments were rewritten (\(report.segments))")
                // What reads can reach: 24 pages of 1 KiB and 31 batches of ~3.5 KB (the newest segment aside).
                #expect(after < 200 << 10, "the log shrank from \(before) to \(after) bytes")
                #expect(before > 2 * after)
                // Adjacent small copies were merged: a few files, not one per segment ever written.
                let logs = try names(".log")
                #expect(logs.count <= 3 && report.filesRemoved > 0, "\(logs) \(report)")
                try expectReads(store, model, "after compaction")
                try expectSettles(store, "small pages")
                // And a second time, over segments already rewritten once.
                try appendHistory(store, model, from: 701, to: 1000, retain: 30)
                store.compact()
                try expectReads(store, model, "after a second compaction")
            }
            let again = try LogStore(directory: logPath, options: Self.options())
            let db = try #require(again.recovered.first)
            #expect(db.version == 1000 && db.oldestVersion == model.oldest && db.epochCeiling == 77 && again.recoveryNotes.isEmpty,
                    "\(db) \(again.recoveryNotes)")
            try expectReads(again, model, "reopened")
            // The reopened store appends and compacts on.
            try appendHistory(again, model, from: 1001, to: 1200, retain: 30)
            #expect(again.compact().failures.isEmpty)
            try expectReads(again, model, "reopened, after more")
            try expectReads(try LogStore(directory: logPath, options: Self.options()), model, "reopened twice")
        }
    }

    @Test func pagesFilesOfLargeBatchesAreRemovedOrFoldedOnceMostlyDead() async throws {
        try await offPool {
            let model = Model()
            let store = try LogStore(directory: logPath, options: Self.options())
            try C.append(store, [.create(database: 1, name: "db")])
            // Large batches (~1.2 MB, each in a pages file of its own) at 25, 50, 75, 100 and 125 rewrite all
            // 304 pages; the one at 150 rewrites 270 of them. Small ones between.
            try appendHistory(store, model, from: 1, to: 160, retain: 6, big: { $0 % 25 == 0 ? ($0 == 150 ? 270 : 304) : nil })
            let pagesBefore = try names(".pages")
            #expect(pagesBefore.count == 6)
            let report = store.compact()
            #expect(report.failures.isEmpty, "\(report.failures)")
            // 25-100 were superseded whole: their files are gone. Of 125's, reads still see 34 pages (271-304):
            // they move into the segment's copy and the file goes too. 150's is what reads see: it stays.
            let pagesAfter = try names(".pages")
            #expect(pagesAfter == ["00000006.pages"] && report.pagesFilesRemoved == 5, "\(pagesBefore) -> \(pagesAfter), \(report)")
            #expect(try store.page(database: 1, number: 290, version: 160)?.data == model.batches[125]!.pages[289].data)
            // Compacted records that point into pages files are not taken for dead weight.
            try expectSettles(store, "large batches")
            try expectReads(store, model, "after compaction")
            let reopened = try LogStore(directory: logPath, options: Self.options())
            #expect(reopened.recoveryNotes.isEmpty, "\(reopened.recoveryNotes)")
            try expectReads(reopened, model, "reopened")
        }
    }

    /// A bulk load past the window: its images stay in their pages files, and
    /// the copy holds a compacted record of thousands of entries pointing at
    /// them. That copy is all live; it must not be taken for dead weight and
    /// rewritten again and again.
    @Test func aCopyPointingIntoPagesFilesIsNotRewrittenAgain() async throws {
        try await offPool {
            let store = try LogStore(directory: logPath, options: Self.options())
            try C.append(store, [.create(database: 1, name: "db")])
            var batches: [Batch] = []
            for v in UInt64(1)...8 {
                // 300 new pages of 4 KiB each: over the inline limit, so a pages file each; all stay what reads see.
                let first = UInt32(v - 1) * 300 + 1
                let pages = (first...(first + 299)).map { n in Page(number: n, data: [UInt8](repeating: UInt8(truncatingIfNeeded: n), count: 4096)) }
                batches.append(C.batch(v, count: 2400, pages))
            }
            for b in batches { try C.append(store, [.batch(database: 1, txnID: C.txn(Int(b.version)), batch: b)]) }
            // Small versions after them, to close segments and move the window past the load.
            for v in UInt64(9)...200 {
                var b = C.batch(v, count: 2400, [Page(number: 1, data: [UInt8](repeating: UInt8(truncatingIfNeeded: v), count: 1024))])
                b.changeset = [UInt8](repeating: 7, count: 1500)
                try C.append(store, [.batch(database: 1, txnID: C.txn(Int(v)), batch: b)])
                if v % 4 == 0 { try C.append(store, [.prune(database: 1, keepFrom: v - 4)]) }
            }
            let first = store.compact()
            #expect(first.segments > 0 && first.failures.isEmpty, "\(first)")
            try expectSettles(store, "a load past the window")
            for n: UInt32 in [2, 300, 301, 1777, 2400] {
                #expect(try store.page(database: 1, number: n, version: 200)?.data == [UInt8](repeating: UInt8(truncatingIfNeeded: n), count: 4096), "page \(n)")
            }
            let reopened = try LogStore(directory: logPath, options: Self.options())
            #expect(try reopened.page(database: 1, number: 1777, version: 200)?.data == [UInt8](repeating: UInt8(truncatingIfNeeded: 1777), count: 4096))
        }
    }

    @Test(arguments: [CompactionStep.copyWritten, .renamed])
    func aCrashAtAnyStepOfARewriteLeavesAStoreThatOpensWhole(_ step: CompactionStep) async throws {
        try await offPool {
            let model = Model()
            let store = try LogStore(directory: logPath, options: Self.options(stop: { $0 == step }))
            try C.append(store, [.create(database: 1, name: "db")])
            try appendHistory(store, model, from: 1, to: 400, retain: 10, big: { $0 % 50 == 0 ? 304 : nil })
            let report = store.compact()
            #expect(report.segments == 0, "the hook stopped the first rewrite")
            switch step {
            case .copyWritten:
                #expect(try names(LogStore.compactingSuffix).count == 1, "the copy waits beside its segment")
            case .renamed:
                #expect(try names(LogStore.compactingSuffix).isEmpty)
            }
            let logsBefore = try names(".log")
            // The process dies here; another opens the folder.
            let reopened = try LogStore(directory: logPath, options: Self.options())
            #expect(try names(LogStore.compactingSuffix).isEmpty, "a leftover copy is removed")
            if step == .copyWritten {
                #expect(reopened.recoveryNotes.contains { $0.contains("a compaction a crash interrupted") }, "\(reopened.recoveryNotes)")
                #expect(try names(".log") == logsBefore)
            } else {
                // The first rewrite merged several segments into the first: the others are removed now.
                #expect(reopened.recoveryNotes.contains { $0.contains("had merged it into") }, "\(reopened.recoveryNotes)")
                #expect(try names(".log").count < logsBefore.count)
            }
            try expectReads(reopened, model, "after a crash at \(step)")
            #expect(reopened.compact().failures.isEmpty)
            try expectReads(reopened, model, "compacted after the crash")
            try expectReads(try LogStore(directory: logPath, options: Self.options()), model, "reopened after that")
        }
    }

    @Test func readsDuringARewriteSeeTheRightBytes() async throws {
        try await offPool {
            let model = Model()
            let store = try LogStore(directory: logPath, options: Self.options())
            try C.append(store, [.create(database: 1, name: "db")])
            try appendHistory(store, model, from: 1, to: 600, retain: 40, big: { $0 % 100 == 0 ? 304 : nil })
            let stop = Atomic(false)
            let problems = Mutex<[String]>([])
            let readers = (0..<2).map { r in
                Thread {
                    var i = 0
                    while !stop.load(ordering: .relaxed) {
                        i += 1
                        let v = model.head - UInt64((i + r) % 30)
                        let n = UInt32((i * 7 + r) % 300) + 1
                        do {
                            let page = try store.page(database: 1, number: n, version: v)
                            if page?.data != model.expected(n, at: v) { problems.withLock { $0.append("page \(n) at \(v)") } }
                            if i % 50 == 0, try store.batch(database: 1, version: v) != model.batches[v] {
                                problems.withLock { $0.append("batch \(v)") }
                            }
                        } catch {
                            problems.withLock { $0.append("\(error)") }
                        }
                    }
                }
            }
            for t in readers { t.start() }
            let report = store.compact()
            stop.store(true, ordering: .relaxed)
            usleep(50_000)
            #expect(report.segments > 0 && report.failures.isEmpty, "\(report)")
            #expect(problems.withLock { $0 }.isEmpty, "\(problems.withLock { Array($0.prefix(5)) })")
        }
    }

    /// A prune needs no fsync of its own: it is written with the next group,
    /// and on its own only if no group comes soon (it still takes effect).
    @Test func aPruneRidesWithTheNextGroupInsteadOfAnFsyncOfItsOwn() async throws {
        try await offPool {
            let store = try LogStore(directory: logPath, options: Self.options())
            try C.append(store, [.create(database: 1, name: "db")])
            for v in 1...3 { try C.append(store, [.batch(database: 1, txnID: C.txn(v), batch: C.batch(UInt64(v), count: 1, [C.page(1, UInt8(v))]))]) }
            let before = store.groupsWritten
            // As the sequencer does: the prune is appended when a commit is durable (from its
            // completion, on the log's writer thread), and the next commit follows at once.
            let pruned = DispatchSemaphore(value: 0)
            let committed = DispatchSemaphore(value: 0)
            store.append(.batch(database: 1, txnID: C.txn(4), batch: C.batch(4, count: 1, [C.page(1, 4)]))) { _ in
                store.append(.prune(database: 1, keepFrom: 2)) { _ in pruned.signal() }
                committed.signal()
            }
            committed.wait()
            try C.append(store, [.batch(database: 1, txnID: C.txn(5), batch: C.batch(5, count: 1, [C.page(1, 5)]))])
            pruned.wait()
            #expect(store.groupsWritten - before == 2, "two commits and a prune: two fsyncs, not three")
            #expect(try store.batch(database: 1, version: 1) == nil && store.batch(database: 1, version: 2) != nil)
            // A prune with nothing after it is written alone, soon.
            let started = ContinuousClock.now
            try C.append(store, [.prune(database: 1, keepFrom: 4)])
            #expect(ContinuousClock.now - started < .seconds(2))
            #expect(store.groupsWritten - before == 3)
            #expect(try store.batch(database: 1, version: 3) == nil && store.page(database: 1, number: 1, version: 4)?.data.first == 4)
            let reopened = try LogStore(directory: logPath, options: Self.options())
            #expect(reopened.recovered.first?.oldestVersion == 4 && reopened.recovered.first?.version == 5)
        }
    }

    @Test func compactionRunsByItselfAfterPrunes() async throws {
        try await offPool {
            let model = Model()
            var options = Self.options()
            options.compactAutomatically = true
            let store = try LogStore(directory: logPath, options: options)
            try C.append(store, [.create(database: 1, name: "db")])
            try appendHistory(store, model, from: 1, to: 600, retain: 30)
            // Passes run in the background after prunes, paced by their own cost (slower on a busy
            // machine): wait for the folder to stay the same for a second (a minute at most).
            var bytes = try folderBytes()
            var still = 0
            for _ in 0..<600 where still < 10 {
                usleep(100_000)
                let now = try folderBytes()
                still = now == bytes ? still + 1 : 0
                bytes = now
            }
            // The background passes ran to the end by themselves: a pass asked for now finds nothing
            // left to rewrite, and most of the 2.4 MB written is given back.
            let asked = store.compact()
            #expect(asked.segments == 0, "background compaction left work behind: \(asked)")
            #expect(bytes < 600 << 10, "about 2.4 MB written, \(bytes) bytes kept")
            try expectReads(store, model, "compacted in the background")
        }
    }
}
