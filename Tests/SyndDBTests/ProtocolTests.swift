import Foundation
import SwiftProtobuf
import SyndClient
import SyndGRPC
import SyndHTTP2
import SyndProtocol
import Testing

/// The Foundation-free client codec against the code generated from proto/.
@Suite struct ProtocolCodecTests {
    @Test func commitRequestMatchesGeneratedCodeByteForByte() throws {
        var hand = CommitRequest()
        hand.database = "app/main"
        hand.baseVersion = 41
        hand.leaseEpoch = 7
        hand.txnID = Array(0..<16)
        hand.pages = [Page(number: 1, data: [UInt8](repeating: 3, count: 512)), Page(number: 9, data: [UInt8](repeating: 0, count: 512))]
        hand.pageCount = 9
        hand.pageSize = 512
        hand.changeset = [1, 2, 3]
        hand.holder = "host/1/abc"

        var generated = Synddb_V1_CommitRequest()
        generated.database = "app/main"
        generated.baseVersion = 41
        generated.leaseEpoch = 7
        generated.txnID = Data(0..<16)
        generated.pages = hand.pages.map { p in
            var g = Synddb_V1_Page()
            g.number = p.number
            g.data = Data(p.data)
            g.checksum = p.checksum
            return g
        }
        generated.pageCount = 9
        generated.pageSize = 512
        generated.changeset = Data([1, 2, 3])
        generated.holder = "host/1/abc"

        let generatedBytes: [UInt8] = try generated.serializedBytes()
        #expect(hand.serializedBytes() == generatedBytes)
        #expect(try CommitRequest(serializedBytes: generatedBytes) == hand)
    }

    @Test func holdLeaseMessagesMatchGeneratedCodeByteForByte() throws {
        var hand = HoldLeaseRequest()
        hand.database = "app/main"
        hand.holder = "host/1/abc"
        hand.epoch = 1 << 33
        var generated = Synddb_V1_HoldLeaseRequest()
        generated.database = "app/main"
        generated.holder = "host/1/abc"
        generated.epoch = 1 << 33
        let generatedBytes: [UInt8] = try generated.serializedBytes()
        #expect(hand.serializedBytes() == generatedBytes)
        #expect(try HoldLeaseRequest(serializedBytes: generatedBytes) == hand)

        var event = Synddb_V1_HoldLeaseEvent()
        event.lease.database = "app/main"
        event.lease.holder = "host/1/abc"
        event.lease.epoch = 1 << 33
        event.lease.ttlMs = 10_000
        event.lease.info.version = 7
        let eventBytes: [UInt8] = try event.serializedBytes()
        var lease = Lease()
        lease.database = "app/main"
        lease.holder = "host/1/abc"
        lease.epoch = 1 << 33
        lease.ttlMs = 10_000
        lease.info = DatabaseInfo()
        lease.info?.version = 7
        var handEvent = HoldLeaseEvent()
        handEvent.lease = lease
        #expect(handEvent.serializedBytes() == eventBytes)
        #expect(try HoldLeaseEvent(serializedBytes: eventBytes).lease?.info?.version == 7)
    }

    @Test func everyAnswerDecodesFromGeneratedCode() throws {
        var lease = Synddb_V1_Lease()
        lease.database = "d"
        lease.holder = "h"
        lease.epoch = 1 << 40
        lease.ttlMs = 10_000
        lease.info.version = 12
        lease.info.pageSize = 65536
        lease.info.pageCount = 3
        let decodedLease = try Lease(serializedBytes: try lease.serializedBytes() as [UInt8])
        #expect(decodedLease.epoch == 1 << 40 && decodedLease.info?.pageSize == 65536 && decodedLease.info?.version == 12)

        var read = Synddb_V1_ReadPagesResponse()
        read.version = 5
        read.pageSize = 1024
        read.pageCount = 2
        var page = Synddb_V1_Page()
        page.number = 2
        page.data = Data(repeating: 9, count: 1024)
        page.checksum = CRC32C.checksum([UInt8](repeating: 9, count: 1024))
        read.pages = [page]
        let decodedRead = try ReadPagesResponse(serializedBytes: try read.serializedBytes() as [UInt8])
        #expect(decodedRead.pages.count == 1 && decodedRead.pages[0].isIntact && decodedRead.pageCount == 2)

        var caps = Synddb_V1_Capabilities()
        caps.protocolVersion = 1
        caps.pageSizes = [512, 65536]
        caps.features = ["lease-epoch", "crc32c"]
        let decodedCaps = try Capabilities(serializedBytes: try caps.serializedBytes() as [UInt8])
        #expect(decodedCaps.pageSizes == [512, 65536] && decodedCaps.features == ["lease-epoch", "crc32c"])

        var status = Synddb_V1_GetCommitStatusResponse()
        status.state = .committed
        status.version = 3
        let decodedStatus = try GetCommitStatusResponse(serializedBytes: try status.serializedBytes() as [UInt8])
        #expect(decodedStatus.state == .committed && decodedStatus.version == 3)
    }

    @Test func pastStateOpensMatchGeneratedCode() throws {
        var open = OpenDatabaseRequest(name: "d", create: false)
        open.atVersion = 41
        open.atTimeMs = 1_795_428_930_250
        let generated = try Synddb_V1_OpenDatabaseRequest(serializedBytes: open.serializedBytes())
        #expect(generated.atVersion == 41 && generated.atTimeMs == 1_795_428_930_250 && generated.name == "d")
        var info = Synddb_V1_DatabaseInfo()
        info.version = 41
        info.committedAtMs = 1_795_428_930_250
        let decoded = try DatabaseInfo(serializedBytes: try info.serializedBytes() as [UInt8])
        #expect(decoded.version == 41 && decoded.committedAtMs == 1_795_428_930_250)
    }

    @Test func statusAndForcedDropMatchGeneratedCode() throws {
        var request = GetStatusRequest()
        request.database = "tenant1/app"
        #expect(try Synddb_V1_GetStatusRequest(serializedBytes: request.serializedBytes()).database == "tenant1/app")
        var drop = DropDatabaseRequest()
        drop.database = "d"
        drop.force = true
        let generatedDrop = try Synddb_V1_DropDatabaseRequest(serializedBytes: drop.serializedBytes())
        #expect(generatedDrop.force && generatedDrop.database == "d")

        var one = Synddb_V1_DatabaseStatus()
        one.name = "a"
        one.version = 12
        one.oldestVersion = 3
        one.pageSize = 4096
        one.pageCount = 7
        one.leaseHolder = "vm/1/2"
        one.leaseEpoch = 9
        one.leaseMsLeft = 8_500
        one.followStreams = 2
        one.followerLagVersions = 1
        var response = Synddb_V1_GetStatusResponse()
        response.databases = [one, Synddb_V1_DatabaseStatus.with { $0.name = "b" }]
        response.store = "/var/lib/synd"
        response.storeBytes = 1 << 33
        response.connections = 5
        let decoded = try GetStatusResponse(serializedBytes: try response.serializedBytes() as [UInt8])
        #expect(decoded.databases.count == 2 && decoded.store == "/var/lib/synd" && decoded.storeBytes == 1 << 33 && decoded.connections == 5)
        let a = decoded.databases[0]
        #expect(a.name == "a" && a.version == 12 && a.oldestVersion == 3 && a.pageSize == 4096 && a.pageCount == 7)
        #expect(a.leaseHolder == "vm/1/2" && a.leaseEpoch == 9 && a.leaseMsLeft == 8_500 && a.followStreams == 2 && a.followerLagVersions == 1)
        #expect(decoded.databases[1].name == "b" && decoded.databases[1].leaseHolder.isEmpty)
        // And back: what the sequencer sends decodes the same in generated code.
        let back = try Synddb_V1_GetStatusResponse(serializedBytes: decoded.serializedBytes())
        #expect(back == response)
    }

    /// RFC 3339 both ways, checked against Python's datetime.
    @Test func timesParseAndFormatAsRFC3339() {
        let cases: [(String, UInt64)] = [
            ("2026-11-23T10:15:30.250Z", 1_795_428_930_250),
            ("2026-11-23T11:15:30.250+01:00", 1_795_428_930_250),
            ("2026-11-23T05:45:30.250-04:30", 1_795_428_930_250),
            ("2026-11-23 10:15:30.25z", 1_795_428_930_250),
            ("2024-02-29T23:59:59.999Z", 1_709_251_199_999),
            ("2000-03-01T00:00:00Z", 951_868_800_000),
            ("1795428930250", 1_795_428_930_250),
        ]
        for (text, ms) in cases { #expect(UnixTime.parse(text) == ms, "\(text)") }
        for ms: UInt64 in [0, 951_868_800_000, 1_709_251_199_999, 1_795_428_930_250] {
            #expect(UnixTime.parse(UnixTime.format(ms)) == ms)
        }
        #expect(UnixTime.format(1_795_428_930_250) == "2026-11-23T10:15:30.250Z")
        for bad in ["", "2026-11-23", "2026-11-23T10:15:30", "2023-02-29T00:00:00Z", "2026-13-01T00:00:00Z",
                    "2026-11-23T24:00:00Z", "2026-11-23T10:15:30.Z", "2026-11-23T10:15:30+0100", "1e9", "-5"] {
            #expect(UnixTime.parse(bad) == nil, "\(bad)")
        }
    }

    @Test func truncatedInputIsAnErrorNotACrash() {
        let bytes = CommitRequest().serializedBytes() + [0x2A, 0xFF, 0xFF, 0x03]  // field 5, length past the end
        #expect(throws: ProtocolError.self) { try CommitRequest(serializedBytes: bytes) }
        #expect(throws: ProtocolError.self) { try Page(serializedBytes: [0x08, 0x80, 0x80]) }
    }

    /// The sequencer decodes a Commit request as its bytes arrive
    /// (`IncrementalDecoder`); whatever the bytes and however they are cut up,
    /// it must agree with decoding them whole: the same message, or a refusal.
    @Test func incrementalDecodingAgreesWithWholeDecodingAtAnyChunking() throws {
        var request = CommitRequest()
        request.database = "app/main"
        request.baseVersion = 300
        request.leaseEpoch = 1 << 40
        request.txnID = Array(0..<16)
        request.pages = (1...5).map { n in Page(number: UInt32(n), data: [UInt8](repeating: UInt8(n), count: 512)) }
        request.pageCount = 5
        request.pageSize = 512
        request.changeset = (0..<3000).map { UInt8(truncatingIfNeeded: $0 * 7) }
        request.holder = "host/1/abc"
        request.schema = [SchemaObject(type: "table", name: "t", tableName: "t", sql: "CREATE TABLE t(a)")]
        request.unauditedTables = ["u"]
        let valid = request.serializedBytes()
        var extras: [[UInt8]] = [
            valid,
            [],
            // An unknown varint, fixed32 and fixed64 field, and an unknown length-delimited one.
            valid + [0xF8, 0x01, 0x96, 0x01] + [0xFD, 0x01, 1, 2, 3, 4] + [0xF9, 0x01] + [UInt8](repeating: 9, count: 8) + [0xFA, 0x01, 3, 1, 2, 3],
            // The changeset twice (the last wins), then empty (it is cleared).
            valid + [0x42, 2, 0xAA, 0xBB],
            valid + [0x42, 0],
            // The changeset's field number with another wire type is skipped, as in a whole decode.
            valid + [0x40, 0x05],
        ]
        var rng = SplitMix(seed: 7)
        for _ in 0..<300 {
            // Damage: a flipped byte, a cut, or junk appended.
            var bytes = valid
            switch rng.next() % 3 {
            case 0:
                let at = Int(rng.next() % UInt64(bytes.count))
                bytes[at] ^= UInt8(truncatingIfNeeded: rng.next() | 1)
            case 1: bytes.removeLast(Int(rng.next() % UInt64(bytes.count)))
            default: bytes += (0..<Int(rng.next() % 12)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            }
            extras.append(bytes)
        }
        var accepted = 0
        for bytes in extras {
            let whole = try? CommitRequest(serializedBytes: bytes)
            for chunking in 0..<4 {
                var decoder = IncrementalDecoder<CommitRequest>(length: bytes.count, direct: (8, \.changeset))
                var incremental: CommitRequest?
                do {
                    var at = 0
                    while at < bytes.count {
                        let n = chunking == 0 ? bytes.count : min(bytes.count - at, 1 + Int(rng.next() % UInt64(chunking == 1 ? 3 : 700)))
                        try bytes[at..<(at + n)].withUnsafeBytes { try decoder.append($0) }
                        at += n
                    }
                    incremental = try decoder.finish()
                } catch {
                    incremental = nil
                }
                let agree = incremental == whole  // compared first, so a failure does not print both messages whole
                #expect(agree, "bytes \(bytes.count), chunking \(chunking): incremental \(incremental == nil ? "refused" : "decoded"), whole \(whole == nil ? "refused" : "decoded")")
            }
            if whole != nil { accepted += 1 }
        }
        // Both outcomes were exercised.
        #expect(accepted > 6 && accepted < extras.count)
        #expect(try CommitRequest(serializedBytes: extras[3]).changeset == [0xAA, 0xBB])
        #expect(try CommitRequest(serializedBytes: extras[5]).changeset == request.changeset)
        // More bytes than the framing announced is an error, not an overrun.
        var short = IncrementalDecoder<CommitRequest>(length: 2, direct: (8, \.changeset))
        #expect(throws: ProtocolError.self) { try valid.withUnsafeBytes { try short.append($0) } }
    }

    /// A commit's body is encoded as it is sent (`CommitBody`: the small
    /// fields first, then the changeset, from the request or a file-backed
    /// source, then the pages read one at a time). Read in uneven pieces it
    /// must be one gRPC frame, of the generic encoding's length, that decodes
    /// (whole, and as the server decodes it) to exactly the request.
    @Test func commitBodyFramesTheRequestAtAnyReadSize() {
        final class Pages: CommitPages {
            let pageSize: Int
            let numbers: [UInt32]
            let checksums: [UInt32]
            let data: [[UInt8]]
            var failure: String? { nil }
            init(_ pages: [Page], pageSize: Int) {
                self.pageSize = pageSize
                numbers = pages.map(\.number)
                checksums = pages.map(\.checksum)
                data = pages.map(\.data)
            }
            func read(_ index: Int, into buffer: UnsafeMutableRawBufferPointer) -> Bool {
                data[index].withUnsafeBytes { buffer.copyMemory(from: $0) }
                return true
            }
        }
        final class Changeset: CommitChangeset {
            let bytes: [UInt8]
            var failure: String? { nil }
            init(_ bytes: [UInt8]) { self.bytes = bytes }
            var count: Int { bytes.count }
            func read(at offset: Int, into buffer: UnsafeMutableRawBufferPointer) -> Bool {
                bytes.withUnsafeBytes { buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[offset..<(offset + buffer.count)])) }
                return true
            }
        }
        var rng = SplitMix(seed: 11)
        for (pageSize, pageCount, changesetBytes) in [(512, 0, 0), (512, 3, 0), (4096, 40, 300), (65536, 5, 70_000)] {
            var request = CommitRequest()
            request.database = "app/main"
            request.baseVersion = 9
            request.txnID = Array(0..<16)
            request.pageSize = UInt32(pageSize)
            request.pageCount = UInt32(pageCount)
            request.holder = "h"
            let pages = (0..<pageCount).map { n in Page(number: UInt32(n + 1) * 3, data: (0..<pageSize).map { _ in UInt8(truncatingIfNeeded: rng.next()) }) }
            let changeset = (0..<changesetBytes).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            var whole = request
            whole.pages = pages
            whole.changeset = changeset
            let expectedLength = 5 + whole.serializedBytes().count
            var inRequest = request
            inRequest.changeset = changeset
            for body in [CommitBody(inRequest, pages: Pages(pages, pageSize: pageSize)),
                         CommitBody(request, pages: Pages(pages, pageSize: pageSize), changeset: Changeset(changeset))] {
                var out: [UInt8] = []
                while out.count < body.count {
                    var chunk = [UInt8](repeating: 0, count: 1 + Int(rng.next() % 9000))
                    let n = chunk.withUnsafeMutableBytes { body.read(at: out.count, into: $0) } ?? 0
                    #expect(n > 0, "the body ended early at \(out.count) of \(body.count)")
                    if n == 0 { break }
                    out += chunk[..<n]
                }
                let label = "page size \(pageSize), \(pageCount) pages, \(changesetBytes) bytes of changeset"
                #expect(out.count == expectedLength, "\(label): \(out.count) bytes, expected \(expectedLength)")
                let message = (try? GRPCFraming.messageRange(out)).map { Array(out[$0]) }
                let decoded = message.flatMap { try? CommitRequest(serializedBytes: $0) }
                var incremental = IncrementalDecoder<CommitRequest>(length: message?.count ?? 0, direct: (8, \.changeset))
                let streamed = message.flatMap { m in try? m.withUnsafeBytes { try incremental.append($0) }; return try? incremental.finish() }
                let same = decoded == whole && streamed == whole  // compared first, so a failure does not print the pages
                #expect(same, "\(label): the body decodes to another request")
            }
        }
    }

    @Test func crc32cKnownAnswer() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        var rng = SplitMix(seed: 1)
        for length in [0, 1, 7, 8, 9, 4096, 4099] {
            let bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            #expect(bytes.withUnsafeBytes { CRC32C.checksum($0) == CRC32C.software($0) })
            // A record written in parts is checked in parts: continuing a checksum equals checking the whole.
            let cut = length / 3
            let first = CRC32C.checksum(Array(bytes[..<cut]))
            #expect(CRC32C.checksum(Array(bytes[cut...]), continuing: first) == CRC32C.checksum(bytes))
            #expect(bytes[cut...].withUnsafeBytes { CRC32C.software($0, continuing: first) } == CRC32C.checksum(bytes))
        }
    }
}

/// The sequencer refuses bad input with a clear status and keeps running.
@Suite struct SequencerValidationTests {
    @Test func badRequestsGetClearStatuses() async throws {
        try await withEmbeddedSequencer(configure: { $0.maxBatchBytes = 64 << 10 }) { server in
            let client = try SequencerClient(url: server.url)
            let name = uniqueName("validate")
            _ = try client.open(name, create: true)
            var acquire = AcquireLeaseRequest()
            acquire.database = name
            acquire.holder = "tester"
            let lease = try client.acquireLease(acquire)

            func commit(_ edit: (inout CommitRequest) -> Void) -> SequencerError? {
                var r = CommitRequest()
                r.database = name
                r.leaseEpoch = lease.epoch
                r.holder = "tester"
                r.txnID = (0..<16).map { _ in UInt8.random(in: 0...255) }
                r.pageSize = 4096
                r.pageCount = 1
                var header = [UInt8](repeating: 0, count: 4096)
                header[16] = 0x10
                r.pages = [Page(number: 1, data: header)]
                edit(&r)
                do {
                    _ = try client.commit(r)
                    return nil
                } catch {
                    return error
                }
            }
            #expect(commit { $0.database = "nope" }?.code == .notFound)
            #expect(commit { $0.pageSize = 3000 }?.message.contains("page size 3000") == true)
            #expect(commit { $0.pages = [Page(number: 2, data: [UInt8](repeating: 0, count: 4096))] }?.message.contains("out of range") == true)
            #expect(commit { $0.pages[0].checksum ^= 1 }?.message.contains("checksum") == true)
            #expect(commit { $0.pages = [Page(number: 1, data: [1, 2, 3])] }?.code == .invalidArgument)
            #expect(commit { $0.leaseEpoch += 1 }?.message.contains("stale lease epoch") == true)
            #expect(commit { $0.baseVersion = 5 }?.code == .aborted)
            #expect(commit { $0.txnID = [] }?.code == .invalidArgument)
            #expect(commit { r in
                r.pageCount = 40
                r.pages = (1...40).map { Page(number: UInt32($0), data: [UInt8](repeating: 0, count: 4096)) }
            }?.code == .resourceExhausted)
            // Still serving, and a good commit goes through at version 1.
            #expect(commit { _ in } == nil)
            #expect(try client.open(name, create: false).version == 1)
            // A huge page count and then a truncation: tombstones only for stored pages.
            var huge = CommitRequest()
            huge.database = name
            huge.baseVersion = 1
            huge.leaseEpoch = lease.epoch
            huge.holder = "tester"
            huge.txnID = [9, 9]
            huge.pageSize = 4096
            huge.pageCount = 4_000_000_000
            var header = [UInt8](repeating: 0, count: 4096)
            header[16] = 0x10
            huge.pages = [Page(number: 1, data: header)]
            #expect(try client.commit(huge).version == 2)
            huge.baseVersion = 2
            huge.txnID = [9, 10]
            huge.pageCount = 1
            #expect(try client.commit(huge).version == 3)
            var badRead = ReadPagesRequest()
            badRead.database = name
            badRead.version = 99
            #expect(throws: SequencerError.self) { _ = try client.readPages(badRead) }
        }
    }

    @Test func malformedBytesGetInvalidArgumentAndTheServerKeepsRunning() async throws {
        try await withEmbeddedSequencer { server in
            let endpoint = try Endpoint(url: server.url)
            let connection = try HTTP2Connection(endpoint: endpoint, deadline: .now + .seconds(5))
            let headers = [("content-type", "application/grpc"), ("te", "trailers")]
            for junk: [UInt8] in [[0, 0, 0, 0, 3, 0xFF, 0xFF, 0xFF], [0, 0, 0, 0, 2, 0x2A, 0x7F], [1, 2, 3]] {
                let response = try connection.post(path: SequencerMethod.commit.rawValue, headers: headers, body: junk, deadline: .now + .seconds(5))
                let status = Int(response.header("grpc-status") ?? "") ?? 0
                #expect(status != 0, "junk \(junk) was accepted")
            }
            let unknown = try connection.post(path: "/synddb.v1.Sequencer/Nope", headers: headers, body: GRPCFraming.frame([]), deadline: .now + .seconds(5))
            #expect(unknown.header("grpc-status") == "12")  // UNIMPLEMENTED
            let client = try SequencerClient(url: server.url)
            #expect(try client.capabilities().protocolVersion == 1)
        }
    }
}
