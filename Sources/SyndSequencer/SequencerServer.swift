import Logging
import NIOSSL
import SyndStorage

/// A running sequencer: the store behind a gRPC server on HTTP/2 (h2c, or h2
/// over TLS).
public final class SequencerServer: Sendable {
    public let service: SequencerService
    /// The port it listens on (useful when started on port 0).
    public let port: Int
    public let host: String
    /// "http" (h2c) or "https".
    public let scheme: String
    private let server: GRPCHTTP2Server

    /// The URL clients use, e.g. `http://127.0.0.1:8433`.
    public var url: String { "\(scheme)://\(host):\(port)" }
    /// HTTP/2 connections accepted since it started (clients keep theirs open,
    /// so a count that grows means connections were closed and reopened).
    public var connectionsAccepted: Int { server.connectionsAccepted }

    /// Opens the store and starts serving; returns once the port is bound.
    /// - Parameter tls: PEM certificate chain and private key files; serves https (h2 over TLS) when set.
    public static func start(
        store configuration: StoreConfiguration, host: String = "127.0.0.1", port: Int = 0,
        tls: (certificateChain: String, privateKey: String)? = nil, limits: ServerLimits = ServerLimits(),
        logger: Logger = Logger(label: "synd.sequencer")
    ) async throws -> SequencerServer {
        var configuration = configuration
        if configuration.events == nil {
            configuration.events = { [logger] message in logger.warning("\(message)") }
        }
        let metrics = SequencerMetrics()
        if configuration.syncTimes == nil {
            configuration.syncTimes = { metrics.fsynced($0) }
        }
        let store = try PageStore(configuration)
        return try await start(
            store: store, maxBatchBytes: configuration.maxBatchBytes, host: host, port: port, tls: tls, limits: limits, metrics: metrics,
            logger: logger)
    }

    /// Starts serving `store` (the embedded store, or another `SequencerStore`
    /// such as PostgreSQL's); returns once the port is bound.
    public static func start(
        store: any SequencerStore, maxBatchBytes: UInt64, host: String = "127.0.0.1", port: Int = 0,
        tls: (certificateChain: String, privateKey: String)? = nil, limits: ServerLimits = ServerLimits(),
        metrics: SequencerMetrics = SequencerMetrics(), logger: Logger = Logger(label: "synd.sequencer")
    ) async throws -> SequencerServer {
        let context = try tls.map { try tlsContext(certificateChain: $0.certificateChain, privateKey: $0.privateKey) }
        let service = SequencerService(store: store, metrics: metrics, logger: logger)
        let limit = Int(min(maxBatchBytes * 2 + (1 << 20), UInt64(Int32.max)))
        let server: GRPCHTTP2Server
        do {
            server = try await GRPCHTTP2Server.start(host: host, port: port, tls: context, service: service, requestLimit: limit, limits: limits)
        } catch let error as SequencerStartError {
            throw error
        } catch {
            throw SequencerStartError(message: "cannot listen on \(host):\(port): \(error)")
        }
        return SequencerServer(service: service, port: server.port, host: host, scheme: tls == nil ? "http" : "https", server: server)
    }

    /// A TLS context offering HTTP/2 (ALPN "h2") with the given PEM files.
    private static func tlsContext(certificateChain: String, privateKey: String) throws -> NIOSSLContext {
        do {
            let chain = try NIOSSLCertificate.fromPEMFile(certificateChain).map { NIOSSLCertificateSource.certificate($0) }
            let key = try NIOSSLPrivateKey(file: privateKey, format: .pem)
            var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key))
            configuration.applicationProtocols = ["h2"]
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw SequencerStartError(message: "cannot load the TLS certificate \(certificateChain) and key \(privateKey): \(error)")
        }
    }

    private init(service: SequencerService, port: Int, host: String, scheme: String, server: GRPCHTTP2Server) {
        self.service = service
        self.port = port
        self.host = host
        self.scheme = scheme
        self.server = server
    }

    /// Waits until the server stops.
    public func wait() async throws {
        await server.wait()
    }

    /// Stops accepting calls, gives running ones `grace` to finish (clients keep
    /// idle connections open, so it does not wait for those), then cancels.
    public func stop(grace: Duration = .milliseconds(500)) async {
        await server.stop(grace: grace)
        service.store.shutdown()
    }
}

public struct SequencerStartError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}
