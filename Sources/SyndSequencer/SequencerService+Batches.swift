import SyndProtocol
import SyndStorage

extension SequencerService {
    /// Sends the sealed batches of a database from `from_version` (0: the
    /// oldest kept) to its head; with `follow`, then every new one as it is
    /// committed, until the client leaves (the task is cancelled). Each batch
    /// is read on the `reads` lane and sent once the transport took the one
    /// before, so a slow client slows the stream down instead of filling memory.
    public func streamBatches(request: [UInt8], stream: some SequencerResponseStream) async throws(SequencerError) {
        count(.streamBatches)
        do throws(SequencerError) {
            try await batches(request, stream)
        } catch {
            failed(error, of: .streamBatches)
            throw error
        }
    }

    private func batches(_ bytes: [UInt8], _ stream: some SequencerResponseStream) async throws(SequencerError) {
        let request: StreamBatchesRequest = try Self.decode(bytes)
        let database = request.database
        let store = self.store
        var next = request.fromVersion
        if next == 0, request.fromSnapshot,
            let snapshot = try await reads.run({ () throws(SequencerError) in try store.usableSnapshot(of: database) })
        {
            guard try await Self.send(snapshot, to: stream, reads: reads) else { return }
            next = snapshot.seal.version + 1
        }
        if next == 0 {
            // From the oldest batch kept: 1, or the last drop (or the retention window).
            next = try await reads.run { () throws(SequencerError) in try store.oldestVersion(of: database) }
        }
        // Woken by every commit of the database, before its head is read, so none is missed.
        let signal = LeaseSignal()
        let watch = request.follow ? try store.watchVersions(of: database, signal: signal) : nil
        defer { if let watch { store.stopWatching(database, id: watch) } }
        // Its lag behind the head, for the metrics.
        let followID = request.follow ? metrics.followStarted(database, sent: next > 0 ? next - 1 : 0) : nil
        defer { if let followID { metrics.followEnded(followID) } }
        let heartbeat: Duration? = request.heartbeatMs > 0 ? .milliseconds(max(Self.minimumHeartbeatMs, Int(request.heartbeatMs))) : nil
        // Heartbeats come every `heartbeat`, batches or not: a follower behind a
        // busy writer must still learn how far the head is, and when.
        // The first one as soon as the stream has caught up.
        var lastBeat = ContinuousClock.now - (heartbeat ?? .zero)
        while true {
            let head = try await reads.run { () throws(SequencerError) in try store.headVersion(of: database) }
            while next <= head {
                // Up to 256 batches or about 4 MiB per read, sent as one write.
                // A missing record is skipped; the validator then sees the gap.
                let first = next
                let (messages, after) = try await reads.run { () throws(SequencerError) -> ([[UInt8]], UInt64) in
                    var messages: [[UInt8]] = []
                    var bytes = 0
                    var version = first
                    while version <= head, messages.count < 256, bytes < 4 << 20 {
                        if let batch = try store.batch(database: database, version: version) {
                            let encoded = batch.serializedBytes()
                            bytes += encoded.count
                            messages.append(encoded)
                        }
                        version += 1
                    }
                    return (messages, version)
                }
                do {
                    try await stream.send(all: messages)
                } catch {
                    return  // the client left: nobody to answer
                }
                next = after
                if let followID { metrics.followSent(followID, upTo: after - 1) }
            }
            guard request.follow else { return }
            if let heartbeat, ContinuousClock.now - lastBeat >= heartbeat {
                var beat = Batch()
                beat.database = database
                beat.version = head
                beat.committedAtMs = PageStore.wallClockMs()
                beat.heartbeat = true
                do {
                    try await stream.send(beat.serializedBytes())
                } catch {
                    return
                }
                lastBeat = .now
            }
            if Task.isCancelled { return }
            // The next commit, the next heartbeat, or a look every second (a missed wake-up costs no more).
            let idle = heartbeat.map { $0 - (ContinuousClock.now - lastBeat) } ?? .seconds(1)
            await signal.wait(upTo: max(.milliseconds(1), min(idle, .seconds(1))))
            if Task.isCancelled { return }
        }
    }

    /// Sends a snapshot as parts of about 4 MiB of pages, the seal on the last;
    /// false when the client left.
    /// A snapshot whose pages cannot be read ends the call with that error (the client must not take a part for the whole).
    private static func send(_ snapshot: SnapshotStore.Reader, to stream: some SequencerResponseStream, reads: BlockingLane) async throws(SequencerError) -> Bool {
        let seal = snapshot.seal
        let perPart = UInt32(max(1, (4 << 20) / max(1, Int(seal.pageSize))))
        var next: UInt32 = 1
        repeat {
            var part = Batch()
            part.database = seal.database
            part.version = seal.version
            part.pageSize = seal.pageSize
            part.pageCount = seal.pageCount
            part.snapshot = true
            if seal.pageCount > 0 {
                let range = next...min(seal.pageCount, next + perPart - 1)
                let pages = try await reads.run { () throws(SequencerError) in try snapshot.pages(range) }
                part.pages = pages
                next = range.upperBound + 1
            }
            if next > seal.pageCount {
                var last = seal
                last.pages = part.pages
                part = last
            }
            do {
                try await stream.send(part.serializedBytes())
            } catch {
                return false
            }
        } while next <= seal.pageCount
        return true
    }

    /// Heartbeats come at most this often, whatever a stream asks.
    static let minimumHeartbeatMs = 5
}
