import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import SyndStorage

/// A running sequencer: the store behind a gRPC server on HTTP/2 (h2c).
public final class SequencerServer: Sendable {
    public let service: SequencerService
    /// The port it listens on (useful when started on port 0).
    public let port: Int
    public let host: String
    /// "http" (h2c) or "https".
    public let scheme: String
    private let server: GRPCServer<HTTP2ServerTransport.Posix>
    private let task: Task<Void, any Error>

    /// The URL clients use, e.g. `http://127.0.0.1:8433`.
    public var url: String { "\(scheme)://\(host):\(port)" }

    /// Opens the store and starts serving; returns once the port is bound.
    /// - Parameter tls: PEM certificate chain and private key files; serves https (h2 over TLS) when set.
    public static func start(
        store configuration: StoreConfiguration, host: String = "127.0.0.1", port: Int = 0,
        tls: (certificateChain: String, privateKey: String)? = nil,
        logger: Logger = Logger(label: "synd.sequencer")
    ) async throws -> SequencerServer {
        let store = try PageStore(configuration)
        let service = SequencerService(store: store, logger: logger)
        var config = HTTP2ServerTransport.Posix.Config.defaults
        config.rpc.maxRequestPayloadSize = Int(min(configuration.maxBatchBytes * 2 + (1 << 20), UInt64(Int32.max)))
        let security: HTTP2ServerTransport.Posix.TransportSecurity = tls.map {
            .tls(certificateChain: [.file(path: $0.certificateChain, format: .pem)], privateKey: .file(path: $0.privateKey, format: .pem))
        } ?? .plaintext
        let transport = HTTP2ServerTransport.Posix(
            address: .ipv4(host: host, port: port), transportSecurity: security, config: config)
        let server = GRPCServer(transport: transport, services: [service])
        let task = Task { try await server.serve() }
        let bound: Int
        do {
            guard let address = try await transport.listeningAddress.ipv4 else {
                throw SequencerStartError(message: "sequencer bound to a non-IPv4 address")
            }
            bound = address.port
        } catch {
            server.beginGracefulShutdown()
            _ = await task.result
            throw SequencerStartError(message: "cannot listen on \(host):\(port): \(error)")
        }
        return SequencerServer(service: service, port: bound, host: host, scheme: tls == nil ? "http" : "https", server: server, task: task)
    }

    private init(service: SequencerService, port: Int, host: String, scheme: String, server: GRPCServer<HTTP2ServerTransport.Posix>, task: Task<Void, any Error>) {
        self.service = service
        self.port = port
        self.host = host
        self.scheme = scheme
        self.server = server
        self.task = task
    }

    /// Waits until the server stops.
    public func wait() async throws {
        try await task.value
    }

    /// Stops accepting calls, gives running ones `grace` to finish (clients keep
    /// idle connections open, so it does not wait for those), then cancels.
    public func stop(grace: Duration = .milliseconds(500)) async {
        server.beginGracefulShutdown()
        let task = self.task
        let timer = Task {
            try? await Task.sleep(for: grace)
            task.cancel()
        }
        _ = await task.result
        timer.cancel()
    }
}

public struct SequencerStartError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}
