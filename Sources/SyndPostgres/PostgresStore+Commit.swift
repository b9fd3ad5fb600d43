import PostgresNIO
import SyndLedger
import SyndProtocol
import SyndStorage

/// Commits: one PostgreSQL transaction each, on the database's locked row.
extension PostgresStore {
    /// The row a commit locks.
    struct LockedHead {
        var id: Int64
        var version: Int64
        var pageSize: Int32
        var pageCount: Int64
        var lastHash: [UInt8]
        var lastCommittedAtMs: Int64
        var lease: LeaseView
        /// The version this transaction id made, or its recorded refusal.
        var committed: Int64?
        var refused: SequencerError?
    }

    public func commit(_ request: CommitRequest, completion: @escaping @Sendable (Result<CommitResponse, SequencerError>) -> Void) {
        let timeout = self.timeout
        let what = "committing to '\(request.database)'"
        Task(executorPreference: executor) { [self] in
            let result: Result<CommitResponse, SequencerError>
            do {
                result = try await Self.within(timeout, what) { [self] in try await commitOnce(request) }
            } catch {
                result = .failure(Self.failure(error, what))
            }
            if case .success(let r) = result, !r.duplicate, let fault = configuration.commitAnswerFault?(request) {
                completion(.failure(fault))
            } else {
                completion(result)
            }
        }
    }

    /// The transaction of one commit. A refusal is recorded under the
    /// transaction id, so a retry through any sequencer gets the same answer.
    private func commitOnce(_ request: CommitRequest) async throws -> Result<CommitResponse, SequencerError> {
        guard !request.txnID.isEmpty, request.txnID.count <= 64 else {
            return .failure(SequencerError(.invalidArgument, "txn_id must be 1 to 64 bytes (got \(request.txnID.count))"))
        }
        do throws(SequencerError) {
            try PageStore.validateName(request.database)
            try PageStore.validatePages(request, maxBatchBytes: configuration.maxBatchBytes)
        } catch {
            return .failure(error)
        }
        // The content hashes need no version: outside the transaction.
        var sealed = Batch()
        sealed.database = request.database
        sealed.pageSize = request.pageSize
        sealed.pageCount = request.pageCount
        sealed.changeset = request.changeset
        sealed.schemaChanged = request.schemaChanged
        sealed.schema = request.schema
        sealed.unauditedTables = request.unauditedTables
        sealed.pagesHash = BatchSeal.pagesHash(request.pages)
        sealed.changesetHash = BatchSeal.changesetHash(request.changeset)
        sealed.schemaHash = BatchSeal.schemaHash(changed: request.schemaChanged, schema: request.schema, unaudited: request.unauditedTables)
        let name = request.database
        let txn = Self.bytes(request.txnID)
        let numbers = request.pages.map { Int64($0.number) }
        let checksums = request.pages.map { Int64($0.checksum) }
        let datas = request.pages.map { Self.bytes($0.data) }

        let result = try await client.withTransaction(logger: logger) { connection -> Result<CommitResponse, SequencerError> in
            // The row lock first. The lookups come in a statement of their own:
            // under READ COMMITTED each statement sees what committed before it
            // began, so a commit of this id that held the lock until now is seen.
            let rows = try await connection.query("""
                SELECT id, version, page_size, page_count, last_hash, last_committed_at_ms, \(unescaped: Self.leaseColumns)
                FROM synddb_databases WHERE name = \(name) FOR UPDATE
                """, logger: logger)
            var head: LockedHead?
            for try await row in rows {
                let (id, version, pageSize, pageCount, hash, at, holder, epoch, live, ms, inTxn) = try row.decode(
                    (Int64, Int64, Int32, Int64, ByteBuffer, Int64, String?, Int64, Bool, Int64, Bool).self)
                head = LockedHead(
                    id: id, version: version, pageSize: pageSize, pageCount: pageCount, lastHash: Self.array(hash), lastCommittedAtMs: at,
                    lease: LeaseView(holder: holder, epoch: epoch, live: live, ms: ms, inTransaction: inTxn))
            }
            guard var head else { return .failure(Self.missing(name)) }
            let holder = request.holder, epoch = Int64(request.leaseEpoch), base = Int64(request.baseVersion)
            let outcomes = try await connection.query("""
                SELECT (SELECT b.version FROM synddb_batches b WHERE b.db = \(head.id) AND b.txn_id = \(txn)),
                    (SELECT r.code FROM synddb_refusals r WHERE r.db = \(head.id) AND r.txn_id = \(txn)
                        AND r.holder = \(holder) AND r.epoch = \(epoch) AND r.base_version = \(base)),
                    (SELECT r.message FROM synddb_refusals r WHERE r.db = \(head.id) AND r.txn_id = \(txn)
                        AND r.holder = \(holder) AND r.epoch = \(epoch) AND r.base_version = \(base))
                """, logger: logger)
            for try await (committed, code, message) in outcomes.decode((Int64?, Int32?, String?).self) {
                head.committed = committed
                if let code, let message, let status = GRPCStatusCode(rawValue: Int(code)) { head.refused = SequencerError(status, message) }
            }
            // A retry of an applied commit gets the first outcome, whatever happened since;
            // the same request refused before gets the same refusal (a re-sent one, with a new
            // lease or base, is decided afresh).
            if let version = head.committed {
                var r = CommitResponse()
                r.version = UInt64(version)
                r.duplicate = true
                return .success(r)
            }
            if let refused = head.refused { return .failure(refused) }

            let refusal: SequencerError?
            do throws(SequencerError) {
                let l = head.lease
                if l.holder != request.holder || UInt64(l.epoch) != request.leaseEpoch || !l.live {
                    throw Self.fenced(name, holder: request.holder, epoch: request.leaseEpoch, l)
                }
                guard request.baseVersion == UInt64(head.version) else {
                    throw SequencerError(.aborted, "stale base version \(request.baseVersion): '\(name)' is at version \(head.version); re-read and retry the transaction")
                }
                try PageStore.validateAgainstHead(request, pageSize: UInt32(head.pageSize), pageCount: UInt32(head.pageCount))
                if let fault = configuration.commitFault?(request) { throw fault }
                refusal = nil
            } catch {
                refusal = error
            }
            if let refusal {
                // Only refusals that prove nothing was applied are final; others (a fault) may go another way next time.
                if refusal.provesNotApplied {
                    let code = Int32(refusal.code.rawValue)
                    try await connection.query("""
                        INSERT INTO synddb_refusals (db, txn_id, holder, epoch, base_version, code, message)
                        VALUES (\(head.id), \(txn), \(holder), \(epoch), \(base), \(code), \(refusal.message))
                        ON CONFLICT (db, txn_id) DO UPDATE SET holder = EXCLUDED.holder, epoch = EXCLUDED.epoch,
                            base_version = EXCLUDED.base_version, code = EXCLUDED.code, message = EXCLUDED.message, refused_at = clock_timestamp()
                        """, logger: logger)
                }
                return .failure(refusal)
            }

            sealed.version = UInt64(head.version) + 1
            sealed.committedAtMs = max(PageStore.wallClockMs(), UInt64(head.lastCommittedAtMs))
            sealed.previousHash = head.lastHash
            sealed.hash = BatchSeal.hash(of: sealed)
            do {
                sealed.signature = try signingKey.sign(sealed.hash)
            } catch {
                return .failure(SequencerError(.internal, "signing the batch failed: \(error)"))
            }
            let version = Int64(sealed.version)
            let seal = Self.bytes(sealed.serializedBytes())
            let at = Int64(sealed.committedAtMs)
            let newHash = Self.bytes(sealed.hash)
            let pageSize = Int32(request.pageSize), pageCount = Int64(request.pageCount)
            // Pages past a smaller page count are cut off: a tombstone (no bytes) at this version hides older images.
            try await connection.query("""
                WITH b AS (
                    INSERT INTO synddb_batches (db, version, txn_id, committed_at_ms, page_size, page_count, seal)
                    VALUES (\(head.id), \(version), \(txn), \(at), \(pageSize), \(pageCount), \(seal))),
                p AS (
                    INSERT INTO synddb_pages (db, number, version, checksum, data)
                    SELECT \(head.id), n, \(version), c, d FROM unnest(\(numbers)::int8[], \(checksums)::int8[], \(datas)::bytea[]) AS u (n, c, d)),
                cut AS (
                    INSERT INTO synddb_pages (db, number, version, checksum, data)
                    SELECT DISTINCT \(head.id), number, \(version), 0, ''::bytea FROM synddb_pages
                    WHERE db = \(head.id) AND number > \(pageCount) AND \(pageCount) < \(head.pageCount)),
                u AS (
                    UPDATE synddb_databases SET version = \(version), page_size = \(pageSize), page_count = \(pageCount),
                        last_hash = \(newHash), last_committed_at_ms = \(at)
                    WHERE id = \(head.id) RETURNING name)
                SELECT pg_notify('synddb', 'head ' || name) FROM u
                """, logger: logger)
            var r = CommitResponse()
            r.version = UInt64(version)
            return .success(r)
        }
        if case .success(let r) = result, !r.duplicate { pruneIfDue(name, version: r.version) }
        return result
    }

    public func commitStatus(_ request: GetCommitStatusRequest, completion: @escaping @Sendable (Result<GetCommitStatusResponse, SequencerError>) -> Void) {
        let name = request.database
        let txn = Self.bytes(request.txnID)
        let what = "looking up a commit of '\(name)'"
        let timeout = self.timeout
        Task(executorPreference: executor) { [self] in
            do {
                let answer = try await Self.within(timeout, what) { [self] () async throws -> GetCommitStatusResponse in
                    // Under the row lock: a commit of this id still running finishes first.
                    try await client.withTransaction(logger: logger) { connection in
                        var id: Int64?
                        for try await i in try await connection.query(
                            "SELECT id FROM synddb_databases WHERE name = \(name) FOR SHARE", logger: logger
                        ).decode(Int64.self) {
                            id = i
                        }
                        guard let id else { throw Self.missing(name) }
                        // After the lock, in a statement of its own: it sees a commit that held the lock until now.
                        var r = GetCommitStatusResponse()
                        r.state = .notFound
                        for try await version in try await connection.query(
                            "SELECT version FROM synddb_batches WHERE db = \(id) AND txn_id = \(txn)", logger: logger
                        ).decode(Int64.self) {
                            r.state = .committed
                            r.version = UInt64(version)
                        }
                        return r
                    }
                }
                completion(.success(answer))
            } catch {
                completion(.failure(Self.failure(error, what)))
            }
        }
    }

    /// Lets versions older than the retention window go, now and then (off the commit's answer).
    func pruneIfDue(_ name: String, version: UInt64) {
        let retained = configuration.retainedVersions
        let every = max(1, min(64, retained / 8))
        guard version % every == 0, retained < version else { return }
        let keep = Int64(version - retained)
        Task(executorPreference: executor) { [self] in
            do {
                try await client.withConnection { connection in
                    // Refusals are kept an hour: long enough for any retry.
                    try await connection.query("""
                        DELETE FROM synddb_refusals WHERE db = (SELECT id FROM synddb_databases WHERE name = \(name))
                            AND refused_at < clock_timestamp() - interval '1 hour'
                        """, logger: logger)
                    // Raised first, on its own (a short row lock): reads below it fail from now on
                    // rather than see holes; a read already running keeps its snapshot.
                    let rows = try await connection.query("""
                        UPDATE synddb_databases SET oldest_version = \(keep) WHERE name = \(name) AND oldest_version < \(keep) RETURNING id
                        """, logger: logger)
                    var id: Int64?
                    for try await i in rows.decode(Int64.self) { id = i }
                    guard let id else { return }
                    try await connection.query("DELETE FROM synddb_batches WHERE db = \(id) AND version < \(keep)", logger: logger)
                    // An image is needed while it is the newest at or below the oldest version kept.
                    try await connection.query("""
                        DELETE FROM synddb_pages p WHERE p.db = \(id) AND p.version < \(keep) AND EXISTS (
                            SELECT 1 FROM synddb_pages q WHERE q.db = \(id) AND q.number = p.number AND q.version > p.version AND q.version <= \(keep))
                        """, logger: logger)
                }
            } catch {
                logger.warning("pruning '\(name)' below version \(keep) failed (it is tried again later): \(Self.describe(error))")
            }
        }
    }
}
