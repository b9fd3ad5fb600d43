import Synchronization
import SyndHTTP2
import SyndProtocol

#if canImport(Glibc)
import Glibc
#endif

/// A typed client of the synddb.v1.Sequencer gRPC service over one persistent
/// HTTP/2 connection, reconnecting on failure. Blocking; safe to share between
/// threads (requests are serialized on the connection).
public final class SequencerClient: Sendable {
    public let endpoint: Endpoint
    public let options: ClientOptions
    private let connection = Mutex<HTTP2Connection?>(nil)

    public init(url: String, options: ClientOptions = ClientOptions()) throws(SequencerError) {
        do {
            self.endpoint = try Endpoint(url: url)
        } catch {
            throw SequencerError(.invalidArgument, error.message)
        }
        self.options = options
    }

    // MARK: - RPCs

    public func capabilities() throws(SequencerError) -> Capabilities {
        try call(.getCapabilities, GetCapabilitiesRequest())
    }

    public func open(_ name: String, create: Bool) throws(SequencerError) -> DatabaseInfo {
        try call(.openDatabase, OpenDatabaseRequest(name: name, create: create))
    }

    public func acquireLease(_ request: AcquireLeaseRequest) throws(SequencerError) -> Lease {
        try call(.acquireLease, request)
    }

    public func renewLease(_ request: RenewLeaseRequest) throws(SequencerError) -> Lease {
        try call(.renewLease, request)
    }

    public func releaseLease(_ request: ReleaseLeaseRequest) throws(SequencerError) {
        let _: ReleaseLeaseResponse = try call(.releaseLease, request, attempts: 1)
    }

    public func readPages(_ request: ReadPagesRequest) throws(SequencerError) -> ReadPagesResponse {
        let response: ReadPagesResponse = try call(.readPages, request)
        for page in response.pages where !page.isIntact || page.data.count != Int(response.pageSize) {
            throw SequencerError(.dataLoss, "page \(page.number) from the sequencer fails its checksum or size; not using it")
        }
        return response
    }

    public func commitStatus(database: String, txnID: [UInt8]) throws(SequencerError) -> GetCommitStatusResponse {
        var r = GetCommitStatusRequest()
        r.database = database
        r.txnID = txnID
        return try call(.getCommitStatus, r)
    }

    /// Commits a batch exactly once. A lost response is retried with the same
    /// transaction id (the sequencer answers a retry with the first outcome), and
    /// when the sequencer stays unreachable the outcome is looked up by id.
    ///
    /// Throws a `SequencerError` whose `outcomeUnknown` is true when the retries
    /// ran out and the status lookup did not find the commit applied: a request
    /// still in flight could yet be applied, so "not found" is not "never".
    public func commit(_ request: CommitRequest) throws(SequencerError) -> CommitResponse {
        do throws(SequencerError) {
            return try call(.commit, request)
        } catch let error where error.isTransport {
            // Retries ran out while the outcome is unknown: ask once more by id.
            if let status = try? commitStatus(database: request.database, txnID: request.txnID) {
                if status.state == .committed {
                    var r = CommitResponse()
                    r.version = status.version
                    r.duplicate = true
                    return r
                }
            }
            var unknown = error
            unknown.outcomeUnknown = true
            unknown.message = "outcome of the commit is unknown (no answer, and not found applied yet): \(error.message)"
            throw unknown
        }
    }

    // MARK: - Transport

    /// One unary gRPC call with retries on transport failures and UNAVAILABLE.
    public func call<Request: WireMessage, Response: WireMessage>(
        _ method: SequencerMethod, _ request: Request, attempts: Int? = nil
    ) throws(SequencerError) -> Response {
        let body = GRPCFraming.frame(request.serializedBytes())
        let attempts = max(1, attempts ?? options.maxAttempts)
        var backoff = options.initialBackoff
        var attempt = 1
        while true {
            do throws(SequencerError) {
                return try once(method, body)
            } catch let error where (error.isTransport || error.code == .unavailable) && attempt < attempts {
                attempt += 1
                let jitter = Double.random(in: 0.5...1.0)
                sleep(for: backoff * jitter)
                backoff = min(backoff * 2, options.maxBackoff)
            }
        }
    }

    private func once<Response: WireMessage>(_ method: SequencerMethod, _ body: [UInt8]) throws(SequencerError) -> Response {
        let deadline = ContinuousClock.now + options.requestTimeout
        let response: HTTP2Response = try connection.withLock { (slot) throws(SequencerError) -> HTTP2Response in
            do throws(TransportError) {
                if slot == nil || !slot!.isOpen {
                    slot = try HTTP2Connection(endpoint: endpoint, caFile: options.tlsCAFile, deadline: deadline)
                }
                let ms = max(1, (deadline - .now).milliseconds)
                return try slot!.post(
                    path: method.rawValue,
                    headers: [("content-type", "application/grpc"), ("te", "trailers"),
                              ("grpc-timeout", "\(ms)m"), ("user-agent", "synddb-vfs/1")],
                    body: body, deadline: deadline)
            } catch {
                slot = nil
                var e = SequencerError(error.kind == .deadline ? .deadlineExceeded : .unavailable, error.message)
                e.isTransport = true
                e.requestMayHaveBeenSent = error.requestMayHaveBeenSent
                throw e
            }
        }
        guard response.status == 200 else {
            throw SequencerError(.unknown, "sequencer answered HTTP \(response.status.map(String.init) ?? "?") to \(method.rawValue); is \(endpoint) a SyndDB sequencer?")
        }
        guard let raw = response.header("grpc-status"), let code = Int(raw).flatMap(GRPCStatusCode.init(rawValue:)) else {
            throw SequencerError(.unknown, "sequencer sent no grpc-status for \(method.rawValue)")
        }
        guard code == .ok else {
            throw SequencerError(code, Self.percentDecoded(response.header("grpc-message") ?? "\(code)"))
        }
        do {
            return try Response(serializedBytes: GRPCFraming.unframe(response.body))
        } catch {
            throw SequencerError(.internal, "malformed answer to \(method.rawValue): \(error)")
        }
    }

    private func sleep(for duration: Duration) {
        let (s, atto) = duration.components
        var ts = timespec(tv_sec: Int(s), tv_nsec: Int(atto / 1_000_000_000))
        var left = timespec()
        while nanosleep(&ts, &left) != 0 && errno == EINTR { ts = left }
    }

    static func percentDecoded(_ s: String) -> String {
        guard s.contains("%") else { return s }
        var out: [UInt8] = []
        var bytes = Array(s.utf8)[...]
        while let b = bytes.popFirst() {
            if b == 37, bytes.count >= 2, let v = UInt8(String(decoding: bytes.prefix(2), as: UTF8.self), radix: 16) {
                out.append(v)
                bytes = bytes.dropFirst(2)
            } else {
                out.append(b)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}

extension Duration {
    var milliseconds: Int64 {
        let (s, atto) = components
        return s * 1000 + atto / 1_000_000_000_000_000
    }
}
