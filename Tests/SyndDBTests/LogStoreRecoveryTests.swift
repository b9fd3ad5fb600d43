import Foundation
import SyndProtocol
import SyndStorage
import Testing

/// The embedded log after a crash at the worst instants, made on the real
/// files: a torn tail is cut off and reported, damage anywhere an
/// acknowledged record lies stops the store from opening, and nothing damaged
/// is ever served.
@Suite struct LogStoreRecoveryTests {
    let dir = TemporaryDirectory()
    typealias C = StorageBackendConformanceTests

    var segmentPath: String { dir.path + "/log/00000001.log" }

    /// Three durable groups: the database, then versions 1 and 2.
    func writeHistory() throws {
        let backend = try LogStore(directory: dir.path + "/log")
        try C.append(backend, [.create(database: 1, name: "db")])
        try C.append(backend, [.batch(database: 1, txnID: C.txn(1), batch: C.batch(1, count: 2, [C.page(1, 1), C.page(2, 1)]))])
        try C.append(backend, [.batch(database: 1, txnID: C.txn(2), batch: C.batch(2, count: 2, [C.page(2, 2)]))])
        // The segment is allocated ahead in zeros; cut it to its records, so
        // that what follows them is what each test puts there.
        let bytes = try fileBytes()
        var end = 0
        while end + 20 <= bytes.count, bytes[end..<(end + 4)].elementsEqual([0x53, 0x59, 0x4E, 0x52]) {
            end += 20 + Int(bytes[end + 8]) | Int(bytes[end + 9]) << 8 | Int(bytes[end + 10]) << 16 | Int(bytes[end + 11]) << 24
        }
        #expect(bytes[end...].allSatisfy { $0 == 0 }, "only zeros follow the records")
        try write(Array(bytes[..<end]))
    }

    @Test func theZerosOfAnAllocatedEndAreNotATornTail() async throws {
        try await offPool {
            let backend = try LogStore(directory: dir.path + "/log")
            try C.append(backend, [.create(database: 1, name: "db")])
            try C.append(backend, [.batch(database: 1, txnID: C.txn(1), batch: C.batch(1, count: 1, [C.page(1, 0)]))])
            let allocated = try fileBytes().count
            let again = try LogStore(directory: dir.path + "/log")
            #expect(again.recovered.first?.version == 1 && again.recoveryNotes.isEmpty, "\(again.recoveryNotes)")
            #expect(try fileBytes().count == allocated, "the allocation is kept")
            try C.append(again, [.batch(database: 1, txnID: C.txn(2), batch: C.batch(2, count: 1, [C.page(1, 2)]))])
            #expect(try LogStore(directory: dir.path + "/log").recovered.first?.version == 2)
        }
    }

    /// Small groups write zeros ahead of the log's end (so that later fsyncs
    /// need no extent change): over many groups, past the segment's first
    /// allocation, the zeros never land on a record, and every version reads
    /// back after reopening.
    @Test func zerosWrittenAheadOfSmallGroupsNeverCoverARecord() async throws {
        try await offPool {
            let versions = 1_200  // about 10 MB of 8-page records: past the first 8 MiB allocated
            do {
                let backend = try LogStore(directory: dir.path + "/log")
                try C.append(backend, [.create(database: 1, name: "db")])
                for v in 1...versions {
                    let fill = UInt8(v % 251)
                    try C.append(backend, [.batch(database: 1, txnID: C.txn(v), batch: C.batch(UInt64(v), count: 8, (1...8).map { C.page($0, fill) }))])
                }
            }
            let bytes = try fileBytes()
            var end = 0
            while end + 20 <= bytes.count, bytes[end..<(end + 4)].elementsEqual([0x53, 0x59, 0x4E, 0x52]) {
                end += 20 + Int(bytes[end + 8]) | Int(bytes[end + 9]) << 8 | Int(bytes[end + 10]) << 16 | Int(bytes[end + 11]) << 24
            }
            #expect(end > 8 << 20, "the records pass the first allocation (\(end) bytes)")
            #expect(bytes.count > end && bytes[end...].allSatisfy { $0 == 0 }, "zeros, and only zeros, follow the last record")
            let again = try LogStore(directory: dir.path + "/log")
            #expect(again.recovered.first?.version == UInt64(versions) && again.recoveryNotes.isEmpty, "\(again.recoveryNotes)")
            for v in 1...versions {
                let fill = UInt8(v % 251)
                for n: UInt32 in 1...8 {
                    let page = try again.page(database: 1, number: n, version: UInt64(v))
                    #expect(page?.data == [UInt8](repeating: fill, count: 1024), "page \(n) of version \(v)")
                }
            }
        }
    }

    func fileBytes() throws -> [UInt8] { [UInt8](try Data(contentsOf: URL(fileURLWithPath: segmentPath))) }
    func write(_ bytes: [UInt8]) throws { try Data(bytes).write(to: URL(fileURLWithPath: segmentPath)) }

    @Test func garbageAfterTheLastGroupIsCutOffAndReported() async throws {
        try await offPool {
            try writeHistory()
            let intact = try fileBytes()
            try write(intact + (0..<777).map { _ in UInt8.random(in: 0...255) })
            let backend = try LogStore(directory: dir.path + "/log")
            #expect(backend.recovered.first?.version == 2)
            #expect(backend.recoveryNotes.count == 1 && backend.recoveryNotes[0].contains("torn tail of 777 bytes"), "\(backend.recoveryNotes)")
            #expect(try fileBytes() == intact, "the tail is cut off on disk")
            // Appends go on where the intact part ends, and survive the next open.
            try C.append(backend, [.batch(database: 1, txnID: C.txn(3), batch: C.batch(3, count: 2, [C.page(1, 3)]))])
            let again = try LogStore(directory: dir.path + "/log")
            #expect(again.recovered.first?.version == 3 && again.recoveryNotes.isEmpty)
            #expect(try again.page(database: 1, number: 1, version: 3)?.data.first == 3)
        }
    }

    @Test func aGroupWithoutItsGroupEndNeverHappened() async throws {
        try await offPool {
            try writeHistory()
            // The crash came after the last batch was written but before its group end was.
            let bytes = try fileBytes()
            try write(Array(bytes.dropLast(28)))
            let backend = try LogStore(directory: dir.path + "/log")
            #expect(backend.recovered.first?.version == 1, "version 2 was never acknowledged")
            #expect(backend.recoveryNotes.first?.contains("without a group end") == true, "\(backend.recoveryNotes)")
            #expect(try backend.page(database: 1, number: 2, version: 1)?.data.first == 1)
            #expect(backend.committedVersion(database: 1, txnID: C.txn(2)) == nil)
        }
    }

    @Test func aRecordCutShortByTheCrashIsATornTail() async throws {
        try await offPool {
            try writeHistory()
            let bytes = try fileBytes()
            // Somewhere inside version 2's page bytes (the last record is ~1.1 KB before its 28-byte group end).
            try write(Array(bytes.dropLast(500)))
            let backend = try LogStore(directory: dir.path + "/log")
            #expect(backend.recovered.first?.version == 1)
            #expect(backend.recoveryNotes.count == 1)
        }
    }

    @Test func damageBeforeTheLastGroupEndStopsTheStore() async throws {
        try await offPool {
            try writeHistory()
            var bytes = try fileBytes()
            // A page byte of version 1, which was acknowledged: version 2's group follows it.
            let at = bytes.count / 3
            bytes[at] ^= 0xFF
            try write(bytes)
            #expect {
                _ = try LogStore(directory: dir.path + "/log")
            } throws: { error in
                let message = "\(error)"
                return message.contains("is damaged") && message.contains("00000001.log") && message.contains("acknowledged commits may lie beyond")
            }
        }
    }

    @Test func damageInTheLastGroupWithItsGroupEndIntactIsDamageToo() async throws {
        try await offPool {
            try writeHistory()
            var bytes = try fileBytes()
            // A page byte of version 2: its group end made it durable, so it was acknowledged.
            bytes[bytes.count - 28 - 100] ^= 0x01
            try write(bytes)
            #expect(throws: SequencerError.self) { _ = try LogStore(directory: dir.path + "/log") }
        }
    }

    @Test func aMissingSegmentStopsTheStore() async throws {
        try await offPool {
            try writeHistory()
            try Data().write(to: URL(fileURLWithPath: dir.path + "/log/00000003.log"))
            #expect {
                _ = try LogStore(directory: dir.path + "/log")
            } throws: { error in "\(error)".contains("00000002.log is missing") }
        }
    }

    @Test func aPageDamagedAfterOpeningIsNeverServed() async throws {
        try await offPool {
            try writeHistory()
            let backend = try LogStore(directory: dir.path + "/log")
            var bytes = try fileBytes()
            // The disk rots under a running store: the last page image's bytes.
            bytes[bytes.count - 28 - 10] ^= 0x01
            try write(bytes)
            #expect {
                _ = try backend.page(database: 1, number: 2, version: 2)
            } throws: { error in (error as? SequencerError)?.code == .dataLoss }
            #expect(throws: SequencerError.self) { _ = try backend.batch(database: 1, version: 2) }
        }
    }

    /// A large batch's pages go to a pages file of their own before its record
    /// enters the log: a file no record refers to is a crash's leftover.
    @Test func pagesFilesOfLargeBatchesAreCheckedAndLeftoversRemoved() async throws {
        try await offPool {
            let big = C.batch(1, count: 2000, (1...2000).map { C.page(UInt32($0), UInt8(truncatingIfNeeded: $0)) })
            do {
                let backend = try LogStore(directory: dir.path + "/log")
                try C.append(backend, [.create(database: 1, name: "db"), .batch(database: 1, txnID: C.txn(1), batch: big)])
            }
            let pagesFile = dir.path + "/log/00000001.pages"
            #expect(FileManager.default.fileExists(atPath: pagesFile), "the large batch's pages are in a pages file")
            let leftover = dir.path + "/log/00000007.pages"
            try Data([1, 2, 3]).write(to: URL(fileURLWithPath: leftover))
            do {
                let backend = try LogStore(directory: dir.path + "/log")
                #expect(backend.recoveryNotes.contains { $0.contains("00000007.pages") }, "\(backend.recoveryNotes)")
                #expect(!FileManager.default.fileExists(atPath: leftover))
                #expect(try backend.batch(database: 1, version: 1) == big)
                // New pages files do not reuse the leftover's number.
                try C.append(backend, [.batch(database: 1, txnID: C.txn(2), batch: C.batch(2, count: 2000, big.pages.map { var p = $0; p.data[0] = 0xEE; return Page(number: p.number, data: p.data) }))])
                #expect(FileManager.default.fileExists(atPath: dir.path + "/log/00000008.pages"))
            }
            try FileManager.default.removeItem(atPath: pagesFile)
            #expect {
                _ = try LogStore(directory: dir.path + "/log")
            } throws: { error in "\(error)".contains("00000001.pages") }
        }
    }
}
