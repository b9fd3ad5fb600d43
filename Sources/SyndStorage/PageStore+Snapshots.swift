import Dispatch
import SyndLedger
import SyndProtocol

extension PageStore {
    /// Seals a snapshot of `database` at its head (or returns the one already
    /// kept at that version): every page of that version, read as `ReadPages`
    /// reads them, anchored on the head batch's hash and signed.
    public func createSnapshot(_ database: String) throws(SequencerError) -> SnapshotInfo {
        // One snapshot at a time, store-wide (a request and a periodic one of one version would share a file name).
        try snapshotQueue.sync { Result { () throws(SequencerError) in try makeSnapshot(database) } }.get()
    }

    /// `createSnapshot`, on `snapshotQueue`.
    func makeSnapshot(_ database: String) throws(SequencerError) -> SnapshotInfo {
        try validateName(database)
        let version = try headVersion(of: database)
        guard version > 0 else { throw SequencerError(.failedPrecondition, "'\(database)' has no commits to snapshot yet") }
        if snapshots.versions(of: database).contains(version) {
            return Self.info(try snapshots.open(database, version: version).seal)
        }
        guard let anchor = try batch(database: database, version: version) else {
            throw SequencerError(.internal, "batch \(version) of '\(database)' is missing")
        }
        let limit = max(1, configuration.maxPagesPerRead)
        let seal = try snapshots.write(
            database: database, version: version, pageCount: anchor.pageCount,
            pages: { (range: ClosedRange<UInt32>) throws(SequencerError) -> [Page] in
                var pages: [Page] = []
                var next = range.lowerBound
                while next <= range.upperBound {
                    var request = ReadPagesRequest()
                    request.database = database
                    request.version = version
                    request.pageNumbers = Array(next...min(range.upperBound, next + limit - 1))
                    let answer = try readPages(request)
                    guard answer.pageSize == anchor.pageSize else {
                        throw SequencerError(.internal, "version \(version) of '\(database)' reads with page size \(answer.pageSize), not \(anchor.pageSize)")
                    }
                    pages += answer.pages
                    next += UInt32(request.pageNumbers.count)
                }
                return pages
            },
            seal: { (pagesHash: [UInt8]) throws(SequencerError) -> Batch in
                var last = Batch()
                last.database = database
                last.version = version
                last.committedAtMs = anchor.committedAtMs
                last.pageSize = anchor.pageSize
                last.pageCount = anchor.pageCount
                last.hash = anchor.hash
                last.pagesHash = pagesHash
                last.snapshot = true
                last.snapshotLast = true
                do {
                    try BatchSeal.sealSnapshot(&last, key: signingKey)
                } catch {
                    throw SequencerError(.internal, "signing the snapshot failed: \(error)")
                }
                return last
            })
        return Self.info(seal)
    }

    static func info(_ seal: Batch) -> SnapshotInfo {
        var info = SnapshotInfo()
        info.database = seal.database
        info.version = seal.version
        info.pageSize = seal.pageSize
        info.pageCount = seal.pageCount
        info.committedAtMs = seal.committedAtMs
        return info
    }

    /// The newest snapshot of `database` a stream can go on from (batches kept
    /// from its version + 1), if any.
    public func usableSnapshot(of database: String) throws(SequencerError) -> SnapshotStore.Reader? {
        let oldest = try oldestVersion(of: database)
        let head = try headVersion(of: database)
        for version in snapshots.versions(of: database).reversed() where version + 1 >= oldest && version <= head {
            if let reader = try? snapshots.open(database, version: version) { return reader }
        }
        return nil
    }

    /// After a commit: starts a snapshot in the background when `version` is
    /// `configuration.snapshotEveryVersions` past the last one of `database`.
    public func snapshotIfDue(_ database: String, version: UInt64) {
        let every = configuration.snapshotEveryVersions
        guard every > 0 else { return }
        let due = snapshotState.withLock { s -> Bool in
            let last = s.last[database] ?? (snapshots.versions(of: database).last ?? 0)
            s.last[database] = last
            guard version >= last + every, !s.running.contains(database) else { return false }
            s.running.insert(database)
            return true
        }
        guard due else { return }
        snapshotQueue.async {
            // Commits that came while a snapshot ran were not given one: if the head
            // is already `every` past it, the next is made now, not at the next
            // commit (which may never come). `running` is cleared before the head is
            // read, so a commit either sees it clear or is seen here.
            while true {
                let made: UInt64
                do {
                    made = try self.makeSnapshot(database).version
                } catch {
                    self.configuration.events?("snapshot of '\(database)' failed: \(error)")
                    // Not again before another interval.
                    self.snapshotState.withLock { s in
                        s.last[database] = version
                        s.running.remove(database)
                    }
                    return
                }
                self.snapshotState.withLock { s in
                    s.last[database] = made
                    s.running.remove(database)
                }
                guard let head = try? self.headVersion(of: database), head >= made + every else { return }
                let again = self.snapshotState.withLock { s in s.running.insert(database).inserted }
                guard again else { return }
            }
        }
    }
}

/// Which databases have a snapshot being made, and each one's last snapshot version.
struct SnapshotState {
    var last: [String: UInt64] = [:]
    var running: Set<String> = []
}
