import CNGHTTP2

/// One HTTP/2 connection to a sequencer on libnghttp2: one request at a time
/// (`post`), plus any number of streams left open in the background
/// (`openStream`), whose frames are processed whenever the connection is read.
///
/// Not thread-safe: its owner (`SequencerClient`) serializes access. After any
/// transport error the connection is closed and must be replaced.
public final class HTTP2Connection {
    public let endpoint: Endpoint
    private let socket: Socket
    private var session: OpaquePointer?
    private var stream: StreamState?
    /// Streams opened with `openStream`, by id, until they close.
    private var background: [Int32: StreamState] = [:]
    private var pending: [UInt8] = []
    private let readBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 << 10, alignment: 16)
    public private(set) var isOpen = true

    /// Connects (TCP, then TLS for https) and sends the HTTP/2 preface and SETTINGS.
    /// - Parameter caFile: PEM file of the CA to trust for https (default: the system store).
    public init(endpoint: Endpoint, caFile: String? = nil, deadline: ContinuousClock.Instant) throws(TransportError) {
        self.endpoint = endpoint
        self.socket = try Socket(endpoint: endpoint, caFile: caFile, deadline: deadline)
        var callbacks: OpaquePointer?
        nghttp2_session_callbacks_new(&callbacks)
        defer { nghttp2_session_callbacks_del(callbacks) }
        nghttp2_session_callbacks_set_on_header_callback(callbacks) { _, frame, name, nameLength, value, valueLength, _, user in
            let connection = Unmanaged<HTTP2Connection>.fromOpaque(user!).takeUnretainedValue()
            guard let frame, let stream = connection.streamState(frame.pointee.hd.stream_id), let name, let value
            else { return 0 }
            let n = String(decoding: UnsafeBufferPointer(start: name, count: nameLength), as: UTF8.self)
            let v = String(decoding: UnsafeBufferPointer(start: value, count: valueLength), as: UTF8.self)
            stream.response.headers.append((n, v))
            return 0
        }
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks) { _, _, streamID, data, length, user in
            let connection = Unmanaged<HTTP2Connection>.fromOpaque(user!).takeUnretainedValue()
            guard let data else { return 0 }
            if let stream = connection.stream, stream.id == streamID {
                stream.response.appendBody(UnsafeRawBufferPointer(start: data, count: length))
            } else if let stream = connection.background[streamID] {
                // A background stream's data is handed on as it comes, not kept.
                stream.onData?(UnsafeRawBufferPointer(start: data, count: length))
            }
            return 0
        }
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks) { _, streamID, errorCode, user in
            let connection = Unmanaged<HTTP2Connection>.fromOpaque(user!).takeUnretainedValue()
            if let stream = connection.stream, stream.id == streamID {
                stream.closed = true
                stream.errorCode = errorCode
            } else if let stream = connection.background.removeValue(forKey: streamID) {
                stream.closed = true
                stream.errorCode = errorCode
                stream.onClose?(.ended(stream.response, errorCode: errorCode))
                stream.onClose = nil
            }
            return 0
        }
        var session: OpaquePointer?
        guard nghttp2_session_client_new(&session, callbacks, Unmanaged.passUnretained(self).toOpaque()) == 0 else {
            socket.close()
            throw TransportError(.http2, "nghttp2: cannot create a client session")
        }
        self.session = session
        // Large windows: a commit of many pages should not wait for WINDOW_UPDATEs.
        var settings = [
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_ENABLE_PUSH.rawValue), value: 0),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue), value: 16 << 20),
        ]
        nghttp2_submit_settings(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), &settings, settings.count)
        nghttp2_session_set_local_window_size(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0, 64 << 20)
        do throws(TransportError) {
            try flush(deadline: deadline)
        } catch {
            close()
            throw error
        }
    }

    deinit {
        close()
        readBuffer.deallocate()
    }

    /// Closes the connection. Background streams learn it first, before the
    /// socket closes (and so before the server can see the connection go).
    public func close() {
        let open = background
        background = [:]
        for stream in open.values.sorted(by: { $0.id < $1.id }) {
            stream.onClose?(.connectionClosed)
            stream.onClose = nil
        }
        if let session { nghttp2_session_del(session) }
        session = nil
        socket.close()
        isOpen = false
    }

    /// The socket to poll for input (-1 once closed).
    public var descriptor: Int32 { isOpen ? socket.descriptor : -1 }

    /// Processes what the server already sent, without waiting: frames of the
    /// background streams (their `onClose` runs for those that ended), or the
    /// server's close (the connection is then closed, and every background
    /// stream learns it). Lets a holder of an open stream notice at once that
    /// its connection is gone, without a request.
    public func processPendingInput(deadline: ContinuousClock.Instant) throws(TransportError) {
        guard isOpen, let session else { throw TransportError(.io, "connection to \(endpoint) is closed") }
        do throws(TransportError) {
            while socket.hasInput {
                let n = try socket.read(into: readBuffer, deadline: deadline)
                guard n > 0 else { throw TransportError(.io, "the sequencer closed the connection") }
                let consumed = nghttp2_session_mem_recv(session, readBuffer.baseAddress!.assumingMemoryBound(to: UInt8.self), n)
                guard consumed >= 0 else {
                    throw TransportError(.http2, "HTTP/2 protocol error from the sequencer: \(String(cString: nghttp2_strerror(Int32(consumed))))")
                }
            }
            guard nghttp2_session_want_read(session) != 0 || nghttp2_session_want_write(session) != 0 else {
                throw TransportError(.http2, "the sequencer ended the HTTP/2 connection (GOAWAY)")
            }
            try flush(deadline: deadline)  // PING and SETTINGS ACKs, WINDOW_UPDATEs
        } catch {
            close()
            throw error
        }
    }

    /// Reads the connection until the background stream `id` has ended (its
    /// `onClose` ran), processing every stream's frames as they come; returns
    /// at once if it is not open. A transport failure closes the connection
    /// (every background stream learns it) and is thrown.
    public func waitForStream(_ id: Int32, deadline: ContinuousClock.Instant) throws(TransportError) {
        guard isOpen, let session else { throw TransportError(.io, "connection to \(endpoint) is closed") }
        do throws(TransportError) {
            while background[id] != nil {
                try flush(deadline: deadline)  // WINDOW_UPDATEs: a large answer waits for them
                try receiveOnce(session, deadline: deadline)
            }
            try flush(deadline: deadline)
        } catch {
            close()
            throw error
        }
    }

    /// Waits for input and hands what one read brings to nghttp2 (whose
    /// callbacks then run); throws if the server ended the connection.
    private func receiveOnce(_ session: OpaquePointer, deadline: ContinuousClock.Instant) throws(TransportError) {
        guard nghttp2_session_want_read(session) != 0 || nghttp2_session_want_write(session) != 0 else {
            throw TransportError(.http2, "the sequencer ended the HTTP/2 connection (GOAWAY)")
        }
        let n = try socket.read(into: readBuffer, deadline: deadline)
        guard n > 0 else { throw TransportError(.io, "the sequencer closed the connection") }
        let consumed = nghttp2_session_mem_recv(session, readBuffer.baseAddress!.assumingMemoryBound(to: UInt8.self), n)
        guard consumed >= 0 else {
            throw TransportError(.http2, "HTTP/2 protocol error from the sequencer: \(String(cString: nghttp2_strerror(Int32(consumed))))")
        }
    }

    /// Sends one POST with `body` and waits for the whole response, trailers included.
    public func post(path: String, headers extra: [(String, String)], body: [UInt8], deadline: ContinuousClock.Instant) throws(TransportError) -> HTTP2Response {
        try post(path: path, headers: extra, body: BytesBody(body), deadline: deadline)
    }

    /// Sends one POST whose body is read from `body` as DATA frames go out
    /// (never copied whole), and waits for the whole response.
    public func post(path: String, headers extra: [(String, String)], body: any RequestBody, deadline: ContinuousClock.Instant) throws(TransportError) -> HTTP2Response {
        guard isOpen, let session else { throw TransportError(.io, "connection to \(endpoint) is closed") }
        let stream = StreamState(body: body)
        self.stream = stream
        defer { self.stream = nil }
        try submit(stream, path: path, headers: extra, session: session)
        do throws(TransportError) {
            while !stream.closed {
                try flush(deadline: deadline)
                stream.mayHaveBeenSent = true
                if stream.closed { break }
                try receiveOnce(session, deadline: deadline)
            }
            try flush(deadline: deadline)  // WINDOW_UPDATEs and ACKs
        } catch {
            close()
            var e = error
            e.requestMayHaveBeenSent = stream.mayHaveBeenSent
            throw e
        }
        if let failure = stream.bodyFailure {
            // The body stopped short and the stream was reset: the server has
            // no complete request, so nothing of it can have been applied.
            throw TransportError(.io, "the request body could not be read: \(failure)", requestMayHaveBeenSent: false)
        }
        if stream.errorCode != 0 {
            throw TransportError(.http2, "the sequencer reset the stream (HTTP/2 error \(stream.errorCode))", requestMayHaveBeenSent: true)
        }
        return stream.response
    }

    /// Sends a POST with `body` (the request side ends with it) and returns at
    /// once with the stream id, leaving the stream open: its response is not
    /// waited for. Its frames are processed whenever the connection is read
    /// (by `post`), and `onClose` runs once when it ends: the server finished
    /// or reset it, or the connection closed (then before the socket closes).
    /// `onClose` runs inside this connection's calls and must not call it.
    /// A stream cancelled with `cancelStream` is not reported.
    public func openStream(
        path: String, headers extra: [(String, String)], body: [UInt8], deadline: ContinuousClock.Instant,
        onData: ((UnsafeRawBufferPointer) -> Void)? = nil,
        onClose: @escaping (BackgroundStreamEnd) -> Void
    ) throws(TransportError) -> Int32 {
        guard isOpen, let session else { throw TransportError(.io, "connection to \(endpoint) is closed") }
        let stream = StreamState(body: BytesBody(body))
        try submit(stream, path: path, headers: extra, session: session)
        stream.onClose = onClose
        stream.onData = onData
        background[stream.id] = stream
        do throws(TransportError) {
            try flush(deadline: deadline)
        } catch {
            close()
            throw error
        }
        return stream.id
    }

    /// Resets a stream opened with `openStream` (RST_STREAM CANCEL) without
    /// reporting its end.
    public func cancelStream(_ id: Int32, deadline: ContinuousClock.Instant) {
        guard isOpen, let session, let stream = background[id] else { return }
        stream.onClose = nil  // kept until nghttp2 closes it: its data source points at it
        stream.onData = nil
        nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), id, NGHTTP2_CANCEL.rawValue)
        do throws(TransportError) { try flush(deadline: deadline) } catch { close() }
    }

    /// Submits `stream`'s request; nothing is written until the next flush.
    private func submit(_ stream: StreamState, path: String, headers extra: [(String, String)], session: OpaquePointer) throws(TransportError) {
        var headers: [(String, String)] = [
            (":method", "POST"), (":scheme", endpoint.tls ? "https" : "http"),
            (":authority", endpoint.authority), (":path", path),
        ]
        headers += extra
        let streamID = Self.withHeaderVector(headers) { nva, count -> Int32 in
            var provider = nghttp2_data_provider()
            provider.source.ptr = Unmanaged.passUnretained(stream).toOpaque()
            provider.read_callback = { _, _, buffer, length, flags, source, _ in
                let stream = Unmanaged<StreamState>.fromOpaque(source!.pointee.ptr).takeUnretainedValue()
                let left = stream.body.count - stream.sent
                var n = 0
                if left > 0 {
                    let target = UnsafeMutableRawBufferPointer(start: buffer!, count: min(length, left))
                    guard let read = stream.body.read(at: stream.sent, into: target), read > 0, read <= target.count else {
                        stream.bodyFailure = stream.body.failure ?? "the body ended early"
                        return Int(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue)
                    }
                    n = read
                }
                stream.sent += n
                if stream.sent == stream.body.count { flags!.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue }
                return n
            }
            return nghttp2_submit_request(session, nil, nva, count, &provider, nil)
        }
        guard streamID > 0 else {
            close()
            throw TransportError(.http2, "nghttp2 refused the request: \(String(cString: nghttp2_strerror(streamID)))")
        }
        stream.id = streamID
    }

    /// The stream `id` belongs to: the request in flight or a background one.
    private func streamState(_ id: Int32) -> StreamState? {
        if let stream, stream.id == id { return stream }
        return background[id]
    }

    /// Writes everything nghttp2 has queued, in one write when it fits.
    private func flush(deadline: ContinuousClock.Instant) throws(TransportError) {
        guard let session else { throw TransportError(.io, "connection is closed") }
        pending.removeAll(keepingCapacity: true)
        while true {
            var data: UnsafePointer<UInt8>?
            let n = nghttp2_session_mem_send(session, &data)
            if n < 0 {
                throw TransportError(.http2, "nghttp2: \(String(cString: nghttp2_strerror(Int32(n))))")
            }
            if n == 0 { break }
            pending.append(contentsOf: UnsafeBufferPointer(start: data, count: n))
            if pending.count >= 1 << 20 {
                // A large body goes out as it is framed, not gathered whole.
                try writePending(deadline: deadline)
            }
        }
        try writePending(deadline: deadline)
    }

    private func writePending(deadline: ContinuousClock.Instant) throws(TransportError) {
        defer { pending.removeAll(keepingCapacity: pending.capacity <= 2 << 20) }
        if !pending.isEmpty {
            let bytes = pending
            let failure: TransportError? = bytes.withUnsafeBytes { buffer in
                do throws(TransportError) { try socket.write(buffer, deadline: deadline) } catch { return error }
                return nil
            }
            if let failure { throw failure }
        }
    }

    private static func withHeaderVector<R>(_ headers: [(String, String)], _ body: (UnsafePointer<nghttp2_nv>, Int) -> R) -> R {
        var bytes: [UInt8] = []
        var spans: [(Int, Int, Int, Int)] = []
        for (n, v) in headers {
            let ns = bytes.count
            bytes += n.utf8
            let vs = bytes.count
            bytes += v.utf8
            spans.append((ns, n.utf8.count, vs, v.utf8.count))
        }
        return bytes.withUnsafeMutableBufferPointer { b in
            let nva = spans.map { s in
                nghttp2_nv(name: b.baseAddress! + s.0, value: b.baseAddress! + s.2, namelen: s.1, valuelen: s.3,
                           flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue))
            }
            return nva.withUnsafeBufferPointer { body($0.baseAddress!, $0.count) }
        }
    }
}

/// How a stream opened with `HTTP2Connection.openStream` ended.
public enum BackgroundStreamEnd {
    /// The server ended it: its headers and trailers (no body is kept), and the
    /// HTTP/2 error code if it was reset (0 otherwise).
    case ended(HTTP2Response, errorCode: UInt32)
    /// The connection closed (a transport error, or its owner closed it).
    case connectionClosed
}

/// A request: what to send and what came back.
private final class StreamState {
    let body: any RequestBody
    var sent = 0
    /// Set when `body` could not be read; the stream was reset.
    var bodyFailure: String?
    var id: Int32 = 0
    var response = HTTP2Response()
    var closed = false
    var errorCode: UInt32 = 0
    var mayHaveBeenSent = false
    /// For a background stream: told once when it ends.
    var onClose: ((BackgroundStreamEnd) -> Void)?
    /// For a background stream: its DATA as it arrives.
    var onData: ((UnsafeRawBufferPointer) -> Void)?

    init(body: any RequestBody) { self.body = body }
}
