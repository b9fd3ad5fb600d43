import Foundation
import NIOCore
import GRPCCore
import GRPCNIOTransportHTTP2
import Synchronization
import SyndGRPC
import SyndHTTP2
import SyndProtocol
import SyndSequencer
import SyndStorage
import Testing

/// The sequencer's gRPC server (SwiftNIO HTTP/2) against grpc-swift's client,
/// and against raw HTTP/2 requests for what a well-behaved client never sends.
@Suite struct GRPCServerTests {
    typealias Client = Synddb_V1_Sequencer.Client<HTTP2ClientTransport.Posix>

    /// An embedded sequencer on loopback and a grpc-swift client of it (one connection).
    static func withClient<T: Sendable>(
        configure: (inout StoreConfiguration) -> Void = { _ in },
        compression: Bool = false,
        _ body: @Sendable @escaping (SequencerServer, Client, GRPCClient<HTTP2ClientTransport.Posix>) async throws -> T
    ) async throws -> T {
        let dir = TemporaryDirectory()
        var configuration = StoreConfiguration(directory: dir.path)
        configure(&configuration)
        let server = try await SequencerServer.start(store: configuration)
        do {
            let result = try await withClient(server, compression: compression) { try await body(server, $0, $1) }
            await server.stop()
            _ = dir
            return result
        } catch {
            await server.stop()
            throw error
        }
    }

    static func withClient<T: Sendable>(
        _ server: SequencerServer, compression: Bool = false,
        _ body: @Sendable @escaping (Client, GRPCClient<HTTP2ClientTransport.Posix>) async throws -> T
    ) async throws -> T {
        var config = HTTP2ClientTransport.Posix.Config.defaults
        if compression { config.compression = .init(algorithm: .none, enabledAlgorithms: .gzip) }
        let transport = try HTTP2ClientTransport.Posix(
            target: .ipv4(address: "127.0.0.1", port: server.port), transportSecurity: .plaintext, config: config)
        return try await withGRPCClient(transport: transport) { client in
            try await body(Client(wrapping: client), client)
        }
    }

    static func open(_ client: Client, _ name: String) async throws -> Synddb_V1_DatabaseInfo {
        var open = Synddb_V1_OpenDatabaseRequest()
        open.name = name
        open.create = true
        return try await client.openDatabase(open)
    }

    static func acquire(_ client: Client, _ name: String, holder: String, ttlMs: UInt32 = 60_000, waitMs: UInt32 = 0) async throws -> Synddb_V1_Lease {
        var acquire = Synddb_V1_AcquireLeaseRequest()
        acquire.database = name
        acquire.holder = holder
        acquire.ttlMs = ttlMs
        acquire.waitMs = waitMs
        return try await client.acquireLease(acquire)
    }

    /// Commits one 512-byte page (filled with `base`) on version `base` under `lease`.
    static func commitOnePage(_ client: Client, _ name: String, lease: Synddb_V1_Lease, base: UInt64) async throws {
        var commit = Synddb_V1_CommitRequest()
        commit.database = name
        commit.baseVersion = base
        commit.leaseEpoch = lease.epoch
        commit.holder = lease.holder
        commit.txnID = Data("t\(base)".utf8)
        commit.pageSize = 512
        commit.pageCount = 1
        var page = Synddb_V1_Page()
        page.number = 1
        page.data = Data(repeating: UInt8(truncatingIfNeeded: base), count: 512)
        page.checksum = CRC32C.checksum([UInt8](repeating: UInt8(truncatingIfNeeded: base), count: 512))
        commit.pages = [page]
        _ = try await client.commit(commit)
    }

    /// The status a call failed with (nil: it succeeded).
    static func code(_ body: () async throws -> Void) async -> RPCError.Code? {
        do {
            try await body()
            return nil
        } catch let error as RPCError {
            return error.code
        } catch {
            Issue.record("not an RPCError: \(error)")
            return nil
        }
    }

    @Test func everyUnaryMethodAnswersAGRPCSwiftClient() async throws {
        try await Self.withClient { server, client, _ in
            let name = uniqueName("grpc-unary")
            let capabilities = try await client.getCapabilities(Synddb_V1_GetCapabilitiesRequest())
            #expect(capabilities.protocolVersion == 1)
            #expect(capabilities.maxBatchBytes == server.service.pageStore.configuration.maxBatchBytes)
            let key = try await client.getSequencerKey(Synddb_V1_GetSequencerKeyRequest())
            #expect(key.algorithm == "ed25519")
            #expect(Array(key.publicKey) == server.service.pageStore.signingKey.publicKey)

            let info = try await Self.open(client, name)
            #expect(info.name == name)
            #expect(info.version == 0)
            let lease = try await Self.acquire(client, name, holder: "grpc-tester")
            #expect(lease.holder == "grpc-tester")
            #expect(lease.epoch >= 1)

            var renew = Synddb_V1_RenewLeaseRequest()
            renew.database = name
            renew.holder = "grpc-tester"
            renew.epoch = lease.epoch
            renew.ttlMs = 30_000
            #expect(try await client.renewLease(renew).ttlMs == 30_000)

            var commit = Synddb_V1_CommitRequest()
            commit.database = name
            commit.baseVersion = 0
            commit.leaseEpoch = lease.epoch
            commit.holder = "grpc-tester"
            commit.txnID = Data("txn-1".utf8)
            commit.pageSize = 512
            commit.pageCount = 1
            var page = Synddb_V1_Page()
            page.number = 1
            page.data = Data(repeating: 7, count: 512)
            page.checksum = CRC32C.checksum([UInt8](repeating: 7, count: 512))
            commit.pages = [page]
            let committed = try await client.commit(commit)
            #expect(committed.version == 1)
            #expect(!committed.duplicate)

            var status = Synddb_V1_GetCommitStatusRequest()
            status.database = name
            status.txnID = Data("txn-1".utf8)
            let known = try await client.getCommitStatus(status)
            #expect(known.state == .committed)
            #expect(known.version == 1)

            var read = Synddb_V1_ReadPagesRequest()
            read.database = name
            read.pageNumbers = [1]
            let pages = try await client.readPages(read)
            #expect(pages.version == 1)
            #expect(pages.pages.count == 1)
            #expect(pages.pages.first?.data == Data(repeating: 7, count: 512))

            var release = Synddb_V1_ReleaseLeaseRequest()
            release.database = name
            release.holder = "grpc-tester"
            release.epoch = lease.epoch
            _ = try await client.releaseLease(release)

            var drop = Synddb_V1_DropDatabaseRequest()
            drop.database = name
            #expect(try await client.dropDatabase(drop).version == 2)
            #expect(server.service.counters[.commit] == 1)
            #expect(server.service.counters[.dropDatabase] == 1)
        }
    }

    /// A follow stream that asks for heartbeats gets one, with the head, while
    /// nothing commits; a commit reaches it as the next batch, and heartbeats
    /// then carry the new head. A stream that asked for none gets none.
    @Test func followStreamsSendBatchesAsTheyCommitAndHeartbeatsBetween() async throws {
        try await Self.withClient { server, client, _ in
            let name = uniqueName("grpc-follow")
            _ = try await Self.open(client, name)
            let lease = try await Self.acquire(client, name, holder: "a")
            @Sendable func commit(_ base: UInt64) async throws { try await Self.commitOnePage(client, name, lease: lease, base: base) }
            try await commit(0)
            var request = Synddb_V1_StreamBatchesRequest()
            request.database = name
            request.follow = true
            request.heartbeatMs = 20
            let seen = try await client.streamBatches(request) { response in
                var seen: [(version: UInt64, heartbeat: Bool)] = []
                for try await message in response.messages {
                    seen.append((message.version, message.heartbeat))
                    if message.heartbeat { #expect(message.hash.isEmpty && message.pages.isEmpty && message.committedAtMs > 0) }
                    let beats = seen.filter(\.heartbeat).count
                    if beats == 2 && seen.count == 3 { try await commit(1) }
                    if seen.last.map({ $0.heartbeat && $0.version == 2 }) == true { break }
                }
                return seen
            }
            #expect(seen.first.map { $0.version == 1 && !$0.heartbeat } == true, "the batch first")
            #expect(seen[1].heartbeat && seen[1].version == 1 && seen[2].heartbeat && seen[2].version == 1, "then heartbeats with the head")
            #expect(seen.contains { $0.version == 2 && !$0.heartbeat }, "the new commit as a batch")
            #expect(seen.filter { !$0.heartbeat }.map(\.version) == [1, 2])

            // No heartbeats unless asked: the batches only (the stream ends when the client stops reading).
            var plain = Synddb_V1_StreamBatchesRequest()
            plain.database = name
            plain.follow = true
            let first = try await client.streamBatches(plain) { response in
                var out: [Bool] = []
                for try await message in response.messages {
                    out.append(message.heartbeat)
                    if out.count == 2 { break }
                    try await Task.sleep(for: .milliseconds(100))
                    try await commit(2)
                }
                return out
            }
            #expect(first == [false, false])
            _ = server
        }
    }

    @Test func streamBatchesAndHoldLeaseStream() async throws {
        try await Self.withClient { server, client, _ in
            let name = uniqueName("grpc-stream")
            _ = try await Self.open(client, name)
            let lease = try await Self.acquire(client, name, holder: "a")
            for version in UInt64(0)..<3 { try await Self.commitOnePage(client, name, lease: lease, base: version) }
            var stream = Synddb_V1_StreamBatchesRequest()
            stream.database = name
            let versions = try await client.streamBatches(stream) { response in
                var versions: [UInt64] = []
                for try await batch in response.messages { versions.append(batch.version) }
                return versions
            }
            #expect(versions == [1, 2, 3])

            // HoldLease: the lease first, then `wanted` when another writer asks.
            var hold = Synddb_V1_HoldLeaseRequest()
            hold.database = name
            hold.holder = "a"
            hold.epoch = lease.epoch
            let events = try await client.holdLease(hold) { response in
                var events: [Synddb_V1_HoldLeaseEvent] = []
                for try await event in response.messages {
                    events.append(event)
                    if events.count == 1 {
                        let refused = await Self.code { _ = try await Self.acquire(client, name, holder: "b") }
                        #expect(refused == .failedPrecondition)
                    } else {
                        break
                    }
                }
                return events
            }
            #expect(events.count == 2)
            #expect(events.first?.lease.epoch == lease.epoch)
            #expect(events.last?.wanted == true)
            #expect(server.service.counters[.holdLease] == 1)
        }
    }

    @Test func closingTheConnectionDuringHoldLeaseReleasesTheLease() async throws {
        let dir = TemporaryDirectory()
        let server = try await SequencerServer.start(store: StoreConfiguration(directory: dir.path))
        let name = uniqueName("grpc-hold")
        let lease = try await Self.withClient(server) { client, _ in
            _ = try await Self.open(client, name)
            return try await Self.acquire(client, name, holder: "killed-writer", ttlMs: 120_000)
        }
        // A second connection holds the lease, then goes away mid-stream.
        let held = Mutex(false)
        let holder = Task {
            try await Self.withClient(server) { client, _ in
                var hold = Synddb_V1_HoldLeaseRequest()
                hold.database = name
                hold.holder = "killed-writer"
                hold.epoch = lease.epoch
                try await client.holdLease(hold) { response in
                    for try await _ in response.messages {
                        held.withLock { $0 = true }
                        try await Task.sleep(for: .seconds(600))
                    }
                }
            }
        }
        let waitStart = ContinuousClock.now
        while !held.withLock({ $0 }), ContinuousClock.now < waitStart + .seconds(10) {
            try await Task.sleep(for: .milliseconds(5))
        }
        #expect(held.withLock { $0 })
        try await Self.withClient(server) { client, _ in
            let refused = await Self.code { _ = try await Self.acquire(client, name, holder: "next") }
            #expect(refused == .failedPrecondition)
        }
        holder.cancel()  // the client shuts down: its connection closes
        _ = await holder.result
        let start = ContinuousClock.now
        let next = try await Self.withClient(server) { client, _ in
            try await Self.acquire(client, name, holder: "next", waitMs: 5_000)
        }
        #expect(next.holder == "next")
        #expect(next.epoch > lease.epoch)
        // Released when the stream went away, not when the 120 s TTL ran out.
        #expect(ContinuousClock.now - start < .seconds(5))
        await server.stop()
        _ = dir
    }

    /// ReadPages answers are encoded straight into the frame the server sends
    /// (`ReadPagesResponse.framed`); they must be byte for byte what the
    /// generic encoder frames, defaults left out and long lengths included.
    @Test func readPagesAnswersAreFramedAsTheGenericEncoderFramesThem() {
        var responses: [ReadPagesResponse] = [ReadPagesResponse()]
        var r = ReadPagesResponse()
        r.version = 300
        responses.append(r)
        r.pageSize = 65536
        r.pageCount = 1 << 31
        r.pages = [
            Page(number: 1, data: (0..<65536).map { UInt8(truncatingIfNeeded: $0 &* 7) }),
            Page(),  // number 0, no data, checksum 0: all left out
            Page(number: 200, data: []),
            Page(number: UInt32.max, data: [1, 2, 3]),
        ]
        responses.append(r)
        r.pages = (1...300).map { Page(number: UInt32($0), data: [UInt8](repeating: UInt8($0 % 256), count: 4096)) }
        responses.append(r)
        for (i, response) in responses.enumerated() {
            let framed = response.framed(allocator: ByteBufferAllocator())
            let same = Array(framed.readableBytesView) == GRPCFraming.frame(response.serializedBytes())
            #expect(same, "response \(i)")
        }
    }

    @Test func unknownMethodIsUnimplemented() async throws {
        try await Self.withClient { _, _, grpc in
            let code = await Self.code {
                _ = try await grpc.unary(
                    request: ClientRequest(message: [UInt8]()),
                    descriptor: MethodDescriptor(fullyQualifiedService: "synddb.v1.Sequencer", method: "Teleport"),
                    serializer: RawBytes(), deserializer: RawBytes(), options: .defaults
                ) { try $0.message }
            }
            #expect(code == .unimplemented)
            let other = await Self.code {
                _ = try await grpc.unary(
                    request: ClientRequest(message: [UInt8]()),
                    descriptor: MethodDescriptor(fullyQualifiedService: "other.v1.Service", method: "GetCapabilities"),
                    serializer: RawBytes(), deserializer: RawBytes(), options: .defaults
                ) { try $0.message }
            }
            #expect(other == .unimplemented)
        }
    }

    @Test func malformedBodyIsInvalidArgumentAndTheNextCallIsServed() async throws {
        try await Self.withClient { _, client, grpc in
            for junk: [UInt8] in [[0x0A, 0x05, 0x61], [0x08], [0xFF, 0xFF, 0xFF]] {
                do {
                    _ = try await grpc.unary(
                        request: ClientRequest(message: junk),
                        descriptor: Synddb_V1_Sequencer.Method.Commit.descriptor,
                        serializer: RawBytes(), deserializer: RawBytes(), options: .defaults
                    ) { try $0.message }
                    Issue.record("junk \(junk) was accepted")
                } catch let error as RPCError {
                    #expect(error.code == .invalidArgument)
                    #expect(error.message.contains("malformed CommitRequest"))
                }
            }
            #expect(try await client.getCapabilities(Synddb_V1_GetCapabilitiesRequest()).protocolVersion == 1)
        }
    }

    @Test func oversizeRequestIsResourceExhausted() async throws {
        try await Self.withClient(configure: { c in c.maxBatchBytes = 64 << 10 }) { _, client, grpc async throws in
            // The limit is 2 x 64 KiB + 1 MiB; this is 3 MiB.
            var options = CallOptions.defaults
            options.maxRequestMessageBytes = 8 << 20
            let code = await Self.code {
                _ = try await grpc.unary(
                    request: ClientRequest(message: [UInt8](repeating: 0, count: 3 << 20)),
                    descriptor: Synddb_V1_Sequencer.Method.Commit.descriptor,
                    serializer: RawBytes(), deserializer: RawBytes(), options: options
                ) { try $0.message }
            }
            #expect(code == .resourceExhausted)
            #expect(try await client.getCapabilities(Synddb_V1_GetCapabilitiesRequest()).protocolVersion == 1)
        }
    }

    @Test func compressedMessageGetsAClearError() async throws {
        try await Self.withClient(compression: true) { _, client, _ in
            var options = CallOptions.defaults
            options.compression = .gzip
            do {
                _ = try await client.getCapabilities(Synddb_V1_GetCapabilitiesRequest(), options: options)
                Issue.record("a compressed request was accepted")
            } catch let error as RPCError {
                #expect(error.code == .unimplemented)
                #expect(error.message.contains("compressed"))
            }
            #expect(try await client.getCapabilities(Synddb_V1_GetCapabilitiesRequest()).protocolVersion == 1)
        }
    }

    @Test func rawRequestsGetGRPCAnswers() async throws {
        try await withEmbeddedSequencer { server in
            let connection = try HTTP2Connection(endpoint: try Endpoint(url: server.url), deadline: .now + .seconds(5))
            let headers = [("content-type", "application/grpc"), ("te", "trailers")]
            let deadline = ContinuousClock.now + .seconds(10)
            // A success: headers, one framed message, then grpc-status 0.
            let ok = try connection.post(path: SequencerMethod.getCapabilities.rawValue, headers: headers, body: GRPCFraming.frame([]), deadline: deadline)
            #expect(ok.status == 200)
            #expect(ok.header("content-type") == "application/grpc")
            #expect(ok.header("grpc-status") == "0")
            #expect(try Capabilities(serializedBytes: GRPCFraming.unframe(ok.body)).protocolVersion == 1)
            // Compressed flag set: UNIMPLEMENTED, trailers-only, with a message.
            let compressed = try connection.post(path: SequencerMethod.getCapabilities.rawValue, headers: headers, body: [1, 0, 0, 0, 1, 0], deadline: deadline)
            #expect(compressed.status == 200)
            #expect(compressed.header("grpc-status") == "12")
            #expect(compressed.header("grpc-message")?.contains("compressed") == true)
            #expect(compressed.body.isEmpty)
            // Two messages on a unary call, a truncated one, none at all.
            for body: [UInt8] in [GRPCFraming.frame([]) + GRPCFraming.frame([]), [0, 0, 0, 0, 9, 1], [0, 0], []] {
                let response = try connection.post(path: SequencerMethod.getCapabilities.rawValue, headers: headers, body: body, deadline: deadline)
                #expect(response.header("grpc-status") == "3", "body \(body)")
                #expect(!(response.header("grpc-message") ?? "").isEmpty)
            }
            // Not gRPC: HTTP 415.
            let json = try connection.post(path: SequencerMethod.getCapabilities.rawValue, headers: [("content-type", "application/json")], body: [], deadline: deadline)
            #expect(json.status == 415)
            // A refusal's message is percent-encoded.
            var read = ReadPagesRequest()
            read.database = "no such db ü%"
            let refused = try connection.post(path: SequencerMethod.readPages.rawValue, headers: headers, body: GRPCFraming.frame(read.serializedBytes()), deadline: deadline)
            let message = refused.header("grpc-message") ?? ""
            #expect(refused.header("grpc-status") != "0")
            #expect(!message.contains("ü") && !message.contains("% "))
            #expect(message.removingPercentEncoding?.contains("'no such db ü%'") == true, "grpc-message: \(message)")
            let key = try connection.post(path: SequencerMethod.getSequencerKey.rawValue, headers: headers, body: GRPCFraming.frame([]), deadline: deadline)
            #expect(key.header("grpc-status") == "0")
        }
    }

    @Test func manyConcurrentCallsOnOneConnectionAreAllAnswered() async throws {
        try await Self.withClient { server, client, _ in
            let name = uniqueName("grpc-many")
            _ = try await Self.open(client, name)
            let answered = try await withThrowingTaskGroup(of: Int.self) { group in
                for i in 0..<300 {
                    group.addTask {
                        switch i % 3 {
                        case 0:
                            return Int(try await client.getCapabilities(Synddb_V1_GetCapabilitiesRequest()).protocolVersion)
                        case 1:
                            return try await client.getSequencerKey(Synddb_V1_GetSequencerKeyRequest()).algorithm == "ed25519" ? 1 : 0
                        default:
                            var read = Synddb_V1_ReadPagesRequest()
                            read.database = name
                            return try await client.readPages(read).version == 0 ? 1 : 0
                        }
                    }
                }
                return try await group.reduce(0, +)
            }
            #expect(answered == 300)
            #expect(server.service.counters[.getCapabilities] == 100)
            #expect(server.service.counters[.readPages] == 100)
        }
    }
}

/// Request and response messages as raw bytes: for calls the generated client cannot make.
struct RawBytes: MessageSerializer, MessageDeserializer {
    func serialize<Bytes: GRPCContiguousBytes>(_ message: [UInt8]) throws -> Bytes { Bytes(message) }
    func deserialize<Bytes: GRPCContiguousBytes>(_ serializedMessageBytes: Bytes) throws -> [UInt8] {
        serializedMessageBytes.withUnsafeBytes { Array($0) }
    }
}
