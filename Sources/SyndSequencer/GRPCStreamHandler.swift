import NIOCore
import NIOHPACK
import NIOHTTP2
import SyndProtocol

/// One gRPC call on one HTTP/2 stream: checks the request headers, collects
/// the request message, hands it to `SequencerService`, and writes the answer
/// (headers, messages, trailers) or a trailers-only status.
///
/// Runs on the connection's event loop. A unary call the service answers
/// inline is answered within the read that completed its request: no thread
/// hop at all. Answers from other threads hop back with `execute`.
final class GRPCStreamHandler: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias OutboundOut = HTTP2Frame.FramePayload

    private enum State {
        /// Waiting for the request headers.
        case awaitingHeaders
        /// Collecting the request message of `method`.
        case reading(SequencerMethod)
        /// The service has the request; its answer is due.
        case running
        /// The response ended, or the stream closed: what still comes is dropped.
        case ended
    }

    private let service: SequencerService
    private let calls: CallRegistry
    private var reader: GRPCRequestReader
    private var state = State.awaitingHeaders
    private var headersSent = false
    /// Closes when the stream closes before its response ended: the client left.
    private let departure = Latch()
    private var context: ChannelHandlerContext?

    init(service: SequencerService, calls: CallRegistry, limit: Int) {
        self.service = service
        self.calls = calls
        self.reader = GRPCRequestReader(limit: limit)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        state = .ended
        departure.close()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A stream-level protocol error: the stream is unusable.
        context.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .headers(let headers):
            if case .awaitingHeaders = state { requestHeaders(headers.headers) }
            if headers.endStream { requestEnded() }
        case .data(let data):
            guard case .reading = state else { return }
            if case .byteBuffer(let buffer) = data.data {
                do throws(SequencerError) {
                    try reader.append(buffer)
                } catch {
                    end(with: error)
                    return
                }
            }
            if data.endStream { requestEnded() }
        default:
            break  // RST_STREAM closes the channel; flow control is the multiplexer's.
        }
    }

    // MARK: - Request

    private func requestHeaders(_ headers: HPACKHeaders) {
        guard headers.first(name: ":method") == "POST" else {
            end(with: SequencerError(.unimplemented, "gRPC calls are POST requests, not \(headers.first(name: ":method") ?? "none")"), httpStatus: 405)
            return
        }
        guard let type = headers.first(name: "content-type"), Self.isGRPC(type) else {
            end(with: SequencerError(.invalidArgument, "content-type '\(headers.first(name: "content-type") ?? "")' is not application/grpc or application/grpc+proto"), httpStatus: 415)
            return
        }
        let path = headers.first(name: ":path") ?? ""
        guard let method = SequencerMethod(rawValue: path) else {
            end(with: SequencerError(.unimplemented, "unknown method '\(path)': this sequencer serves synddb.v1.Sequencer"))
            return
        }
        state = .reading(method)
        reader.decodesCommit = method == .commit
    }

    private static func isGRPC(_ contentType: String) -> Bool {
        let type = contentType.lowercased()
        return type == "application/grpc" || type.hasPrefix("application/grpc+proto") || type.hasPrefix("application/grpc;")
    }

    /// The client ended its side: the request is complete.
    private func requestEnded() {
        guard case .reading(let method) = state, let context else { return }
        let request: GRPCRequestReader.Request
        do throws(SequencerError) {
            request = try reader.finish()
        } catch {
            end(with: error)
            return
        }
        reader = GRPCRequestReader(limit: reader.limit)  // frees the request's buffer here
        state = .running
        let loop = context.eventLoop
        let this = NIOLoopBound(self, eventLoop: loop)
        let calls = self.calls
        let reply: @Sendable (Result<[UInt8], SequencerError>) -> Void = { result in
            if loop.inEventLoop {
                this.value.answer(result)
            } else {
                loop.execute { this.value.answer(result) }
            }
            calls.unaryEnded()
        }
        switch consume request {
        case .commit(let commit):
            calls.unaryBegan()
            service.commit(commit, reply: reply)
        case .bytes(let bytes) where method.isServerStreaming:
            startStream(method, bytes, this, loop)
        case .bytes(let bytes) where method == .readPages:
            calls.unaryBegan()
            service.readPages(request: bytes, allocator: context.channel.allocator) { result in
                if loop.inEventLoop {
                    this.value.answer(framed: result)
                } else {
                    loop.execute { this.value.answer(framed: result) }
                }
                calls.unaryEnded()
            }
        case .bytes(let bytes):
            calls.unaryBegan()
            service.unary(method, request: bytes, departure: departure, reply: reply)
        }
    }

    private func startStream(_ method: SequencerMethod, _ request: [UInt8], _ this: NIOLoopBound<GRPCStreamHandler>, _ loop: any EventLoop) {
        let stream = GRPCResponseStream(handler: this, eventLoop: loop, departure: departure)
        let service = self.service
        let task = calls.start {
            let outcome: SequencerError?
            do throws(SequencerError) {
                if method == .holdLease {
                    try await service.holdLease(request: request, stream: stream)
                } else {
                    try await service.streamBatches(request: request, stream: stream)
                }
                outcome = nil
            } catch {
                outcome = error
            }
            loop.execute { this.value.streamEnded(outcome) }
        }
        // HoldLease watches for the client leaving itself (it then releases
        // the lease); a batch stream just stops.
        if method != .holdLease { departure.whenClosed { task.cancel() } }
    }

    // MARK: - Response

    private func answer(_ result: Result<[UInt8], SequencerError>) {
        guard case .running = state, let context else { return }
        state = .ended
        switch result {
        case .success(let message):
            context.write(wrapOutboundOut(.headers(.init(headers: GRPCResponseHeaders.ok))), promise: nil)
            context.write(wrapOutboundOut(.data(.init(data: .byteBuffer(framed(message, context))))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.headers(.init(headers: GRPCResponseHeaders.okTrailers, endStream: true))), promise: nil)
        case .failure(let error):
            writeStatus(error, context)
        }
    }

    /// `answer`, for a message already framed (see `ReadPagesResponse.framed`).
    private func answer(framed result: Result<ByteBuffer, SequencerError>) {
        guard case .running = state, let context else { return }
        state = .ended
        switch result {
        case .success(let message):
            context.write(wrapOutboundOut(.headers(.init(headers: GRPCResponseHeaders.ok))), promise: nil)
            context.write(wrapOutboundOut(.data(.init(data: .byteBuffer(message)))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.headers(.init(headers: GRPCResponseHeaders.okTrailers, endStream: true))), promise: nil)
        case .failure(let error):
            writeStatus(error, context)
        }
    }

    /// One message of a server-streaming call; `promise` completes once the
    /// HTTP/2 layer took it (flow control permitting).
    func send(_ message: [UInt8], promise: EventLoopPromise<Void>) {
        send(all: [message], promise: promise)
    }

    /// Several messages of a server-streaming call, flushed once; `promise`
    /// completes once the HTTP/2 layer took the last.
    func send(all messages: [[UInt8]], promise: EventLoopPromise<Void>) {
        guard case .running = state, let context else {
            promise.fail(SequencerError(.cancelled, "the client left"))
            return
        }
        if !headersSent {
            headersSent = true
            context.write(wrapOutboundOut(.headers(.init(headers: GRPCResponseHeaders.ok))), promise: nil)
        }
        for (i, message) in messages.enumerated() {
            context.write(wrapOutboundOut(.data(.init(data: .byteBuffer(framed(message, context))))), promise: i == messages.count - 1 ? promise : nil)
        }
        if messages.isEmpty { promise.succeed() }
        context.flush()
    }

    private func streamEnded(_ error: SequencerError?) {
        guard case .running = state, let context else { return }
        state = .ended
        if let error {
            writeStatus(error, context)
            return
        }
        if !headersSent {
            headersSent = true
            context.write(wrapOutboundOut(.headers(.init(headers: GRPCResponseHeaders.ok))), promise: nil)
        }
        context.writeAndFlush(wrapOutboundOut(.headers(.init(headers: GRPCResponseHeaders.okTrailers, endStream: true))), promise: nil)
    }

    /// Refuses the call (or ends it) with `error`; the rest of the request is dropped.
    private func end(with error: SequencerError, httpStatus: Int = 200) {
        guard let context else { return }
        state = .ended
        writeStatus(error, context, httpStatus: httpStatus)
    }

    private func writeStatus(_ error: SequencerError, _ context: ChannelHandlerContext, httpStatus: Int = 200) {
        let trailers = GRPCResponseHeaders.trailers(for: error, afterHeaders: headersSent, httpStatus: httpStatus)
        headersSent = true
        context.writeAndFlush(wrapOutboundOut(.headers(.init(headers: trailers, endStream: true))), promise: nil)
    }

    /// The message with gRPC's 5-byte prefix: uncompressed, big-endian length.
    private func framed(_ message: [UInt8], _ context: ChannelHandlerContext) -> ByteBuffer {
        var buffer = context.channel.allocator.buffer(capacity: message.count + 5)
        buffer.writeInteger(UInt8(0))
        buffer.writeInteger(UInt32(truncatingIfNeeded: message.count))
        buffer.writeBytes(message)
        return buffer
    }
}

/// The messages of a server-streaming call, sent through its stream handler.
struct GRPCResponseStream: SequencerResponseStream {
    let handler: NIOLoopBound<GRPCStreamHandler>
    let eventLoop: any EventLoop
    let departure: Latch

    func send(_ message: [UInt8]) async throws {
        let promise = eventLoop.makePromise(of: Void.self)
        eventLoop.execute { handler.value.send(message, promise: promise) }
        try await promise.futureResult.get()
    }

    func send(all messages: [[UInt8]]) async throws {
        let promise = eventLoop.makePromise(of: Void.self)
        eventLoop.execute { handler.value.send(all: messages, promise: promise) }
        try await promise.futureResult.get()
    }

    func clientLeft() async {
        await departure.wait()
    }
}
