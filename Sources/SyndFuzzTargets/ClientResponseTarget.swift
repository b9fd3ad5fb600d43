import SyndClient
import SyndHTTP2
import SyndProtocol

/// What a hostile or broken sequencer (or a proxy in front of it) can send the
/// client: any answer's headers, trailers and body, for any RPC.
///
/// Input: one byte picks the RPC, one byte is the stream's HTTP/2 reset code,
/// a 2-byte-length chunk holds header lines (`name: value`, headers and
/// trailers together, as `HTTP2Response` keeps them), the rest is the body.
///
/// Promises: every decoder returns or throws a `ProtocolError`, and what it
/// returns encodes to bytes that decode to the same message; the client's
/// handling of a finished call (`SequencerClient.answer`, `status(of:)`, the
/// page checks of ReadPages) ends in a message or a `SequencerError` with a
/// message, never a trap.
public enum ClientResponseTarget {
    public static let name = "client"

    /// Each RPC with the decoding its answer gets.
    static let rpcs: [(method: SequencerMethod, decode: @Sendable ([UInt8], HTTP2Response) -> Void)] = [
        (.getCapabilities, { check(Capabilities.self, $0, $1, .getCapabilities) }),
        (.openDatabase, { check(DatabaseInfo.self, $0, $1, .openDatabase) }),
        (.acquireLease, { check(Lease.self, $0, $1, .acquireLease) }),
        (.renewLease, { check(Lease.self, $0, $1, .renewLease) }),
        (.releaseLease, { check(ReleaseLeaseResponse.self, $0, $1, .releaseLease) }),
        (.holdLease, { check(HoldLeaseEvent.self, $0, $1, .holdLease) }),
        (.readPages, { body, response in
            check(ReadPagesResponse.self, body, response, .readPages)
            if let pages = try? ReadPagesResponse(serializedBytes: body) { checkPages(pages) }
            if let pages: ReadPagesResponse = try? SequencerClient.answer(response, method: .readPages, endpoint: endpoint) {
                checkPages(pages)
            }
            checkInPlace(response)
        }),
        (.commit, { check(CommitResponse.self, $0, $1, .commit) }),
        (.getCommitStatus, { check(GetCommitStatusResponse.self, $0, $1, .getCommitStatus) }),
        (.getSequencerKey, { check(SequencerKey.self, $0, $1, .getSequencerKey) }),
        (.streamBatches, { check(Batch.self, $0, $1, .streamBatches) }),
        (.dropDatabase, { check(DropDatabaseResponse.self, $0, $1, .dropDatabase) }),
    ]

    static let endpoint = Endpoint(tls: false, host: "127.0.0.1", port: 8433)

    public static func run(_ data: [UInt8]) {
        var input = FuzzInput(data)
        let rpc = rpcs[Int(input.byte()) % rpcs.count]
        let resetCode = UInt32(input.byte())
        var response = HTTP2Response()
        response.headers = headerLines(input.chunk())
        response.body = input.rest()
        rpc.decode(response.body, response)

        // A stream's end (HoldLease): the status its trailers or reset carry.
        let end = SequencerClient.status(of: response, resetCode: resetCode, method: rpc.method)
        guard !end.message.isEmpty else { violated(name, "a stream's end without a message") }
        _ = SequencerClient.percentDecoded(String(decoding: response.body, as: UTF8.self))
    }

    /// `name: value` lines; a line without a colon is a name with an empty value.
    static func headerLines(_ bytes: [UInt8]) -> [(name: String, value: String)] {
        bytes.split(separator: 0x0A, omittingEmptySubsequences: true).map { line in
            let text = String(decoding: line, as: UTF8.self)
            guard let colon = text.firstIndex(of: ":"), colon != text.startIndex else { return (text, "") }
            let value = text[text.index(after: colon)...].drop(while: { $0 == " " })
            return (String(text[..<colon]), String(value))
        }
    }

    /// The message decoded alone, and the whole answer as the client takes it.
    static func check<M: WireMessage>(_: M.Type, _ body: [UInt8], _ response: HTTP2Response, _ method: SequencerMethod) {
        do {
            let message = try M(serializedBytes: body)
            let again = try M(serializedBytes: message.serializedBytes())
            guard again == message else { violated(name, "\(M.self) changed through encode and decode") }
        } catch let error as ProtocolError {
            guard !error.description.isEmpty else { violated(name, "\(M.self): a ProtocolError without a message") }
        } catch {
            violated(name, "\(M.self) decoding threw \(type(of: error)): \(error)")
        }
        do throws(SequencerError) {
            let _: M = try SequencerClient.answer(response, method: method, endpoint: endpoint)
        } catch {
            guard !error.message.isEmpty else { violated(name, "\(method.rawValue): an error without a message") }
            if response.status != 200, error.code != .unknown {
                violated(name, "HTTP \(response.status.map(String.init) ?? "?") taken as \(error.code)")
            }
        }
    }

    /// The in-place decoding accepts exactly the answers the copying one
    /// accepts, with the same pages, and never passes a bad page.
    static func checkInPlace(_ response: HTTP2Response) {
        let copied: Result<ReadPagesResponse, SequencerError> = Result { () throws(SequencerError) in
            try SequencerClient.checked(SequencerClient.answer(response, method: .readPages, endpoint: endpoint))
        }
        let inPlace = Result { () throws(SequencerError) in try SequencerClient.pageAnswer(response, endpoint: endpoint) }
        switch (copied, inPlace) {
        case (.success(let a), .success(let b)):
            let same = a.version == b.version && a.pageSize == b.pageSize && a.pageCount == b.pageCount
                && a.pages.count == b.pages.count
                && zip(a.pages, b.pages).allSatisfy { p, q in
                    p.number == q.number && p.checksum == q.checksum && p.data == Array(b.buffer[q.data])
                }
            if !same { violated(name, "the in-place ReadPages decoding differs from the copying one") }
        case (.failure(let a), .failure(let b)):
            if a.code != b.code { violated(name, "the two ReadPages decodings refuse with \(a.code) and \(b.code)") }
        default:
            violated(name, "one ReadPages decoding accepted an answer the other refused")
        }
    }

    static func checkPages(_ response: ReadPagesResponse) {
        do throws(SequencerError) {
            let pages = try SequencerClient.checked(response)
            for page in pages.pages where !page.isIntact || page.data.count != Int(pages.pageSize) {
                violated(name, "page \(page.number) passed the checks with a bad checksum or size")
            }
        } catch {
            guard error.code == .dataLoss else { violated(name, "a bad page reported as \(error.code)") }
        }
    }

    /// A valid answer per RPC, a refusal, and a few broken ones.
    public static var seeds: [[UInt8]] {
        func seed(_ method: SequencerMethod, _ headers: String, _ body: [UInt8], reset: UInt8 = 0) -> [UInt8] {
            let index = UInt8(rpcs.firstIndex(where: { $0.method == method })!)
            let h = Array(headers.utf8)
            return [index, reset, UInt8(h.count >> 8), UInt8(h.count & 0xFF)] + h + body
        }
        let ok = ":status: 200\ncontent-type: application/grpc\ngrpc-status: 0\n"
        var caps = Capabilities()
        caps.protocolVersion = 1
        caps.pageSizes = [512, 4096, 65536]
        caps.maxBatchBytes = 1 << 28
        caps.features = ["lease-epoch", "changeset"]
        var info = DatabaseInfo()
        info.name = "app"
        info.version = 7
        info.pageSize = 4096
        info.pageCount = 3
        var lease = Lease()
        lease.database = "app"
        lease.holder = "w1"
        lease.epoch = 2
        lease.ttlMs = 10_000
        lease.info = info
        var event = HoldLeaseEvent()
        event.lease = lease
        var pages = ReadPagesResponse()
        pages.version = 7
        pages.pageSize = 512
        pages.pageCount = 2
        pages.pages = [Page(number: 1, data: [UInt8](repeating: 0x53, count: 512)), Page(number: 2, data: [UInt8](repeating: 0, count: 512))]
        var commit = CommitResponse()
        commit.version = 8
        commit.duplicate = true
        var status = GetCommitStatusResponse()
        status.state = .committed
        status.version = 8
        var key = SequencerKey()
        key.algorithm = "ed25519"
        key.publicKey = [UInt8](repeating: 7, count: 32)
        var batch = Batch()
        batch.database = "app"
        batch.version = 1
        batch.pageSize = 512
        batch.pageCount = 1
        batch.pages = [Page(number: 1, data: [UInt8](repeating: 1, count: 512))]
        batch.changeset = [0x54, 0x02, 0x01, 0x00, 0x74, 0x00]
        batch.schemaChanged = true
        batch.schema = [SchemaObject(type: "table", name: "t", tableName: "t", sql: "CREATE TABLE t(id INTEGER PRIMARY KEY)")]
        batch.hash = [UInt8](repeating: 9, count: 32)
        var drop = DropDatabaseResponse()
        drop.version = 9
        return [
            seed(.getCapabilities, ok, GRPCFraming.frame(caps.serializedBytes())),
            seed(.openDatabase, ok, GRPCFraming.frame(info.serializedBytes())),
            seed(.acquireLease, ok, GRPCFraming.frame(lease.serializedBytes())),
            seed(.holdLease, ok, GRPCFraming.frame(event.serializedBytes())),
            seed(.readPages, ok, GRPCFraming.frame(pages.serializedBytes())),
            seed(.commit, ok, GRPCFraming.frame(commit.serializedBytes())),
            seed(.getCommitStatus, ok, GRPCFraming.frame(status.serializedBytes())),
            seed(.getSequencerKey, ok, GRPCFraming.frame(key.serializedBytes())),
            seed(.streamBatches, ok, GRPCFraming.frame(batch.serializedBytes())),
            seed(.dropDatabase, ok, GRPCFraming.frame(drop.serializedBytes())),
            seed(.commit, ":status: 200\ngrpc-status: 10\ngrpc-message: stale base version 3%3A retry\n", []),
            seed(.holdLease, ":status: 200\n", [], reset: 8),
            seed(.renewLease, ":status: 503\ncontent-type: text/plain\n", Array("upstream connect error".utf8)),
            seed(.openDatabase, ok, [0, 0, 0, 0, 9, 0x0A, 0x03]),
        ]
    }
}
