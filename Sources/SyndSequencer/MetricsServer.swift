import Dispatch
import NIOCore
import NIOHTTP1
import NIOPosix
import SyndStorage

/// Serves a sequencer's metrics in Prometheus' text format at `GET /metrics`,
/// over plain HTTP/1.1 on a port of its own (`synd sequencer --metrics-port`).
/// Anything else gets 404 or 405. Scrapes are answered off the event loop:
/// reading the databases' heads may wait for the store (PostgreSQL).
public final class MetricsServer: Sendable {
    public let host: String
    /// The port it listens on (useful when started on port 0).
    public let port: Int
    private let group: MultiThreadedEventLoopGroup
    private let listener: any Channel

    /// Where Prometheus scrapes, e.g. `http://127.0.0.1:9433/metrics`.
    public var url: String { "http://\(host.contains(":") ? "[\(host)]" : host):\(port)/metrics" }

    /// Starts serving `service`'s metrics; returns once the port is bound.
    public static func start(host: String, port: Int, service: SequencerService) async throws -> MetricsServer {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let metrics = service.metrics
        let store = service.store
        let scrapes = DispatchQueue(label: "synd.metrics.scrapes")
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(
                        MetricsHandler(render: { metrics.emit(store: store) }, queue: scrapes))
                }
            }
        do {
            let listener = try await bootstrap.bind(host: host, port: port).get()
            return MetricsServer(host: host, port: listener.localAddress?.port ?? port, group: group, listener: listener)
        } catch {
            try? await group.shutdownGracefully()
            throw SequencerStartError(message: "cannot serve metrics on \(host):\(port): \(error)")
        }
    }

    private init(host: String, port: Int, group: MultiThreadedEventLoopGroup, listener: any Channel) {
        self.host = host
        self.port = port
        self.group = group
        self.listener = listener
    }

    /// Stops listening and closes its connections.
    public func stop() async {
        try? await listener.close()
        try? await group.shutdownGracefully()
    }
}

/// One HTTP/1.1 connection of the metrics server.
private final class MetricsHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let render: @Sendable () -> [UInt8]
    private let queue: DispatchQueue
    private var head: HTTPRequestHead?

    init(render: @escaping @Sendable () -> [UInt8], queue: DispatchQueue) {
        self.render = render
        self.queue = queue
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h): head = h
        case .body: break  // a scrape has none; whatever comes is ignored
        case .end:
            guard let head else { return }
            self.head = nil
            let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
            guard path == "/metrics" else {
                respond(context, head, .notFound, Array("not found: metrics are at /metrics\n".utf8))
                return
            }
            guard head.method == .GET || head.method == .HEAD else {
                respond(context, head, .methodNotAllowed, Array("use GET /metrics\n".utf8))
                return
            }
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            let render = self.render
            queue.async {
                let body = render()
                bound.eventLoop.execute {
                    let (handler, context) = bound.value
                    handler.respond(context, head, .ok, body, contentType: "text/plain; version=0.0.4; charset=utf-8")
                }
            }
        }
    }

    private func respond(
        _ context: ChannelHandlerContext, _ request: HTTPRequestHead, _ status: HTTPResponseStatus, _ body: [UInt8],
        contentType: String = "text/plain; charset=utf-8"
    ) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: String(body.count))
        let keepAlive = request.isKeepAlive
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))), promise: nil)
        if request.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive { done.whenComplete { [channel = context.channel] _ in channel.close(promise: nil) } }
    }
}
