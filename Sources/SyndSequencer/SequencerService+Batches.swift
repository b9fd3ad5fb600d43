import SyndProtocol
import SyndStorage

extension SequencerService {
    /// Sends the sealed batches of a database from `from_version` (0: the
    /// oldest kept) to its head; with `follow`, then every new one as it is
    /// committed, until the client leaves (the task is cancelled). Each batch
    /// is read on the `reads` lane and sent once the transport took the one
    /// before, so a slow client slows the stream down instead of filling memory.
    public func streamBatches(request: [UInt8], stream: some SequencerResponseStream) async throws(SequencerError) {
        counters.count(.streamBatches)
        do throws(SequencerError) {
            try await batches(request, stream)
        } catch {
            Self.log(error, of: .streamBatches, logger)
            throw error
        }
    }

    private func batches(_ bytes: [UInt8], _ stream: some SequencerResponseStream) async throws(SequencerError) {
        let request: StreamBatchesRequest = try Self.decode(bytes)
        let database = request.database
        let store = self.store
        var next = request.fromVersion
        if next == 0 {
            // From the oldest batch kept: 1, or the last drop (or the retention window).
            next = try await reads.run { () throws(SequencerError) in try store.oldestVersion(of: database) }
        }
        while true {
            let head = try await reads.run { () throws(SequencerError) in try store.headVersion(of: database) }
            while next <= head {
                // A missing record is skipped; the validator then sees the gap.
                let version = next
                if let batch = try await reads.run({ () throws(SequencerError) in try store.batch(database: database, version: version) }) {
                    do {
                        try await stream.send(batch.serializedBytes())
                    } catch {
                        return  // the client left: nobody to answer
                    }
                }
                next += 1
            }
            guard request.follow else { return }
            do { try await Task.sleep(for: .milliseconds(50)) } catch { return }
        }
    }
}
