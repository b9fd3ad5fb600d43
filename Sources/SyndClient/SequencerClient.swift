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

    /// A client of the same sequencer with a connection of its own, so that its
    /// requests never wait behind this one's (a lease keeper's renewals behind
    /// another database's big commit).
    public func dedicated() -> SequencerClient {
        SequencerClient(endpoint: endpoint, options: options)
    }

    private init(endpoint: Endpoint, options: ClientOptions) {
        self.endpoint = endpoint
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

    public func renewLease(_ request: RenewLeaseRequest, attempts: Int? = nil) throws(SequencerError) -> Lease {
        try call(.renewLease, request, attempts: attempts)
    }

    /// One attempt, given up at `deadline` (closing a database must not hang on
    /// an unresponsive sequencer).
    public func releaseLease(_ request: ReleaseLeaseRequest, deadline: ContinuousClock.Instant? = nil) throws(SequencerError) {
        let _: ReleaseLeaseResponse = try call(.releaseLease, request, attempts: 1, deadline: deadline)
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
    /// transaction id (the sequencer answers a retry with the first outcome).
    ///
    /// Only two kinds of answer are definitive: success, and a refusal that the
    /// sequencer gives before applying anything (`SequencerError.provesNotApplied`;
    /// it checks the transaction id first, so a retry of an applied commit is
    /// never refused). Anything else once an attempt may have reached the
    /// sequencer (no answer, UNAVAILABLE, UNKNOWN such as a proxy's HTTP 503,
    /// INTERNAL) throws an error whose `outcomeUnknown` is true: the caller must
    /// fence the old attempt (a new lease epoch) before it can learn the outcome
    /// with `commitStatus`.
    public func commit(_ request: CommitRequest) throws(SequencerError) -> CommitResponse {
        let body = GRPCFraming.frame(request.serializedBytes())
        var backoff = options.initialBackoff
        var mayHaveReached = false
        var attempt = 1
        while true {
            do throws(SequencerError) {
                return try once(.commit, body)
            } catch {
                if error.provesNotApplied { throw error }
                if !error.isTransport || error.requestMayHaveBeenSent { mayHaveReached = true }
                let retriable = error.isTransport || error.code == .unavailable
                guard retriable && attempt < max(1, options.maxAttempts) else {
                    guard mayHaveReached else { throw error }
                    var unknown = error
                    unknown.outcomeUnknown = true
                    unknown.message = "outcome of the commit is unknown (an attempt may have reached the sequencer, and no definitive answer came): \(error.message)"
                    throw unknown
                }
                attempt += 1
                sleep(for: backoff * Double.random(in: 0.5...1.0))
                backoff = min(backoff * 2, options.maxBackoff)
            }
        }
    }

    // MARK: - Transport

    /// One unary gRPC call with retries on transport failures and UNAVAILABLE.
    public func call<Request: WireMessage, Response: WireMessage>(
        _ method: SequencerMethod, _ request: Request, attempts: Int? = nil, deadline: ContinuousClock.Instant? = nil
    ) throws(SequencerError) -> Response {
        let body = GRPCFraming.frame(request.serializedBytes())
        let attempts = max(1, attempts ?? options.maxAttempts)
        var backoff = options.initialBackoff
        var attempt = 1
        while true {
            do throws(SequencerError) {
                return try once(method, body, deadline: deadline)
            } catch let error where (error.isTransport || error.code == .unavailable) && attempt < attempts {
                attempt += 1
                let jitter = Double.random(in: 0.5...1.0)
                sleep(for: backoff * jitter)
                backoff = min(backoff * 2, options.maxBackoff)
            }
        }
    }

    private func once<Response: WireMessage>(
        _ method: SequencerMethod, _ body: [UInt8], deadline fixed: ContinuousClock.Instant? = nil
    ) throws(SequencerError) -> Response {
        let deadline = fixed ?? ContinuousClock.now + options.requestTimeout
        let response: HTTP2Response = try connection.withLock { (slot) throws(SequencerError) -> HTTP2Response in
            guard deadline > .now else {
                var e = SequencerError(.deadlineExceeded, "\(method.rawValue) not sent: its deadline passed while another request used the connection")
                e.isTransport = true
                throw e
            }
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
