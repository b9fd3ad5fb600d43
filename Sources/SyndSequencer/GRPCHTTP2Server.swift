import NIOCore
import NIOHTTP2
import NIOPosix
import NIOSSL
import Synchronization

/// gRPC over HTTP/2 on SwiftNIO: h2c, or h2 over TLS (ALPN "h2"). Each
/// connection gets the HTTP/2 handler, a connection manager (GOAWAY on a
/// graceful stop, keepalive pings) and, per stream, a `GRPCStreamHandler`.
final class GRPCHTTP2Server: Sendable {
    let port: Int
    private let group: MultiThreadedEventLoopGroup
    private let listener: any Channel
    private let connections: ConnectionSet
    private let calls: CallRegistry
    private let isStopping = Atomic<Bool>(false)
    private let stopped = Latch()

    /// Connections accepted since the server started.
    var connectionsAccepted: Int { connections.accepted }

    /// Flow control windows: large, so that a commit of many MiB streams at
    /// the speed of the link instead of waiting for window updates.
    static let streamWindow = 8 << 20
    static let connectionWindow = 16 << 20
    static let maxFrameSize = 256 << 10

    /// Binds `host:port` and starts serving; returns once the port is bound.
    static func start(
        host: String, port: Int, tls: NIOSSLContext?, service: SequencerService, requestLimit: Int, limits: ServerLimits = ServerLimits()
    ) async throws -> GRPCHTTP2Server {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        let connections = ConnectionSet()
        let calls = CallRegistry()
        var connectionSettings = NIOHTTP2Handler.ConnectionConfiguration()
        connectionSettings.initialSettings = [
            HTTP2Setting(parameter: .maxConcurrentStreams, value: 1024),
            HTTP2Setting(parameter: .initialWindowSize, value: streamWindow),
            HTTP2Setting(parameter: .maxFrameSize, value: maxFrameSize),
            HTTP2Setting(parameter: .maxHeaderListSize, value: 16 << 10),
        ]
        connectionSettings.targetWindowSize = connectionWindow
        // Clients reset streams as a matter of course: every lease hand-over
        // cancels the holder's HoldLease call, and deadlines cancel calls.
        // NIO's defaults (200 resets or stream errors per 30 s, 200 glitches
        // per connection) closed busy writers' connections with GOAWAY, which
        // failed their calls in flight (REFUSED_STREAM). The limits stay, far
        // above what honest clients do, so a reset flood still ends a connection.
        connectionSettings.maximumConnectionGlitches = 100_000
        var streamSettings = NIOHTTP2Handler.StreamConfiguration()
        streamSettings.targetWindowSize = streamWindow
        streamSettings.streamResetFrameRateLimit.maximumCount = 20_000
        streamSettings.streamResetFrameRateLimit.windowLength = .seconds(10)
        streamSettings.streamErrorRateLimit.maximumCount = 20_000
        streamSettings.streamErrorRateLimit.windowLength = .seconds(10)
        let connection = connectionSettings, stream = streamSettings
        let management = NIOHTTP2ServerConnectionManagementHandler.Configuration(
            maxIdleTime: nil, maxAge: nil, maxGraceTime: nil,
            keepalive: .init(pingInterval: .hours(2), ackTimeout: .seconds(20)))

        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 256)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(ChannelOptions.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 1024, initial: 16 << 10, maximum: 1 << 20))
            .childChannelInitializer { channel in
                // Over the limit: closed at once, counted, and said once in a while.
                guard connections.reserve(limit: limits.maxConnections) else {
                    service.connectionRefused(open: limits.maxConnections)
                    return channel.close()
                }
                channel.closeFuture.whenComplete { _ in connections.release() }
                return channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    try pipeline.addHandler(HandshakeDeadline(timeout: limits.handshakeTimeout) { service.metrics.connectionTimedOut() })
                    if let tls { try pipeline.addHandler(NIOSSLServerHandler(context: tls)) }
                    let manager = NIOHTTP2ServerConnectionManagementHandler(eventLoop: channel.eventLoop, configuration: management)
                    _ = try pipeline.configureHTTP2Pipeline(
                        mode: .server, connectionConfiguration: connection, streamConfiguration: stream,
                        streamDelegate: manager.http2StreamDelegate
                    ) { streamChannel in
                        streamChannel.eventLoop.makeCompletedFuture {
                            try streamChannel.pipeline.syncOperations.addHandler(
                                GRPCStreamHandler(service: service, calls: calls, limit: requestLimit))
                        }
                    }
                    try pipeline.addHandler(manager)
                    connections.insert(channel)
                    service.metrics.connectionOpened()
                    channel.closeFuture.whenComplete { _ in service.metrics.connectionClosed() }
                }
            }
        let listener: any Channel
        do {
            listener = try await bootstrap.bind(host: host, port: port).get()
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        guard let bound = listener.localAddress?.port else {
            try? await listener.close()
            try? await group.shutdownGracefully()
            throw SequencerStartError(message: "the listening socket on \(host):\(port) has no port")
        }
        return GRPCHTTP2Server(port: bound, group: group, listener: listener, connections: connections, calls: calls)
    }

    private init(port: Int, group: MultiThreadedEventLoopGroup, listener: any Channel, connections: ConnectionSet, calls: CallRegistry) {
        self.port = port
        self.group = group
        self.listener = listener
        self.connections = connections
        self.calls = calls
    }

    /// Returns once `stop` finished.
    func wait() async {
        await stopped.wait()
    }

    /// Stops accepting connections, tells each client to open no new calls
    /// (GOAWAY), gives running calls `grace` to finish (idle connections are
    /// not waited for), then cancels what still runs, closes every connection
    /// and shuts the event loops down.
    func stop(grace: Duration) async {
        guard !isStopping.exchange(true, ordering: .acquiringAndReleasing) else {
            await stopped.wait()
            return
        }
        try? await listener.close()
        for channel in connections.all {
            channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        }
        let deadline = ContinuousClock.now + grace
        while !calls.isIdle, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(2))
        }
        // Cancelled first: an open HoldLease then knows that the server, not
        // its client, ended it.
        calls.cancelAll()
        for channel in connections.all {
            try? await channel.close()
        }
        // Answers still on their way hop onto the event loops: let them land.
        let last = ContinuousClock.now + .seconds(10)
        while !calls.isIdle, ContinuousClock.now < last {
            try? await Task.sleep(for: .milliseconds(2))
        }
        try? await group.shutdownGracefully()
        stopped.close()
    }
}
