import NIOCore

/// Closes a connection that has not sent `minimum` bytes (the HTTP/2
/// preface) within `timeout` of being accepted: a client that connects and
/// stays silent holds no file descriptor for long. Removes itself once
/// enough arrived.
final class HandshakeDeadline: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let timeout: Duration
    private let minimum: Int
    private let expired: @Sendable () -> Void
    private var received = 0
    private var deadline: Scheduled<Void>?

    init(timeout: Duration, minimum: Int = 24, expired: @escaping @Sendable () -> Void) {
        self.timeout = timeout
        self.minimum = minimum
        self.expired = expired
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let channel = context.channel
        let expired = self.expired
        deadline = context.eventLoop.scheduleTask(in: .nanoseconds(Int64(timeout.components.seconds) * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000)) {
            expired()
            channel.close(promise: nil)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        received += unwrapInboundIn(data).readableBytes
        context.fireChannelRead(data)
        if received >= minimum {
            deadline?.cancel()
            deadline = nil
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
        context.fireChannelInactive()
    }
}
