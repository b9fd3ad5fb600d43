import SyndHTTP2
import SyndProtocol

#if canImport(Glibc)
import Glibc
#endif

/// A typed client of the synddb.v1.Sequencer gRPC service over one persistent
/// HTTP/2 connection, reconnecting on failure. Blocking; safe to share between
/// threads (requests are serialized on the connection).
///
/// Given several sequencers (`http://a:8433,http://b:8433`: sequencers sharing
/// one PostgreSQL store), it talks to one at a time and moves to the next when
/// a connection cannot be made or breaks; the usual retries and the commit's
/// outcome resolution then go through whichever answers.
public final class SequencerClient: Sendable {
    /// The sequencers, in the order they are tried.
    public let endpoints: [Endpoint]
    public let options: ClientOptions
    private let connection: Locked<Slot>

    /// The sequencer this client talks to now (the first until one fails).
    public var endpoint: Endpoint { endpoints[connection.withLock { $0.current }] }

    /// The connection, and how many have been made (identifies the current one).
    private struct Slot {
        var connection: HTTP2Connection?
        var serial: UInt64 = 0
        /// Index of the endpoint in use.
        var current = 0
        /// The connection to `current` broke: start the next open at the one after it.
        var moveOn = false

        /// The open connection, connecting first if there is none: to the
        /// current sequencer, else to each of the others in turn.
        mutating func open(_ client: SequencerClient, deadline: ContinuousClock.Instant) throws(TransportError) -> HTTP2Connection {
            if let connection, connection.isOpen { return connection }
            if connection != nil { moveOn = true }
            connection = nil
            let count = client.endpoints.count
            let first = moveOn && count > 1 ? (current + 1) % count : current
            moveOn = false
            var failure: TransportError?
            for step in 0..<count {
                let i = (first + step) % count
                // With several, each gets a share of what is left, so one that
                // does not answer at all (a host that is down) leaves time for the others.
                let left = deadline - ContinuousClock.now
                let attempt = count - step > 1 ? ContinuousClock.now + max(left / (count - step), .milliseconds(200)) : deadline
                do throws(TransportError) {
                    let c = try HTTP2Connection(endpoint: client.endpoints[i], caFile: client.options.tlsCAFile, deadline: min(attempt, deadline))
                    connection = c
                    current = i
                    serial += 1
                    return c
                } catch {
                    // The last one tried fails the call; the caller's deadline stops trying.
                    failure = error
                    if ContinuousClock.now >= deadline { break }
                }
            }
            // None answered: the next call starts with the one after.
            current = first
            moveOn = true
            throw failure!
        }

        /// The connection broke or was given up: the next open tries another sequencer first.
        mutating func drop() {
            connection = nil
            moveOn = true
        }
    }

    /// A call left open on this client's connection (`openStream`).
    public struct OpenStream: Sendable, Hashable {
        let connection: UInt64
        let id: Int32
    }

    /// `url`: a sequencer URL, or several separated by commas (tried in order, see above).
    public convenience init(url: String, options: ClientOptions = ClientOptions()) throws(SequencerError) {
        var endpoints: [Endpoint] = []
        for part in url.split(separator: ",", omittingEmptySubsequences: false) {
            let trimmed = String(part.drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())
            do {
                endpoints.append(try Endpoint(url: trimmed))
            } catch {
                throw SequencerError(.invalidArgument, error.message)
            }
        }
        self.init(endpoints: endpoints, current: 0, options: options)
    }

    /// A client of the same sequencer with a connection of its own, so that its
    /// requests never wait behind this one's (a lease keeper's renewals behind
    /// another database's big commit).
    public func dedicated() -> SequencerClient {
        SequencerClient(endpoints: endpoints, current: connection.withLock { $0.current }, options: options)
    }

    private init(endpoints: [Endpoint], current: Int, options: ClientOptions) {
        self.endpoints = endpoints
        self.options = options
        var slot = Slot()
        slot.current = current
        connection = Locked(slot)
    }

    // MARK: - RPCs

    public func capabilities() throws(SequencerError) -> Capabilities {
        try call(.getCapabilities, GetCapabilitiesRequest())
    }

    public func open(_ name: String, create: Bool) throws(SequencerError) -> DatabaseInfo {
        try call(.openDatabase, OpenDatabaseRequest(name: name, create: create))
    }

    /// Opens a database; with `since_version`, the answer lists the pages written since.
    public func open(_ request: OpenDatabaseRequest) throws(SequencerError) -> DatabaseInfo {
        try call(.openDatabase, request)
    }

    public func acquireLease(_ request: AcquireLeaseRequest) throws(SequencerError) -> Lease {
        // The sequencer may wait wait_ms before it answers.
        try call(.acquireLease, request, slack: .milliseconds(request.waitMs))
    }

    public func renewLease(_ request: RenewLeaseRequest, attempts: Int? = nil) throws(SequencerError) -> Lease {
        try call(.renewLease, request, attempts: attempts)
    }

    /// Holds the lease on this client's connection (HoldLease) until `cancel`
    /// or the connection closes; see `openStream` for `onEnd`.
    /// Opens a HoldLease call. `onEvent` runs for each event (the first says
    /// the hold is in place; later ones that another writer wants the lease),
    /// `onEnd` once when the call ends; both run inside this client's calls
    /// and must not call it.
    public func holdLease(
        _ request: HoldLeaseRequest, onEvent: @escaping @Sendable (HoldLeaseEvent) -> Void = { _ in },
        onEnd: @escaping @Sendable (SequencerError) -> Void
    ) throws(SequencerError) -> OpenStream {
        try openStream(.holdLease, request, onMessage: { bytes in
            if let event = try? HoldLeaseEvent(serializedBytes: bytes) { onEvent(event) }
        }, onEnd: onEnd)
    }

    /// One attempt, given up at `deadline` (closing a database must not hang on
    /// an unresponsive sequencer).
    public func releaseLease(_ request: ReleaseLeaseRequest, deadline: ContinuousClock.Instant? = nil) throws(SequencerError) {
        let _: ReleaseLeaseResponse = try call(.releaseLease, request, attempts: 1, deadline: deadline)
    }

    /// Drops a database (DropDatabase): with the caller's lease in `request`
    /// if it holds one. Safe to retry: a second drop finds it dropped.
    /// Every database (or `database`) as the sequencer holds it now (`synd status`).
    public func status(database: String = "") throws(SequencerError) -> GetStatusResponse {
        var request = GetStatusRequest()
        request.database = database
        return try call(.getStatus, request)
    }

    public func drop(_ request: DropDatabaseRequest) throws(SequencerError) -> DropDatabaseResponse {
        try call(.dropDatabase, request)
    }

    public func readPages(_ request: ReadPagesRequest) throws(SequencerError) -> ReadPagesResponse {
        try Self.checked(call(.readPages, request))
    }

    /// Sends a ReadPages request and returns without waiting for its answer,
    /// which arrives in the background on this client's connection while the
    /// caller works (a sequential scan's next read-ahead); `finishReadPages`
    /// waits for it, `cancelReadPages` gives it up. Not retried: a caller
    /// whose read ahead fails reads again the usual way.
    public func startReadPages(_ request: ReadPagesRequest) throws(SequencerError) -> PendingPages {
        let pending = PendingPages()
        let body = GRPCFraming.frame(request.serializedBytes())
        let deadline = ContinuousClock.now + options.requestTimeout
        pending.deadline = deadline
        let ms = max(1, (deadline - .now).milliseconds)
        try connection.withLock { (slot) throws(SequencerError) in
            do throws(TransportError) {
                let c = try slot.open(self, deadline: deadline)
                let id = try c.openStream(
                    path: SequencerMethod.readPages.rawValue,
                    headers: [("content-type", "application/grpc"), ("te", "trailers"),
                              ("grpc-timeout", "\(ms)m"), ("user-agent", "synddb-vfs/1")],
                    body: body, deadline: deadline, onData: { pending.received.appendBody($0) }
                ) { end in pending.end = end }
                pending.stream = OpenStream(connection: slot.serial, id: id)
            } catch {
                if slot.connection?.isOpen != true { slot.drop() }
                var e = SequencerError(error.kind == .deadline ? .deadlineExceeded : .unavailable, error.message)
                e.isTransport = true
                throw e
            }
        }
        return pending
    }

    /// Waits for the answer of a `startReadPages` request and returns it
    /// decoded and checked as `readPagesInPlace` does.
    public func finishReadPages(_ pending: PendingPages) throws(SequencerError) -> ReadPagesAnswer {
        try connection.withLock { (slot) throws(SequencerError) in
            guard pending.end == nil else { return }
            guard let stream = pending.stream, slot.serial == stream.connection, let c = slot.connection else {
                var e = SequencerError(.unavailable, "the connection of a read sent ahead closed")
                e.isTransport = true
                throw e
            }
            do throws(TransportError) {
                try c.waitForStream(stream.id, deadline: pending.deadline)
            } catch {
                slot.drop()
                var e = SequencerError(error.kind == .deadline ? .deadlineExceeded : .unavailable, error.message)
                e.isTransport = true
                throw e
            }
        }
        switch pending.end {
        case .ended(var response, let errorCode)?:
            if errorCode != 0 { throw Self.status(of: response, resetCode: errorCode, method: .readPages) }
            response.body = pending.received.body
            pending.received = HTTP2Response()
            return try Self.pageAnswer(response, endpoint: endpoint)
        case .connectionClosed?, nil:
            var e = SequencerError(.unavailable, "the connection closed before a read sent ahead was answered")
            e.isTransport = true
            throw e
        }
    }

    /// Gives up a `startReadPages` request (RST_STREAM) unless it already ended.
    public func cancelReadPages(_ pending: PendingPages) {
        guard let stream = pending.stream else { return }
        cancel(stream)
        pending.received = HTTP2Response()
    }

    /// `readPages`, with the pages left where they lie in the answer (no copy
    /// per page); each is checked (checksum and size) as `readPages` checks them.
    public func readPagesInPlace(_ request: ReadPagesRequest) throws(SequencerError) -> ReadPagesAnswer {
        try Self.pageAnswer(exchange(.readPages, request), endpoint: endpoint)
    }

    /// `response` if every page has its checksum and the page size (DATA_LOSS if not).
    package static func checked(_ response: ReadPagesResponse) throws(SequencerError) -> ReadPagesResponse {
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
        try commit(BytesBody(GRPCFraming.frame(request.serializedBytes())))
    }

    /// `commit(_:)` of `request` with `pages` as its pages (its own `pages`
    /// are ignored): the body is encoded while it is sent, reading one page
    /// at a time from `pages`, so a commit never costs a copy of the batch.
    public func commit(_ request: CommitRequest, pages: CommitPages) throws(SequencerError) -> CommitResponse {
        try commit(CommitBody(request, pages: pages))
    }

    /// `commit(_:pages:)` with `changeset` as its changeset (the request's own
    /// is ignored), read as it is sent: a large changeset from a file.
    public func commit(_ request: CommitRequest, pages: CommitPages, changeset: any CommitChangeset) throws(SequencerError) -> CommitResponse {
        try commit(CommitBody(request, pages: pages, changeset: changeset))
    }

    private func commit(_ body: any RequestBody) throws(SequencerError) -> CommitResponse {
        // A large batch gets time to travel: 20 ms per MB on top of the deadline.
        let slack = Duration.milliseconds(body.count / 50_000)
        var backoff = options.initialBackoff
        var mayHaveReached = false
        var attempt = 1
        while true {
            do throws(SequencerError) {
                return try Self.answer(once(.commit, body, slack: slack), method: .commit, endpoint: endpoint)
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

    /// Starts a server-streaming call on this client's connection and returns
    /// once it is sent, leaving it open; its messages are not read. `onEnd`
    /// runs once when the call ends: with the sequencer's status (`.ok` for a
    /// clean end) when it ended the call, or with a transport error when the
    /// connection closed, before its socket closes (so before the sequencer can
    /// see it go). It runs while this client's connection is locked (inside
    /// another request), so it must not call this client. `cancel` ends the
    /// call without `onEnd`.
    public func openStream<Request: WireMessage>(
        _ method: SequencerMethod, _ request: Request, onMessage: (@Sendable ([UInt8]) -> Void)? = nil,
        onEnd: @escaping @Sendable (SequencerError) -> Void
    ) throws(SequencerError) -> OpenStream {
        let body = GRPCFraming.frame(request.serializedBytes())
        let deadline = ContinuousClock.now + options.requestTimeout
        return try connection.withLock { (slot) throws(SequencerError) -> OpenStream in
            do throws(TransportError) {
                let c = try slot.open(self, deadline: deadline)
                let deframer = onMessage.map { MessageDeframer(onMessage: $0) }
                let id = try c.openStream(
                    path: method.rawValue,
                    headers: [("content-type", "application/grpc"), ("te", "trailers"), ("user-agent", "synddb-vfs/1")],
                    body: body, deadline: deadline, onData: deframer.map { d in { d.append($0) } }
                ) { end in
                    switch end {
                    case .connectionClosed:
                        var e = SequencerError(.unavailable, "the connection to the sequencer closed")
                        e.isTransport = true
                        onEnd(e)
                    case .ended(let response, let errorCode):
                        onEnd(Self.status(of: response, resetCode: errorCode, method: method))
                    }
                }
                return OpenStream(connection: slot.serial, id: id)
            } catch {
                // Given up either way; only a connection that broke sends the next one elsewhere.
                if slot.connection?.isOpen == true { slot.connection = nil } else { slot.drop() }
                var e = SequencerError(error.kind == .deadline ? .deadlineExceeded : .unavailable, error.message)
                e.isTransport = true
                throw e
            }
        }
    }

    /// Processes what the sequencer already sent on this client's connection,
    /// without waiting and without a request: calls left open with `openStream`
    /// that ended, or the connection's close, are reported to their `onEnd`
    /// now. Does nothing while a request holds the connection (it reads the
    /// same input).
    /// Processes what the sequencer already sent on the open calls (their
    /// events and ends), without waiting for more. Skipped while another
    /// thread uses the connection (that call reads it anyway), unless `wait`.
    public func processPendingInput(wait: Bool = false) {
        let deadline = ContinuousClock.now + options.requestTimeout
        if wait {
            connection.withLock { slot in
                guard let c = slot.connection else { return }
                do throws(TransportError) { try c.processPendingInput(deadline: deadline) } catch { slot.drop() }
            }
        } else {
            _ = connection.withLockIfAvailable { slot in
                guard let c = slot.connection else { return }
                do throws(TransportError) { try c.processPendingInput(deadline: deadline) } catch { slot.drop() }
            }
        }
    }

    /// Waits up to `timeoutMs` until the sequencer sent something on this
    /// client's connection or `wake` (a non-blocking pipe's read end) is
    /// readable, which it then drains. Does not read the connection: call `processPendingInput` after.
    public func waitForInput(wake: Int32, timeoutMs: Int32) {
        let fd = connection.withLock { $0.connection?.descriptor ?? -1 }
        var fds = [pollfd(fd: wake, events: Int16(POLLIN), revents: 0), pollfd(fd: fd, events: Int16(POLLIN), revents: 0)]
        guard poll(&fds, nfds_t(fds.count), timeoutMs) > 0 else { return }
        if fds[0].revents != 0 {
            var drain = [UInt8](repeating: 0, count: 64)
            _ = Glibc.read(wake, &drain, drain.count)
        }
    }

    /// Ends a call started with `openStream` (RST_STREAM), if its connection is
    /// still this client's; its `onEnd` does not run.
    public func cancel(_ stream: OpenStream) {
        let deadline = ContinuousClock.now + options.requestTimeout
        connection.withLock { slot in
            guard slot.serial == stream.connection, let c = slot.connection else { return }
            c.cancelStream(stream.id, deadline: deadline)
            if !c.isOpen { slot.drop() }
        }
    }

    /// The gRPC status a finished stream carries.
    package static func status(of response: HTTP2Response, resetCode: UInt32, method: SequencerMethod) -> SequencerError {
        if let raw = response.header("grpc-status"), let code = Int(raw).flatMap(GRPCStatusCode.init(rawValue:)) {
            return SequencerError(code, statusMessage(response, code, method))
        }
        if resetCode != 0 {
            return SequencerError(.unavailable, "the sequencer reset \(method.rawValue) (HTTP/2 error \(resetCode))")
        }
        return SequencerError(.unknown, "\(method.rawValue) ended without a grpc-status (HTTP \(response.status.map(String.init) ?? "?"))")
    }

    /// One unary gRPC call with retries on transport failures and UNAVAILABLE.
    public func call<Request: WireMessage, Response: WireMessage>(
        _ method: SequencerMethod, _ request: Request, attempts: Int? = nil, deadline: ContinuousClock.Instant? = nil,
        slack: Duration = .zero
    ) throws(SequencerError) -> Response {
        let response = try exchange(method, request, attempts: attempts, deadline: deadline, slack: slack)
        return try Self.answer(response, method: method, endpoint: endpoint)
    }

    /// One unary call, retried as `call` does; the response as it came (its status not yet read).
    private func exchange<Request: WireMessage>(
        _ method: SequencerMethod, _ request: Request, attempts: Int? = nil, deadline: ContinuousClock.Instant? = nil,
        slack: Duration = .zero
    ) throws(SequencerError) -> HTTP2Response {
        let body = BytesBody(GRPCFraming.frame(request.serializedBytes()))
        let attempts = max(1, attempts ?? options.maxAttempts)
        var backoff = options.initialBackoff
        var attempt = 1
        while true {
            do throws(SequencerError) {
                return try once(method, body, deadline: deadline, slack: slack)
            } catch let error where (error.isTransport || error.code == .unavailable) && attempt < attempts {
                attempt += 1
                let jitter = Double.random(in: 0.5...1.0)
                sleep(for: backoff * jitter)
                backoff = min(backoff * 2, options.maxBackoff)
            }
        }
    }

    private func once(
        _ method: SequencerMethod, _ body: any RequestBody, deadline fixed: ContinuousClock.Instant? = nil, slack: Duration = .zero
    ) throws(SequencerError) -> HTTP2Response {
        let deadline = fixed ?? ContinuousClock.now + options.requestTimeout + slack
        let response: HTTP2Response = try connection.withLock { (slot) throws(SequencerError) -> HTTP2Response in
            guard deadline > .now else {
                var e = SequencerError(.deadlineExceeded, "\(method.rawValue) not sent: its deadline passed while another request used the connection")
                e.isTransport = true
                throw e
            }
            do throws(TransportError) {
                let c = try slot.open(self, deadline: deadline)
                let ms = max(1, (deadline - .now).milliseconds)
                return try c.post(
                    path: method.rawValue,
                    headers: [("content-type", "application/grpc"), ("te", "trailers"),
                              ("grpc-timeout", "\(ms)m"), ("user-agent", "synddb-vfs/1")],
                    body: body, deadline: deadline)
            } catch {
                // A reset stream leaves the connection (and the calls open on it) up.
                if slot.connection?.isOpen != true { slot.drop() }
                var e = SequencerError(error.kind == .deadline ? .deadlineExceeded : .unavailable, error.message)
                e.isTransport = true
                e.requestMayHaveBeenSent = error.requestMayHaveBeenSent
                throw e
            }
        }
        // A refusal (UNAVAILABLE among them) is thrown here, inside the callers' retry loops.
        try Self.checkStatus(response, method: method, endpoint: endpoint)
        return response
    }

    /// The message of a finished unary call, or the error its HTTP status,
    /// grpc-status or body amounts to. Pure: fuzzed with hostile answers.
    package static func answer<Response: WireMessage>(
        _ response: HTTP2Response, method: SequencerMethod, endpoint: Endpoint
    ) throws(SequencerError) -> Response {
        try checkStatus(response, method: method, endpoint: endpoint)
        do {
            // Decoded where it lies in the body: a read-ahead answer is megabytes.
            var reader = ProtoReader(response.body, range: try GRPCFraming.messageRange(response.body))
            return try Response(reader: &reader)
        } catch {
            throw SequencerError(.internal, "malformed answer to \(method.rawValue): \(error)")
        }
    }

    /// A ReadPages answer decoded in place, every page checked as `readPages` checks them. Pure: fuzzed with hostile answers.
    package static func pageAnswer(_ response: HTTP2Response, endpoint: Endpoint) throws(SequencerError) -> ReadPagesAnswer {
        try checkStatus(response, method: .readPages, endpoint: endpoint)
        let answer: ReadPagesAnswer
        do {
            answer = try ReadPagesAnswer(buffer: response.body, range: try GRPCFraming.messageRange(response.body))
        } catch {
            throw SequencerError(.internal, "malformed answer to \(SequencerMethod.readPages.rawValue): \(error)")
        }
        for page in answer.pages where page.data.count != Int(answer.pageSize) || !answer.isIntact(page) {
            throw SequencerError(.dataLoss, "page \(page.number) from the sequencer fails its checksum or size; not using it")
        }
        return answer
    }

    /// Throws the error a finished call's HTTP status or grpc-status amounts to.
    private static func checkStatus(_ response: HTTP2Response, method: SequencerMethod, endpoint: Endpoint) throws(SequencerError) {
        guard response.status == 200 else {
            throw SequencerError(.unknown, "sequencer answered HTTP \(response.status.map(String.init) ?? "?") to \(method.rawValue); is \(endpoint) a SyndDB sequencer?")
        }
        guard let raw = response.header("grpc-status"), let code = Int(raw).flatMap(GRPCStatusCode.init(rawValue:)) else {
            throw SequencerError(.unknown, "sequencer sent no grpc-status for \(method.rawValue)")
        }
        guard code == .ok else {
            throw SequencerError(code, Self.statusMessage(response, code, method))
        }
    }

    private func sleep(for duration: Duration) {
        let (s, atto) = duration.components
        var ts = timespec(tv_sec: Int(s), tv_nsec: Int(atto / 1_000_000_000))
        var left = timespec()
        while nanosleep(&ts, &left) != 0 && errno == EINTR { ts = left }
    }

    /// The grpc-message; when it is missing or empty, the status and call.
    private static func statusMessage(_ response: HTTP2Response, _ code: GRPCStatusCode, _ method: SequencerMethod) -> String {
        let message = percentDecoded(response.header("grpc-message") ?? "")
        return message.isEmpty ? "\(method.rawValue) answered \(code) with no message" : message
    }

    package static func percentDecoded(_ s: String) -> String {
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

/// A ReadPages request sent with `startReadPages` whose answer has not been
/// taken yet.
///
/// `@unchecked Sendable`: its fields are written only while the client's
/// connection is locked (when the request is sent, and by the connection's
/// callbacks, which run inside locked calls) and read by `finishReadPages`
/// after that lock showed the stream ended, so never at the same time.
public final class PendingPages: @unchecked Sendable {
    fileprivate var stream: SequencerClient.OpenStream?
    fileprivate var deadline = ContinuousClock.now
    /// The answer's DATA as it arrives (its headers come with `end`).
    fileprivate var received = HTTP2Response()
    fileprivate var end: BackgroundStreamEnd?

    fileprivate init() {}
}

/// Cuts a gRPC response stream into its messages (uncompressed, as the
/// sequencer sends them). Used only inside one connection's calls.
private final class MessageDeframer {
    private var buffer: [UInt8] = []
    private let onMessage: @Sendable ([UInt8]) -> Void

    init(onMessage: @escaping @Sendable ([UInt8]) -> Void) {
        self.onMessage = onMessage
    }

    /// Where the next message starts in `buffer` (consumed bytes are dropped
    /// in one move, not one per message: a read can hold hundreds of them).
    private var start = 0

    func append(_ data: UnsafeRawBufferPointer) {
        buffer.append(contentsOf: data)
        while buffer.count - start >= 5 {
            let n = Int(buffer[start + 1]) << 24 | Int(buffer[start + 2]) << 16 | Int(buffer[start + 3]) << 8 | Int(buffer[start + 4])
            guard buffer.count - start >= 5 + n else { break }
            let message = Array(buffer[(start + 5)..<(start + 5 + n)])
            start += 5 + n
            onMessage(message)
        }
        if start == buffer.count {
            buffer = []
            start = 0
        } else if start > 0 && start >= buffer.count / 2 {
            buffer.removeFirst(start)
            start = 0
        }
    }
}

extension Duration {
    /// Whole milliseconds (truncated).
    public var milliseconds: Int64 {
        let (s, atto) = components
        return s * 1000 + atto / 1_000_000_000_000_000
    }
}
