import Synchronization
import SyndClient
import SyndProtocol

/// Reads a `StreamBatches` call over SyndDB's own HTTP/2 client (libnghttp2,
/// as the VFS and followers do) on the calling thread, so that `synd validate`
/// spends its time on batches rather than on handing each one between threads.
enum BatchStream {
    /// Calls `each` for every batch on this thread, in order, until it returns
    /// false or the sequencer ends the stream (throws when that end is an error).
    static func read(url: String, request: StreamBatchesRequest, _ each: (Batch) -> Bool) throws(SequencerError) {
        var options = ClientOptions()
        options.requestTimeout = .seconds(30)
        let client = try SequencerClient(url: url, options: options)
        let inbox = Mutex<[[UInt8]]>([])
        let end = Mutex<SequencerError?>(nil)
        let stream = try client.openStream(
            .streamBatches, request, onMessage: { bytes in inbox.withLock { $0.append(bytes) } }, onEnd: { error in end.withLock { $0 = error } })
        while true {
            let messages = inbox.withLock { queued in
                defer { queued = [] }
                return queued
            }
            for message in messages {
                let batch: Batch
                do {
                    batch = try Batch(serializedBytes: message)
                } catch {
                    client.cancel(stream)
                    throw SequencerError(.internal, "the sequencer sent a batch that does not decode: \(error)")
                }
                guard each(batch) else {
                    client.cancel(stream)
                    return
                }
            }
            if messages.isEmpty {
                if let ended = end.withLock({ $0 }), inbox.withLock({ $0.isEmpty }) {
                    if ended.code == .ok { return }
                    throw ended
                }
                client.waitForInput(wake: -1, timeoutMs: 1000)
            }
            client.processPendingInput(wait: true)
        }
    }
}
