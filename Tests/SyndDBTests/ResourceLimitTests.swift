import Foundation
import SyndClient
import SyndDB
import SyndProtocol
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Hostile and careless clients against a real sequencer process: many idle
/// connections, connections that never speak, streams whose client never
/// reads, and more connections than allowed. Others stay served.
@Suite struct ResourceLimitTests {
    let dir = TemporaryDirectory()

    /// A TCP connection to 127.0.0.1:`port` (blocking connect).
    static func connectTCP(_ port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket: errno \(errno)") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            close(fd)
            throw TestFailure("connect: errno \(errno)")
        }
        return fd
    }

    static func send(_ fd: Int32, _ bytes: [UInt8]) throws {
        guard write(fd, bytes, bytes.count) == bytes.count else { throw TestFailure("write: errno \(errno)") }
    }

    /// The HTTP/2 client preface and an empty SETTINGS frame.
    static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8) + [0, 0, 0, 0x4, 0, 0, 0, 0, 0]

    static func frame(type: UInt8, flags: UInt8, stream: UInt32, _ payload: [UInt8]) -> [UInt8] {
        let n = payload.count
        return [UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF), type, flags,
                UInt8(stream >> 24 & 0x7F), UInt8(stream >> 16 & 0xFF), UInt8(stream >> 8 & 0xFF), UInt8(stream & 0xFF)] + payload
    }

    /// A StreamBatches call on stream 1 (HPACK literals, no Huffman), whose answers are never read.
    static func streamBatchesCall(_ database: String) -> [UInt8] {
        func literal(_ name: String, _ value: String) -> [UInt8] {
            [0x00, UInt8(name.utf8.count)] + Array(name.utf8) + [UInt8(value.utf8.count)] + Array(value.utf8)
        }
        let headers = literal(":method", "POST") + literal(":scheme", "http") + literal(":path", SequencerMethod.streamBatches.rawValue)
            + literal(":authority", "127.0.0.1") + literal("content-type", "application/grpc") + literal("te", "trailers")
        var request = StreamBatchesRequest()
        request.database = database
        request.fromVersion = 1
        let body = request.serializedBytes()
        let n = body.count
        let message: [UInt8] = [0, UInt8(n >> 24 & 0xFF), UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF)] + body
        return preface + frame(type: 0x1, flags: 0x4, stream: 1, headers) + frame(type: 0x0, flags: 0x1, stream: 1, message)
    }

    /// Whether the peer closed `fd`: reads what is there without waiting
    /// (up to `wait`), and says true once a read returns end of file.
    static func closedByPeer(_ fd: Int32, wait: Duration = .milliseconds(200)) -> Bool {
        var buffer = [UInt8](repeating: 0, count: 65536)
        let deadline = ContinuousClock.now + wait
        while true {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let left = max(0, (deadline - .now).components.seconds * 1000 + (deadline - .now).components.attoseconds / 1_000_000_000_000_000)
            guard poll(&poller, 1, Int32(left)) > 0 else { return false }
            let n = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
            if n == 0 { return true }
            if n < 0 { return errno == ECONNRESET }
        }
    }

    static func rssMB(_ pid: Int32) -> Double {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) else { return 0 }
        return (Double(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) / 1024
    }

    static func median(_ values: [Duration]) -> Duration { values.sorted()[values.count / 2] }

    /// The hostile clients, in a Python process of their own: a thousand
    /// sockets in this one would trip Foundation's Process.run() for tests
    /// starting processes meanwhile (see scripts/test.sh). Opens `idle` HTTP/2
    /// connections (preface, then nothing), `silent` ones (not a byte), and
    /// `readers` that send `call` and never read; says "ready"; on a line from
    /// its input, says how many silent and idle ones the server closed.
    static let hostileClients = """
        import resource, select, socket, sys, time
        port, idle_n, silent_n, call, readers_n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), bytes.fromhex(sys.argv[4]), int(sys.argv[5])
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4096)), hard))
        preface = b"PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
        idle, silent, readers = [], [], []
        for i in range(idle_n + silent_n):
            s = socket.create_connection(("127.0.0.1", port))
            if i % 10 == 0 and len(silent) < silent_n:
                silent.append(s)
            else:
                s.sendall(preface)
                idle.append(s)
        for i in range(readers_n):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(call)
            readers.append(s)
        print("ready", flush=True)
        sys.stdin.readline()
        def closed(s, wait):
            end = time.time() + wait
            p = select.poll()
            p.register(s, select.POLLIN)
            while True:
                if not p.poll(max(0, int((end - time.time()) * 1000))):
                    return False
                try:
                    if not s.recv(65536, socket.MSG_DONTWAIT):
                        return True
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    return True
        print(sum(closed(s, 2) for s in silent), sum(closed(s, 0.001) for s in idle), flush=True)
        sys.stdin.readline()
        """

    /// 900 idle HTTP/2 connections, 100 that never send a byte, and three
    /// streams of 15 MB of batches whose client never reads: a writer's
    /// commits keep their latency, the sequencer's memory stays bounded, and
    /// the silent connections are closed at the handshake deadline (only they).
    @Test func idleSilentAndNonReadingClientsLeaveOthersServed() async throws {
        let sequencer = try SequencerProcess(
            directory: dir.path + "/seq", extraArguments: ["--handshake-timeout", "3", "--metrics-port", "0"])
        let port = sequencer.port
        let metricsPort = try MetricsTests.metricsPort(sequencer)
        let url = sequencer.url
        let name = uniqueName("hostile")
        try await offPool {
            let writer = try Database.open(name, sequencer: url)
            try writer.execute("CREATE TABLE big(b BLOB)")
            for _ in 0..<15 {
                try writer.execute("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10) INSERT INTO big SELECT randomblob(100000) FROM c")
            }
            try writer.execute("CREATE TABLE t(x)")
            func commits() throws -> Duration {
                var times: [Duration] = []
                for i in 0..<40 {
                    let started = ContinuousClock.now
                    try writer.execute("INSERT INTO t VALUES (\(i))")
                    times.append(.now - started)
                }
                return Self.median(times)
            }
            let before = try commits()
            let rssBefore = Self.rssMB(sequencer.process.processIdentifier)

            let hostile = Process()
            hostile.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
            let call = Self.streamBatchesCall(name).map { String(format: "%02x", $0) }.joined()
            hostile.arguments = ["-c", Self.hostileClients, String(port), "900", "100", call, "3"]
            let input = Pipe(), output = Pipe()
            hostile.standardInput = input
            hostile.standardOutput = output
            try startProcess(hostile)
            defer {
                // SIGKILL: it may have inherited a mask that blocks SIGTERM.
                kill(hostile.processIdentifier, SIGKILL)
                hostile.waitUntilExit()
            }
            func line() throws -> String {
                var text = Data()
                while true {
                    let byte = output.fileHandleForReading.readData(ofLength: 1)
                    if byte.isEmpty || byte == Data("\n".utf8) { break }
                    text += byte
                }
                return String(decoding: text, as: UTF8.self)
            }
            #expect(try line() == "ready")
            usleep(500_000)
            let during = try commits()
            let rssDuring = Self.rssMB(sequencer.process.processIdentifier)
            print("resource limits: commit p50 \(before) alone, \(during) beside 1,000 idle connections and 3 unread streams; sequencer RSS \(rssBefore) MB -> \(rssDuring) MB")
            #expect(during <= before * 3 + .milliseconds(5), "commit p50 \(before) alone, \(during) under the load")
            #expect(rssDuring - rssBefore < 256, "the sequencer grew from \(rssBefore) MB to \(rssDuring) MB")

            // The silent ones are closed at the deadline (3 s after they connected); the others are kept.
            usleep(3_000_000)
            input.fileHandleForWriting.write(Data("check\n".utf8))
            let counts = try line().split(separator: " ").compactMap { Int($0) }
            #expect(counts == [100, 0], "silent and idle connections closed: \(counts)")
            let scrape = MetricsTests.Scrape(try MetricsTests.get(port: metricsPort, path: "/metrics").body)
            #expect(scrape.value("synddb_connections_timed_out_total") == 100)
            #expect(try writer.scalar("SELECT count(*) FROM t") == .integer(80))
        }
    }

    /// Past --max-connections, a connection is closed as soon as it is
    /// accepted, and counted; once others close, new clients get in.
    @Test func connectionsPastTheLimitAreClosedAtOnce() async throws {
        let sequencer = try SequencerProcess(directory: dir.path + "/limit", extraArguments: ["--max-connections", "20", "--metrics-port", "0"])
        let port = sequencer.port
        let metricsPort = try MetricsTests.metricsPort(sequencer)
        let url = sequencer.url
        try await offPool {
            var fds: [Int32] = []
            defer { for fd in fds { close(fd) } }
            for _ in 0..<30 {
                let fd = try Self.connectTCP(port)
                try Self.send(fd, Self.preface)
                fds.append(fd)
            }
            let closed = fds.filter { Self.closedByPeer($0, wait: .milliseconds(500)) }.count
            #expect(closed == 10, "\(closed) of 30 closed with a limit of 20")
            let scrape = MetricsTests.Scrape(try MetricsTests.get(port: metricsPort, path: "/metrics").body)
            #expect(scrape.value("synddb_connections_refused_total") == 10)
            for fd in fds { close(fd) }
            fds = []
            usleep(200_000)
            #expect(try SequencerClient(url: url).capabilities().protocolVersion == 1)
        }
    }
}
