import CNGHTTP2

#if canImport(Glibc)
import Glibc
#endif

/// A connected TCP socket, optionally wrapped in TLS. Blocking I/O; every read
/// waits with poll() up to the caller's deadline.
final class Socket {
    private var fd: Int32
    private var ssl: OpaquePointer?
    private var sslContext: OpaquePointer?

    init(endpoint: Endpoint, caFile: String?, deadline: ContinuousClock.Instant) throws(TransportError) {
        fd = try Socket.connect(endpoint, deadline: deadline)
        if endpoint.tls {
            do {
                try startTLS(endpoint, caFile: caFile, deadline: deadline)
            } catch {
                close()
                throw error
            }
        }
    }

    deinit { close() }

    func close() {
        if let ssl { SSL_free(ssl) }
        if let sslContext { SSL_CTX_free(sslContext) }
        ssl = nil
        sslContext = nil
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }

    private static func connect(_ endpoint: Endpoint, deadline: ContinuousClock.Instant) throws(TransportError) -> Int32 {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(endpoint.host, String(endpoint.port), &hints, &list)
        guard rc == 0, let list else {
            throw TransportError(.connect, "cannot resolve sequencer host '\(endpoint.host)': \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(list) }
        var lastError = "no address"
        var ai: UnsafeMutablePointer<addrinfo>? = list
        while let a = ai {
            ai = a.pointee.ai_next
            let fd = socket(a.pointee.ai_family, a.pointee.ai_socktype, a.pointee.ai_protocol)
            if fd < 0 { continue }
            let flags = fcntl(fd, F_GETFL, 0)
            _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
            var r = Glibc.connect(fd, a.pointee.ai_addr, a.pointee.ai_addrlen)
            if r != 0 && errno == EINPROGRESS {
                var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                r = poll(&p, 1, Socket.timeoutMs(deadline))
                if r == 1 {
                    var err: Int32 = 0
                    var len = socklen_t(MemoryLayout<Int32>.size)
                    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len)
                    r = err == 0 ? 0 : -1
                    errno = err
                } else {
                    r = -1
                    errno = ETIMEDOUT
                }
            }
            if r == 0 {
                _ = fcntl(fd, F_SETFL, flags)
                var one: Int32 = 1
                setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
                setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, socklen_t(MemoryLayout<Int32>.size))
                return fd
            }
            lastError = String(cString: strerror(errno))
            Glibc.close(fd)
        }
        throw TransportError(.connect, "cannot connect to sequencer at \(endpoint): \(lastError); is `synd sequencer` running there?")
    }

    private func startTLS(_ endpoint: Endpoint, caFile: String?, deadline: ContinuousClock.Instant) throws(TransportError) {
        guard let ctx = SSL_CTX_new(TLS_client_method()) else { throw TransportError(.tls, "OpenSSL: cannot create a TLS context") }
        sslContext = ctx
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nil)
        if let ca = caFile {
            guard SSL_CTX_load_verify_locations(ctx, ca, nil) == 1 else {
                throw TransportError(.tls, "cannot load the CA certificate file \(ca) (tls_ca / SYNDDB_TLS_CA_FILE)")
            }
        } else {
            SSL_CTX_set_default_verify_paths(ctx)
        }
        let alpn: [UInt8] = [2, 0x68, 0x32]  // "h2"
        _ = SSL_CTX_set_alpn_protos(ctx, alpn, UInt32(alpn.count))
        guard let ssl = SSL_new(ctx) else { throw TransportError(.tls, "OpenSSL: cannot create a TLS session") }
        self.ssl = ssl
        SSL_set_fd(ssl, fd)
        _ = synd_ssl_set_tlsext_host_name(ssl, endpoint.host)
        SSL_set1_host(ssl, endpoint.host)
        setTimeouts(deadline)
        guard SSL_connect(ssl) == 1 else {
            let code = ERR_get_error()
            var buffer = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &buffer, buffer.count)
            let verify = SSL_get_verify_result(ssl)
            let why = verify != X509_V_OK
                ? String(cString: X509_verify_cert_error_string(verify))
                : String(cString: buffer)
            throw TransportError(.tls, "TLS handshake with \(endpoint) failed: \(why); give the sequencer's CA certificate with tls_ca=FILE or SYNDDB_TLS_CA_FILE if it is not in the system store")
        }
        var proto: UnsafePointer<UInt8>?
        var protoLen: UInt32 = 0
        SSL_get0_alpn_selected(ssl, &proto, &protoLen)
        guard protoLen == 2, let proto, proto[0] == 0x68, proto[1] == 0x32 else {
            throw TransportError(.tls, "sequencer at \(endpoint) did not agree to HTTP/2 (ALPN h2)")
        }
    }

    private static func timeoutMs(_ deadline: ContinuousClock.Instant) -> Int32 {
        let left = deadline - .now
        if left <= .zero { return 0 }
        let (s, atto) = left.components
        return Int32(clamping: s * 1000 + atto / 1_000_000_000_000_000 + 1)
    }

    private func setTimeouts(_ deadline: ContinuousClock.Instant) {
        let ms = max(Socket.timeoutMs(deadline), 1)
        var tv = timeval(tv_sec: Int(ms / 1000), tv_usec: Int(ms % 1000) * 1000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Writes all of `bytes` before the deadline.
    func write(_ bytes: UnsafeRawBufferPointer, deadline: ContinuousClock.Instant) throws(TransportError) {
        guard fd >= 0 else { throw TransportError(.io, "connection is closed") }
        // TLS writes block up to the socket timeouts. Plain writes do not block
        // at all and wait with poll() only when the socket is full: no two
        // setsockopt calls per request on the commit path.
        if ssl != nil { setTimeouts(deadline) }
        var offset = 0
        while offset < bytes.count {
            let n: Int
            if let ssl {
                n = Int(SSL_write(ssl, bytes.baseAddress! + offset, Int32(bytes.count - offset)))
            } else {
                n = Glibc.send(fd, bytes.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
            }
            if n > 0 {
                offset += n
            } else if n < 0 && errno == EINTR {
                continue
            } else if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                if ssl == nil {
                    var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                    let r = poll(&p, 1, Socket.timeoutMs(deadline))
                    if r > 0 || (r < 0 && errno == EINTR) { continue }
                }
                throw TransportError(.deadline, "sending to the sequencer timed out")
            } else {
                throw TransportError(.io, "sending to the sequencer failed: \(String(cString: strerror(errno)))")
            }
        }
    }

    /// Whether a read would not block: bytes, or the peer's close, are waiting.
    /// Never waits.
    /// The file descriptor to poll for input (-1 once closed).
    var descriptor: Int32 { fd }

    var hasInput: Bool {
        guard fd >= 0 else { return false }
        if let ssl, SSL_pending(ssl) > 0 { return true }
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&p, 1, 0) > 0 && p.revents != 0
    }

    /// Reads what is available, waiting up to the deadline; 0 means the peer closed.
    func read(into buffer: UnsafeMutableRawBufferPointer, deadline: ContinuousClock.Instant) throws(TransportError) -> Int {
        guard fd >= 0 else { throw TransportError(.io, "connection is closed") }
        while true {
            if ssl == nil || SSL_pending(ssl) == 0 {
                var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                let r = poll(&p, 1, Socket.timeoutMs(deadline))
                if r == 0 { throw TransportError(.deadline, "the sequencer did not answer before the deadline") }
                if r < 0 {
                    if errno == EINTR { continue }
                    throw TransportError(.io, "poll failed: \(String(cString: strerror(errno)))")
                }
            }
            let n: Int
            if let ssl {
                setTimeouts(deadline)
                n = Int(SSL_read(ssl, buffer.baseAddress, Int32(buffer.count)))
                if n <= 0 {
                    let e = SSL_get_error(ssl, Int32(n))
                    if e == SSL_ERROR_ZERO_RETURN { return 0 }
                    if e == SSL_ERROR_WANT_READ { continue }
                    throw TransportError(.io, "TLS read from the sequencer failed (SSL error \(e))")
                }
            } else {
                n = Glibc.recv(fd, buffer.baseAddress, buffer.count, 0)
                if n < 0 {
                    if errno == EINTR || errno == EAGAIN { continue }
                    throw TransportError(.io, "reading from the sequencer failed: \(String(cString: strerror(errno)))")
                }
            }
            return n
        }
    }
}
