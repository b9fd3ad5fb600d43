import CSQLite
import SyndCapture
import SyndClient
import SyndProtocol

#if canImport(Glibc)
import Glibc
#endif

/// The main database file, whose pages live in the sequencer.
///
/// Between the RESERVED lock and the end of the transaction every page write
/// (cache spill included) goes to `dirty`, and reads inside the transaction are
/// served from it. At SQLITE_FCNTL_SYNC, which SQLite sends in every commit even
/// with synchronous=OFF, the whole transaction goes to the sequencer as one
/// batch; an unlock below RESERVED without a commit is a rollback and sends
/// nothing.
///
/// The RESERVED lock is the database's writer lease, taken at the first write
/// (never at open) and answered SQLITE_BUSY while another connection holds it,
/// so SQLite's busy handler waits as it does for a local file. The lease is
/// kept across transactions until another writer asks for it; while this
/// connection holds it, its page cache stays valid and a warm read transaction
/// makes no request. Otherwise each read transaction learns the latest version
/// and the pages written since, and drops only those from the cache.
final class RemoteFile: OpenFile {
    let name: String
    let readOnly: Bool
    let options: FileOptions
    let client: SequencerClient
    let lease: LeaseKeeper?
    /// A read-only connection's batch stream (`follow=1`, `max_lag_ms`, `min_version`).
    private var follower: Follower?
    /// The version a follower's read transactions wait for (URI min_version, PRAGMA synddb_min_version).
    private var minVersion: UInt64 = 0
    /// This file's id in the VFS, for the scratch views changeset capture opens.
    let id: UInt64
    /// Rows touched by the transaction (the connection's preupdate hook).
    let recorder: ChangeRecorder
    private var capture: ChangesetCapture?
    /// Tables' primary keys as committed, for the recorder (opened when first asked).
    private var committedSchema: CommittedSchema?
    /// Bumped for every capture; the "after" view shows it as its change counter.
    private(set) var captureGeneration: UInt32 = 0

    // The committed snapshot this connection reads.
    private var version: UInt64 = 0
    private var pageSize = 0
    private var pageCount: UInt32 = 0
    /// Committed pages of `version`, least recently used evicted past `cache_mb`.
    private var cache: PageCache
    /// Sequential-scan detection and the read-ahead window.
    private var readAhead: ReadAhead
    /// The read of a scan's next window, sent before SQLite asked for it, at
    /// `version`; `pages` spans the pages it asks for.
    private var sentAhead: (version: UInt64, pages: ClosedRange<UInt32>, pending: PendingPages)?
    /// Set when the snapshot may be stale: refresh at the next read transaction.
    private var needsRefresh = false
    /// Set when the lease was refused: take a new one at the next transaction.
    private var needsLease = false

    // The write transaction.
    private var lockLevel = SQLITE_LOCK_NONE
    /// A write transaction is being buffered: from the RESERVED lock, or, in
    /// exclusive locking mode (where SQLite never gives its lock back), from the
    /// transaction's first write.
    private var txnOpen = false
    /// `PRAGMA locking_mode=EXCLUSIVE` is in force (SQLite sends every PRAGMA
    /// to the main file first).
    private var exclusiveLocking = false
    /// A refused COMMIT in exclusive locking mode: SQLite's rollback would
    /// restore its own page cache from the journal and keep it, although the
    /// database may have moved on. Failing the rollback's first file call (its
    /// size check before playback, or a page it writes back) puts SQLite's pager
    /// in its error state, which drops the cache; the next read transaction
    /// re-reads (see the change-counter probe in `read`). One call fails, no
    /// more: a playback SQLite retries later restores the committed pages,
    /// which `restoration` recognizes.
    private var refuseRollbackWrites = false
    /// The write transaction's pages (spilled to a temporary file past `spill_mb`).
    private var dirty: DirtyPages
    private var txnPageSize = 0
    private var txnPageCount: UInt32 = 0
    private var txnTouched = false

    // Counters (SyndVFS.statisticsFileControl); SYNDDB_TRACE=1 prints each request to stderr.
    private(set) var requests = 0 {
        didSet {
            if options.trace {
                let line = "synddb[\(name)]: request #\(requests): \(traceContext)\n"
                _ = line.withCString { Glibc.write(2, $0, strlen($0)) }
            }
        }
    }
    private var traceContext = ""
    private(set) var commits = 0
    /// Cached pages kept (not re-read) when the snapshot moved on.
    private(set) var pagesKeptOnRefresh = 0
    /// Lease acquisitions (the first write, and each after a hand-over).
    private(set) var leaseAcquisitions = 0
    /// Reads a scan sent before SQLite asked for their pages, and those whose answer was used.
    private(set) var readsSentAhead = 0
    private(set) var readsSentAheadUsed = 0

    init(context: VFSContext, name: String, readOnly: Bool, create: Bool, options: FileOptions) throws(VFSOpenError) {
        self.name = name
        self.readOnly = readOnly
        self.options = options
        self.id = context.nextFileID()
        self.recorder = ChangeRecorder(session: context.api.session)
        self.cache = PageCache(budget: options.cacheBytes)
        self.readAhead = ReadAhead(initial: options.prefetch, maximum: options.readAheadPages)
        self.dirty = DirtyPages(spillThreshold: options.spillBytes, spillDirectory: options.spillDirectory)
        do {
            self.client = try context.client(url: options.sequencer, options: options.clientOptions)
        } catch {
            throw VFSOpenError(code: SQLITE_CANTOPEN, message: "\(error)")
        }
        if readOnly {
            lease = nil
        } else {
            // No request yet: the lease is taken at the first write.
            lease = LeaseKeeper(client: client, database: name, holder: RemoteFile.makeHolderID(), ttlMs: options.leaseTTLMs, renews: options.leaseRenew)
        }
        super.init(context: context)
        recorder.committedKeyColumns = { [unowned self] table in self.committedKeyColumns(of: table) }
        context.register(self)
        do throws(SequencerError) {
            requests += 1
            var request = OpenDatabaseRequest(name: name, create: create && !readOnly)
            request.atVersion = options.atVersion
            request.atTimeMs = options.atTimeMs
            let info = try client.open(request)
            guard adopt(info) else {
                throw SequencerError(.dataLoss, "the sequencer reported an impossible page size for '\(name)'")
            }
            if readOnly, !options.isPinned, options.follow {
                minVersion = options.minVersion
                let heartbeat = options.maxLagMs.map { UInt32(min(1000, max(5, $0 / 3))) } ?? 1000
                let f = Follower(client: client, database: name, version: version, heartbeatMs: heartbeat,
                                 maxQueuedBytes: max(1 << 20, options.cacheBytes / 4), pinnedKey: options.sequencerKey)
                follower = f
                f.start()
            }
        } catch {
            context.unregister(self)
            lease?.release()
            throw VFSOpenError(code: SQLITE_CANTOPEN, message: "cannot open '\(name)' on \(client.endpoint): \(error.message)")
        }
    }

    private static func makeHolderID() -> String {
        var host = [CChar](repeating: 0, count: 256)
        gethostname(&host, host.count - 1)
        let hostName = host.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        return "\(hostName)/\(getpid())/\(UInt64.random(in: 0...UInt64.max) & 0xFFFF_FFFF_FFFF)"
    }

    /// 16 random bytes from two draws (one per byte would be 16 getrandom calls per commit).
    private static func makeTxnID() -> [UInt8] {
        var id = [UInt8](repeating: 0, count: 16)
        for (i, word) in [UInt64.random(in: 0...UInt64.max), UInt64.random(in: 0...UInt64.max)].enumerated() {
            for b in 0..<8 { id[i * 8 + b] = UInt8(truncatingIfNeeded: word >> (8 * UInt64(b))) }
        }
        return id
    }

    /// Whether a page size from the sequencer is one SQLite can have (0 = empty database).
    private static func isValidPageSize(_ size: Int) -> Bool {
        size == 0 || (size >= 512 && size <= 65536 && size & (size - 1) == 0)
    }

    /// Moves to the committed snapshot `info` describes. The cache keeps the
    /// pages that did not change since this connection's version when the
    /// sequencer listed the changed ones (`OpenDatabaseRequest.since_version`);
    /// otherwise a new version drops it all.
    @discardableResult
    private func adopt(_ info: DatabaseInfo, since: UInt64? = nil) -> Bool {
        let known = since == version && info.changesKnown && Int(info.pageSize) == pageSize && info.version >= version
        if known && info.version != version {
            for pgno in info.changedPages { cache.remove(pgno) }
            cache.removePages(above: info.pageCount)
            pagesKeptOnRefresh += cache.count
            version = info.version
            pageCount = info.pageCount
            return true
        }
        return adopt(info.version, Int(info.pageSize), info.pageCount)
    }

    /// Moves to another committed snapshot, dropping the cache if it changed.
    /// Sizes the sequencer sent are checked first: nothing it says may trap the host.
    @discardableResult
    private func adopt(_ newVersion: UInt64, _ newPageSize: Int, _ newPageCount: UInt32) -> Bool {
        guard Self.isValidPageSize(newPageSize) else {
            needsRefresh = true
            return false
        }
        if newVersion != version || newPageSize != pageSize {
            cache.removeAll()
        }
        version = newVersion
        pageSize = newPageSize
        pageCount = newPageCount
        return true
    }

    private var inWriteTransaction: Bool { txnOpen }
    /// Set while the capture's "before" view reads: the transaction's buffer is invisible.
    private var viewingCommitted = false
    private var seesTransaction: Bool { inWriteTransaction && !viewingCommitted }
    private var effectivePageSize: Int { seesTransaction && txnPageSize > 0 ? txnPageSize : pageSize }
    private var effectivePageCount: UInt32 { seesTransaction ? txnPageCount : pageCount }

    // MARK: - Reads

    override func read(_ buffer: UnsafeMutableRawBufferPointer, offset: Int64) -> Int32 {
        if offset == 24, buffer.count == 16, !txnOpen, !viewingCommitted {
            refuseRollbackWrites = false
        }
        if offset == 24, buffer.count == 16, !txnOpen, !viewingCommitted, needsLease || needsRefresh {
            // SQLite reads the change counter when it starts a read transaction
            // with an empty cache. In exclusive locking mode no xLock call comes
            // first (SQLite keeps its lock), so a pending fence or refresh from a
            // failed commit happens here, before any page is served.
            let rc = syncWithSequencer()
            guard rc == SQLITE_OK else { return rc }
        }
        let size = effectivePageSize
        guard size > 0, offset >= 0 else {
            buffer.initializeMemory(as: UInt8.self, repeating: 0)
            return SYND_SQLITE_IOERR_SHORT_READ
        }
        var done = 0
        var short = false
        while done < buffer.count {
            let position = Int(offset) + done
            // Past SQLite's largest page number: reads as beyond the end.
            let pgno = UInt32(clamping: position / size + 1)
            let within = position % size
            let n = min(size - within, buffer.count - done)
            let target = UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + n)])
            if pgno > effectivePageCount {
                target.initializeMemory(as: UInt8.self, repeating: 0)
                short = true
            } else {
                let rc = withPage(pgno) { page, committed in
                    target.copyMemory(from: UnsafeRawBufferPointer(rebasing: page[within..<(within + n)]))
                    if pgno == 1 && committed { Self.stampVersion(version, into: target, at: within, of: page) }
                }
                guard rc == SQLITE_OK else { return rc }
            }
            done += n
        }
        return short ? SYND_SQLITE_IOERR_SHORT_READ : SQLITE_OK
    }

    /// The committed version as SQLite's file change counter.
    ///
    /// SQLite keeps its page cache across read transactions while the 4-byte
    /// counter at offset 24 of page 1 is unchanged. Writers do not always move it
    /// (in exclusive locking mode only the first commit does), so the counter
    /// SQLite sees is the sequencer's version: any commit, by anyone, makes every
    /// connection drop its cache at its next read transaction. The
    /// version-valid-for field (offset 92) gets the same value only where it
    /// matched the stored counter, so SQLite trusts the in-header page count
    /// exactly when it would have trusted the stored header.
    static func stampVersion(_ version: UInt64, into target: UnsafeMutableRawBufferPointer, at start: Int, of page: UnsafeRawBufferPointer) {
        guard page.count >= 100 else { return }
        let headerValid = page[24] == page[92] && page[25] == page[93] && page[26] == page[94] && page[27] == page[95]
        let counter = UInt32(truncatingIfNeeded: version)
        for field in headerValid ? [24, 92] : [24] {
            for i in 0..<4 where field + i >= start && field + i < start + target.count {
                target[field + i - start] = UInt8(truncatingIfNeeded: counter >> (24 - 8 * UInt32(i)))
            }
        }
    }

    /// Calls `body` with page `pgno` as this transaction sees it, and whether it
    /// is the committed page (not one written by the transaction).
    private func withPage(_ pgno: UInt32, _ body: (UnsafeRawBufferPointer, Bool) -> Void) -> Int32 {
        let size = effectivePageSize
        if seesTransaction, dirty.contains(pgno) {
            let done = dirty.withPage(pgno, pageSize: size) { page -> Bool in
                guard page.count == size else { return false }
                body(page, false)
                return true
            }
            guard let done else {
                return fail(SYND_SQLITE_IOERR_READ, "reading page \(pgno) of the transaction on '\(name)' failed: \(dirty.failure ?? "it is missing")")
            }
            if done { return SQLITE_OK }
        }
        if size != pageSize || pgno > pageCount {
            // Grown within this transaction but not written: reads as zeros, like a file.
            [UInt8](repeating: 0, count: size).withUnsafeBytes { body($0, false) }
            return SQLITE_OK
        }
        if cache.withPage(pgno, { body($0, true) }) != nil {
            return SQLITE_OK
        }
        if let ahead = sentAhead {
            // A read sent ahead: its answer is wanted if it holds this page,
            // and dropped otherwise (the scan stopped or jumped).
            sentAhead = nil
            if ahead.version == version, ahead.pages.contains(pgno) {
                if let answer = try? client.finishReadPages(ahead.pending),
                   answer.version == version, Int(answer.pageSize) == pageSize {
                    readsSentAheadUsed += 1
                    readAhead.fetched(from: ahead.pages.lowerBound, through: ahead.pages.upperBound)
                    sendAhead(after: ahead.pages.upperBound)
                    keep(answer, asked: pgno)
                    if cache.withPage(pgno, { body($0, true) }) != nil { return SQLITE_OK }
                }
                // It failed, or the page is gone again: read it the usual way, which reports any error.
            } else {
                client.cancelReadPages(ahead.pending)
            }
        }
        // A miss: read it, and the pages after it (more of them the longer
        // the misses run in sequence), all at this snapshot's version.
        let wanted = readAhead.window(forMissAt: pgno, limit: readAheadCap)
        let last = UInt32(min(UInt64(pageCount), UInt64(pgno) + UInt64(wanted) - 1))
        var numbers: [UInt32] = [pgno]
        numbers.reserveCapacity(Int(last - pgno) + 1)
        if last > pgno {
            for n in (pgno + 1)...last where !cache.contains(n) { numbers.append(n) }
        }
        readAhead.fetched(from: pgno, through: last)
        var found = false
        while true {
            var request = ReadPagesRequest()
            request.database = name
            request.version = version
            request.pageNumbers = numbers
            traceContext = "read page \(pgno) (+\(numbers.count - 1) ahead) at version \(version)"
            do throws(SequencerError) {
                requests += 1
                let answer = try client.readPagesInPlace(request)
                guard answer.version == version, Int(answer.pageSize) == pageSize else {
                    needsRefresh = true
                    return fail(SYND_SQLITE_IOERR_READ, "read of '\(name)' at version \(version) came back at version \(answer.version)")
                }
                // A scan: the sequencer reads the next window while this one is copied and used.
                if readAhead.isSequential { sendAhead(after: last) }
                keep(answer, asked: pgno)
                if let page = answer.pages.first(where: { $0.number == pgno }) {
                    answer.withBytes(of: page) { body($0, true) }
                    found = true
                }
                break
            } catch where error.code == .invalidArgument && numbers.count > 1 && readAhead.serverRefused(numbers.count) {
                // A sequencer with a smaller limit per read: ask for fewer.
                numbers = Array(numbers.prefix(readAhead.maximum))
                continue
            } catch {
                if error.code == .outOfRange { needsRefresh = true }
                return fail(SYND_SQLITE_IOERR_READ, "reading page \(pgno) of '\(name)' at version \(version) failed: \(error.message)")
            }
        }
        guard found else {
            return fail(SYND_SQLITE_IOERR_READ, "the sequencer did not return page \(pgno) of '\(name)'")
        }
        return SQLITE_OK
    }

    /// Most pages one read asks for: a quarter of the cache, so that the
    /// window in use and the one sent ahead both fit, and at most 8 MiB. In
    /// a scan, answers of 16 MiB cost the sequencer and the client a third
    /// more CPU than 8 MiB ones (buffers of that size are mapped and faulted
    /// in afresh each time, where smaller ones are reused).
    private var readAheadCap: Int { max(1, min(cache.budget / 4, Self.readAheadBytes) / max(pageSize, 1)) }
    static let readAheadBytes = 8 << 20

    /// Caches the pages of `answer`, the page asked for last (the most recently used).
    private func keep(_ answer: ReadPagesAnswer, asked pgno: UInt32) {
        for page in answer.pages where page.number != pgno {
            answer.withBytes(of: page) { cache.insert(page.number, bytes: $0) }
        }
        if let page = answer.pages.first(where: { $0.number == pgno }) {
            answer.withBytes(of: page) { cache.insert(pgno, bytes: $0) }
        }
    }

    /// Sends the read of the window after page `last` without waiting for it
    /// (a sequential scan): the sequencer reads and sends it while SQLite uses
    /// the pages it has, and the miss at its first page waits only for what
    /// is still on its way. Nothing is sent past the end of the file, or when
    /// the window is cached already; a failure to send is not an error (the
    /// miss reads the usual way).
    private func sendAhead(after last: UInt32) {
        guard last < pageCount else { return }
        let first = last + 1
        let wanted = readAhead.window(forMissAt: first, limit: readAheadCap)
        let end = UInt32(min(UInt64(pageCount), UInt64(first) + UInt64(wanted) - 1))
        var numbers: [UInt32] = []
        numbers.reserveCapacity(Int(end - first) + 1)
        for n in first...end where !cache.contains(n) { numbers.append(n) }
        guard let lowest = numbers.first, let highest = numbers.last else { return }
        readAhead.fetched(from: first, through: end)
        var request = ReadPagesRequest()
        request.database = name
        request.version = version
        request.pageNumbers = numbers
        traceContext = "read ahead pages \(lowest)...\(highest) (\(numbers.count)) at version \(version)"
        requests += 1
        guard let pending = try? client.startReadPages(request) else { return }
        readsSentAhead += 1
        sentAhead = (version, lowest...highest, pending)
    }

    /// Gives up the read sent ahead, if any (the file closes).
    private func dropSentAhead() {
        guard let ahead = sentAhead else { return }
        sentAhead = nil
        client.cancelReadPages(ahead.pending)
    }

    // MARK: - Writes

    override func write(_ buffer: UnsafeRawBufferPointer, offset: Int64) -> Int32 {
        guard lockLevel >= SQLITE_LOCK_RESERVED else {
            return fail(SYND_SQLITE_IOERR_WRITE, "write to '\(name)' outside a write transaction")
        }
        if let refused = refusedForRollback(SYND_SQLITE_IOERR_WRITE) { return refused }
        if !txnOpen {
            // Exclusive locking mode: SQLite kept its lock since the last
            // transaction, so this write is the first sign of a new one (or,
            // after a failed commit, SQLite's rollback writing pages back).
            beginTransaction()
        }
        let amount = buffer.count
        if txnPageSize == 0 || (dirty.isEmpty && amount != txnPageSize && offset == 0) {
            guard amount >= 512, amount <= 65536, amount & (amount - 1) == 0 else {
                return fail(SYND_SQLITE_IOERR_WRITE, "write of \(amount) bytes to '\(name)' is not a page")
            }
            txnPageSize = amount
        }
        guard amount == txnPageSize, offset % Int64(amount) == 0 else {
            return fail(SYND_SQLITE_IOERR_WRITE, "write of \(amount) bytes at offset \(offset) to '\(name)' does not match page size \(txnPageSize); changing the page size inside a transaction is not supported")
        }
        guard offset >= 0, offset / Int64(amount) < Int64(UInt32.max) else {
            return fail(SYND_SQLITE_IOERR_WRITE, "write at offset \(offset) to '\(name)' is beyond the largest page number")
        }
        let pgno = UInt32(offset / Int64(amount) + 1)
        guard dirty.write(pgno, buffer) else {
            return fail(SYND_SQLITE_IOERR_WRITE, "buffering page \(pgno) of the transaction on '\(name)' failed: \(dirty.failure ?? "")")
        }
        txnPageCount = max(txnPageCount, pgno)
        txnTouched = true
        return SQLITE_OK
    }

    override func truncate(_ size: Int64) -> Int32 {
        guard lockLevel >= SQLITE_LOCK_RESERVED else {
            return fail(SYND_SQLITE_IOERR_TRUNCATE, "truncate of '\(name)' outside a write transaction")
        }
        if let refused = refusedForRollback(SYND_SQLITE_IOERR_TRUNCATE) { return refused }
        if !txnOpen { beginTransaction() }
        if truncationNeedsDeclaredPageSize(size) {
            // A VACUUM to a smaller page size truncates to a whole number of new pages.
            if let problem = adoptDeclaredPageSize() { return problem }
        }
        let pageSize = effectivePageSize
        guard pageSize > 0, size >= 0, size % Int64(pageSize) == 0, size / Int64(pageSize) < Int64(UInt32.max) else {
            return fail(SYND_SQLITE_IOERR_TRUNCATE, "truncate of '\(name)' to \(size) bytes is not a whole number of pages")
        }
        txnPageCount = UInt32(size / Int64(pageSize))
        dirty.removePages(above: txnPageCount)
        txnTouched = true
        return SQLITE_OK
    }

    override func fileSize() -> Int64 {
        Int64(effectivePageCount) * Int64(effectivePageSize)
    }

    override func fileSize(_ size: inout Int64) -> Int32 {
        size = fileSize()
        guard !txnOpen else { return SQLITE_OK }
        return refusedForRollback(SYND_SQLITE_IOERR_FSTAT) ?? SQLITE_OK
    }

    /// The one file call failed on purpose after a refused commit in exclusive
    /// mode (see `refuseRollbackWrites`), or nil.
    private func refusedForRollback(_ code: Int32) -> Int32? {
        guard refuseRollbackWrites else { return nil }
        refuseRollbackWrites = false
        return fail(code, "'\(name)' may have moved on since this connection's snapshot; SQLite drops its cache and re-reads at the next transaction")
    }

    override func sync() -> Int32 {
        // The commit normally happened at SQLITE_FCNTL_SYNC, just before this.
        inWriteTransaction && txnTouched ? fileControl(SQLITE_FCNTL_SYNC, nil) : SQLITE_OK
    }

    override func fileControl(_ op: Int32, _ arg: UnsafeMutableRawPointer?) -> Int32 {
        switch op {
        case SQLITE_FCNTL_SYNC:
            // Also sent after a rollback that had spilled pages: SQLite writes the
            // original pages back and syncs. Such a "commit" changes nothing.
            guard inWriteTransaction && txnTouched else { return SQLITE_OK }
            switch restoration {
            case .restores:
                endTransaction()
                return SQLITE_OK
            case .unknown(let rc):
                // Most likely a rollback after a refused COMMIT, while the
                // sequencer is unreachable: never commit what cannot be told
                // from a playback. The error drops SQLite's cache.
                endTransaction()
                needsRefresh = true
                return fail(rc, "'\(name)': the committed pages could not be read to tell this write from a rollback, so nothing was committed; retry the transaction")
            case .differs:
                return commit()
            }
        case SQLITE_FCNTL_COMMIT_PHASETWO:
            return SQLITE_OK
        case SQLITE_FCNTL_LOCKSTATE:
            // The lock SQLite holds on this file (PRAGMA lock_status), as the unix VFS answers.
            arg?.assumingMemoryBound(to: Int32.self).pointee = lockLevel
            return SQLITE_OK
        case SQLITE_FCNTL_PRAGMA:
            return pragma(arg)
        case SQLITE_FCNTL_VFSNAME:
            if let arg {
                arg.assumingMemoryBound(to: UnsafeMutablePointer<CChar>?.self).pointee = synd_api_strdup(context.api, context.name)
            }
            return SQLITE_OK
        case SyndVFS.statisticsFileControl:
            if let arg {
                let out = arg.assumingMemoryBound(to: Int64.self)
                out[0] = Int64(requests)
                out[1] = Int64(commits)
                out[2] = Int64(version)
                out[3] = Int64(lease?.status.epoch ?? 0)
                out[4] = Int64(leaseAcquisitions)
                out[5] = Int64(pagesKeptOnRefresh)
                out[6] = Int64(readsSentAhead)
                out[7] = Int64(readsSentAheadUsed)
            }
            return SQLITE_OK
        default:
            return SQLITE_NOTFOUND
        }
    }

    /// Refuses journal modes that would keep committed data out of the sequencer.
    private func pragma(_ arg: UnsafeMutableRawPointer?) -> Int32 {
        guard let arg else { return SQLITE_NOTFOUND }
        let args = arg.assumingMemoryBound(to: UnsafeMutablePointer<CChar>?.self)
        guard let namePointer = args[1] else { return SQLITE_NOTFOUND }
        let pragmaName = String(cString: namePointer).lowercased()
        let value = args[2].map { String(cString: $0).lowercased() }
        if pragmaName == "locking_mode", let value {
            // SQLite applies it; the VFS only needs to know (see `exclusiveLocking`).
            if value == "exclusive" { exclusiveLocking = true } else if value == "normal" { exclusiveLocking = false }
            return SQLITE_NOTFOUND
        }
        if pragmaName == "journal_mode", value == "wal" {
            let message = "synddb: journal_mode=WAL is not supported: the sequencer is the durable log. Use MEMORY (the default), DELETE, TRUNCATE or PERSIST."
            args[0] = synd_api_strdup(context.api, message)
            context.recordError(SQLITE_ERROR, message)
            return SQLITE_ERROR
        }
        if pragmaName == "synddb_version" {
            args[0] = synd_api_strdup(context.api, String(version))
            return SQLITE_OK
        }
        if pragmaName == "synddb_min_version" {
            if let value {
                guard let v = UInt64(value) else {
                    let message = "synddb: PRAGMA synddb_min_version takes a version number"
                    args[0] = synd_api_strdup(context.api, message)
                    return SQLITE_ERROR
                }
                guard follower != nil else {
                    let message = "synddb: PRAGMA synddb_min_version applies to followers: open '\(name)' with mode=ro&follow=1"
                    args[0] = synd_api_strdup(context.api, message)
                    return SQLITE_ERROR
                }
                minVersion = v
            }
            args[0] = synd_api_strdup(context.api, String(minVersion))
            return SQLITE_OK
        }
        if pragmaName == "synddb_lag" {
            // Milliseconds since the follower last knew it had every batch up to the head; -1: not known.
            var lag: Int64 = -1
            if let f = follower?.freshness, f.isLive, let heard = f.heardAt, f.received >= f.head {
                lag = (ContinuousClock.now - heard).milliseconds
            }
            args[0] = synd_api_strdup(context.api, String(lag))
            return SQLITE_OK
        }
        return SQLITE_NOTFOUND
    }

    // MARK: - Commit

    /// What a buffered transaction is, next to the committed pages.
    private enum Restoration {
        /// Provably the committed pages as SQLite read them: a rollback's playback.
        case restores
        case differs
        /// A committed page could not be read to tell (the result code).
        case unknown(Int32)
    }

    /// Whether the buffered writes equal the committed pages as SQLite read
    /// them (page 1 with the version as its change counter).
    private var restoration: Restoration {
        guard txnPageCount == pageCount, txnPageSize == pageSize, pageSize > 0 else { return .differs }
        // Cached pages first, without a request: a real commit almost always
        // differs in one of them (it read the pages it changed).
        var uncached: [UInt32] = []
        for pgno in dirty.sortedPageNumbers {
            guard var committed = cache.peek(pgno) else {
                uncached.append(pgno)
                continue
            }
            if pgno == 1 {
                let original = committed
                committed.withUnsafeMutableBytes { target in
                    original.withUnsafeBytes { Self.stampVersion(version, into: target, at: 0, of: $0) }
                }
            }
            guard transactionPage(pgno, equals: committed) else { return .differs }
        }
        // The rest (evicted, or a spilled transaction's many pages) are read.
        var committed = [UInt8](repeating: 0, count: pageSize)
        for pgno in uncached {
            let rc = committed.withUnsafeMutableBytes { readCommitted($0, offset: Int64(pgno - 1) * Int64(pageSize)) }
            guard rc == SQLITE_OK else { return .unknown(rc) }
            guard transactionPage(pgno, equals: committed) else { return .differs }
        }
        return .restores
    }

    /// Whether the transaction's page `pgno` equals `committed` (read as
    /// SQLite reads it). Page 1 is compared with the version stamped on both
    /// sides: SQLite's own copy keeps the change counter it last wrote, which in
    /// exclusive locking mode (only the first commit moves it) or after a
    /// rollback (which restores the old one) is not the version.
    private func transactionPage(_ pgno: UInt32, equals committed: [UInt8]) -> Bool {
        let same = dirty.withPage(pgno, pageSize: pageSize) { page -> Bool in
            guard pgno == 1 else { return Self.equal(committed, page) }
            var stamped = [UInt8](page)
            stamped.withUnsafeMutableBytes { Self.stampVersion(version, into: $0, at: 0, of: page) }
            return stamped == committed
        }
        return same == true
    }

    private static func equal(_ a: [UInt8], _ b: UnsafeRawBufferPointer) -> Bool {
        a.count == b.count && a.withUnsafeBytes { memcmp($0.baseAddress!, b.baseAddress!, b.count) == 0 }
    }

    /// `PRAGMA page_size=N; VACUUM` changes the page size: SQLite copies the
    /// new image into the file through its pager, in pages of the OLD size, and
    /// only page 1's header tells the new one. The transaction is a file image
    /// either way, so it is cut again into pages of the declared size (every
    /// page is rewritten, as the sequencer requires for a page size change).
    private func adoptDeclaredPageSize() -> Int32? {
        guard txnPageSize > 0, let header = dirty.page(1, pageSize: txnPageSize), header.count >= 100 else { return nil }
        let raw = Int(header[16]) << 8 | Int(header[17])
        let declared = raw == 1 ? 65536 : raw
        guard declared != txnPageSize else { return nil }
        let bytes = Int64(txnPageCount) * Int64(txnPageSize)
        guard declared >= 512, declared <= 65536, declared & (declared - 1) == 0, bytes % Int64(declared) == 0,
            bytes / Int64(declared) < Int64(UInt32.max)
        else {
            return fail(SYND_SQLITE_IOERR_WRITE, "page 1 of '\(name)' declares page size \(raw), which does not divide the transaction's \(bytes) bytes")
        }
        let pages = DirtyPages(spillThreshold: options.spillBytes, spillDirectory: options.spillDirectory)
        let count = UInt32(bytes / Int64(declared))
        var page = [UInt8](repeating: 0, count: declared)
        for pgno in UInt32(1)...max(count, 1) where count > 0 {
            let rc = page.withUnsafeMutableBytes { read($0, offset: Int64(pgno - 1) * Int64(declared)) }
            guard rc == SQLITE_OK else { return fail(rc, "reading the image of '\(name)' at its new page size \(declared) failed") }
            guard (page.withUnsafeBytes { pages.write(pgno, $0) }) else {
                return fail(SYND_SQLITE_IOERR_WRITE, "buffering the image of '\(name)' at its new page size failed: \(pages.failure ?? "")")
            }
        }
        dirty = pages
        txnPageSize = declared
        txnPageCount = count
        return nil
    }

    /// Whether a truncation to `size` bytes only makes sense at page 1's declared page size.
    private func truncationNeedsDeclaredPageSize(_ size: Int64) -> Bool {
        effectivePageSize > 0 && size % Int64(effectivePageSize) != 0 && dirty.contains(1)
    }

    /// Starts buffering a write transaction on the committed snapshot.
    private func beginTransaction() {
        dirty.removeAll()
        txnPageSize = pageSize
        txnPageCount = pageCount
        txnTouched = false
        txnOpen = true
    }

    /// Drops the transaction's buffer and its recorded rows.
    private func endTransaction() {
        dirty.removeAll()
        txnPageSize = pageSize
        txnPageCount = pageCount
        txnTouched = false
        txnOpen = false
        recorder.reset()
    }

    /// The result code for a refused COMMIT after which the database may have
    /// moved on. SQLITE_BUSY_SNAPSHOT rolls back and SQLite re-reads at the next
    /// read transaction (the change counter is the version). In exclusive
    /// locking mode SQLite never starts a new read transaction, so only an I/O
    /// error makes it drop its cache.
    private var staleSnapshotCode: Int32 {
        guard exclusiveLocking else { return SYND_SQLITE_BUSY_SNAPSHOT }
        dropCacheAfterRollback()
        return SYND_SQLITE_IOERR_WRITE
    }

    /// Exclusive locking mode only: make SQLite's coming rollback fail, so it
    /// drops its page cache (an empty database has none to keep).
    private func dropCacheAfterRollback() {
        if exclusiveLocking && pageCount > 0 { refuseRollbackWrites = true }
    }

    /// Fencing at COMMIT: the lease must be live now. (In exclusive locking mode
    /// no lock call checks it at the start of a transaction.) A lapsed or lost
    /// lease is taken again, a new epoch; the transaction may still commit if
    /// nobody else committed meanwhile, since the sequencer checks the base version.
    private func leaseProblemAtCommit(_ lease: LeaseKeeper) -> Int32? {
        let status = lease.status
        guard needsLease || !status.held || status.expires <= .now else { return nil }
        let reason = status.lost ?? "it lapsed without renewal"
        do throws(SequencerError) {
            traceContext = "lease acquire at commit (\(reason))"
            requests += 1
            // This is the write lock's acquisition in exclusive locking mode (no
            // lock call comes first): it waits for an idle holder to hand over,
            // as takeWriteLease does, instead of refusing at the first answer.
            let granted = try lease.acquire(waitMs: options.lockWaitMs, forWrite: true)
            needsLease = false
            if let info = granted.info, info.version != version || Int(info.pageSize) != pageSize || info.pageCount != pageCount {
                needsRefresh = true
                return fail(staleSnapshotCode, "COMMIT refused, transaction rolled back: the writer lease of '\(name)' was lost (\(reason)) and the database moved from version \(version) to \(info.version) meanwhile; retry the transaction")
            }
            return nil
        } catch {
            needsLease = true
            needsRefresh = true
            let code = error.code == .failedPrecondition ? staleSnapshotCode : SYND_SQLITE_IOERR_WRITE
            return fail(code, "COMMIT refused, transaction rolled back: the writer lease of '\(name)' was lost (\(reason)) and cannot be taken again: \(error.message)")
        }
    }

    /// A new epoch for this connection when its lease merely lapsed: nobody
    /// holds it and the database is still at this connection's version.
    private func retakenLease(_ lease: LeaseKeeper) -> UInt64? {
        traceContext = "lease acquire after a lapse at commit"
        requests += 1
        guard let granted = try? lease.acquire(forWrite: true), let info = granted.info,
            info.version == version, Int(info.pageSize) == pageSize, info.pageCount == pageCount
        else { return nil }
        needsLease = false
        return granted.epoch
    }

    private enum Outcome {
        case applied(UInt64)
        /// With whether the database moved on meanwhile (another writer).
        case notApplied(moved: Bool)
        case unknown(String)
    }

    /// Learns the outcome of a commit whose answer was lost. A status lookup
    /// alone cannot say "never": an attempt still on its way could land after
    /// it. So the old attempt is fenced first: a new lease epoch (or another
    /// writer's newer one) makes the sequencer refuse it, and after that the
    /// lookup is final.
    private func resolveOutcome(_ lease: LeaseKeeper, txnID: [UInt8]) -> Outcome {
        var moved = true
        do throws(SequencerError) {
            traceContext = "lease acquire to fence a commit with an unknown outcome"
            requests += 1
            let granted = try lease.acquire(forWrite: true)
            needsLease = false
            if let info = granted.info { moved = info.version != version }
        } catch {
            guard error.code == .failedPrecondition else { return .unknown(error.message) }
            // Another writer's live lease has a newer epoch: ours is fenced as well.
            lease.markLost(error.message)
            needsLease = true
        }
        // Re-read at the next transaction, whatever the answer: others may have committed.
        needsRefresh = true
        do throws(SequencerError) {
            traceContext = "commit status after fencing"
            requests += 1
            let status = try client.commitStatus(database: name, txnID: txnID)
            return status.state == .committed ? .applied(status.version) : .notApplied(moved: moved)
        } catch {
            return .unknown(error.message)
        }
    }

    private func commit() -> Int32 {
        guard let lease else {
            return fail(SQLITE_READONLY, "'\(name)' is open read-only")
        }
        if let problem = adoptDeclaredPageSize() { return problem }
        let size = txnPageSize > 0 ? txnPageSize : pageSize
        guard size > 0, txnPageCount > 0 else {
            return fail(SYND_SQLITE_IOERR_WRITE, "commit of '\(name)' has no page size or no pages")
        }
        guard UInt64(dirty.count) * UInt64(size) < UInt64(UInt32.max) - (16 << 20) else {
            return fail(SQLITE_FULL, "the transaction on '\(name)' changes \(dirty.count) pages of \(size) bytes, more than one batch can carry; split it")
        }
        let others = recorder.otherDatabasesWritten()
        guard others.isEmpty else {
            endTransaction()
            return fail(SYND_SQLITE_IOERR_WRITE, "COMMIT of '\(name)' refused, transaction rolled back: it also writes \(others.map { "'\($0)'" }.joined(separator: ", ")) (ATTACHed), and a synddb commit cannot be atomic with another file. Write each database in its own transaction")
        }
        if let refused = leaseProblemAtCommit(lease) {
            endTransaction()
            return refused
        }
        var request = CommitRequest()
        request.database = name
        request.baseVersion = version
        request.leaseEpoch = lease.status.epoch
        request.holder = lease.holder
        request.txnID = Self.makeTxnID()
        request.pageCount = txnPageCount
        request.pageSize = UInt32(size)
        // The pages are not copied into the request: they are read from the
        // transaction's buffer (or its spill file) as the body is sent.
        guard let pages = CommitPageSource(dirty, pageSize: size) else {
            endTransaction()
            return fail(SYND_SQLITE_IOERR_WRITE, "COMMIT of '\(name)' failed, transaction rolled back: \(dirty.failure ?? "a page of the transaction could not be read")")
        }
        // A large transaction's changeset stays in capture's temporary file and is read as it is sent.
        var spilledChangeset: CommitChangesetSource?
        do throws(CaptureError) {
            let batch = try captureBatch()
            request.changeset = batch.changeset
            spilledChangeset = batch.spilledChangeset.map(CommitChangesetSource.init)
            request.schemaChanged = batch.schema != nil
            request.schema = batch.schema ?? []
            request.unauditedTables = batch.tablesWithoutPrimaryKey
        } catch {
            endTransaction()
            return fail(SYND_SQLITE_IOERR_WRITE, "COMMIT of '\(name)' failed, transaction rolled back: \(error.message)")
        }
        traceContext = "commit of \(pages.numbers.count) pages on version \(version)"
        requests += 1
        var failure: SequencerError
        do throws(SequencerError) {
            let response = try commit(request, pages, spilledChangeset)
            // The changeset can be as large as the pages: gone before they move into the cache.
            request.changeset = []
            spilledChangeset = nil
            return committed(at: response.version, pageSize: size)
        } catch {
            failure = error
        }
        if failure.code == .failedPrecondition, failure.provesNotApplied, let epoch = retakenLease(lease) {
            // The lease lapsed on the sequencer while the batch was on its way,
            // and nobody took it or wrote since: the same batch under a new epoch
            // is safe (the base version is still the head).
            request.leaseEpoch = epoch
            traceContext = "commit retried under a new lease epoch"
            requests += 1
            do throws(SequencerError) {
                let response = try commit(request, pages, spilledChangeset)
                request.changeset = []
                spilledChangeset = nil
                return committed(at: response.version, pageSize: size)
            } catch {
                failure = error
            }
        }
        if failure.outcomeUnknown {
            switch resolveOutcome(lease, txnID: request.txnID) {
            case .applied(let appliedVersion):
                return committed(at: appliedVersion, pageSize: size)
            case .notApplied(let moved):
                endTransaction()
                if moved { dropCacheAfterRollback() }
                return fail(SYND_SQLITE_IOERR_WRITE, "COMMIT failed, transaction rolled back (the sequencer confirmed it was not applied): \(failure.message)")
            case .unknown(let why):
                // Fence before trusting any state: the next transaction takes a new epoch.
                endTransaction()
                lease.markLost("a commit's outcome is unknown")
                needsLease = true
                needsRefresh = true
                dropCacheAfterRollback()
                return fail(SYND_SQLITE_IOERR_FSYNC, "COMMIT of '\(name)' has an unknown outcome: \(failure.message) (and it could not be resolved: \(why)). The next transaction fences the old attempt with a new lease epoch and then re-reads the database state")
            }
        }
        // A definitive refusal, or a failure before anything reached the
        // sequencer: nothing of the batch is applied. Drop it, so reads during
        // SQLite's rollback see the committed pages.
        endTransaction()
        switch failure.code {
        case .failedPrecondition where failure.provesNotApplied:
            lease.markLost(failure.message)
            needsLease = true
            needsRefresh = true
            // Not plain SQLITE_BUSY: for that, SQLite keeps the transaction open
            // for a retried COMMIT, whose pages it already considers written.
            return fail(staleSnapshotCode, "COMMIT refused, transaction rolled back: \(failure.message)")
        case .aborted where failure.provesNotApplied:
            needsRefresh = true
            return fail(staleSnapshotCode, "COMMIT refused, transaction rolled back: \(failure.message)")
        case .resourceExhausted where failure.provesNotApplied:
            return fail(SQLITE_FULL, "COMMIT refused, transaction rolled back: \(failure.message)")
        default:
            return fail(SYND_SQLITE_IOERR_WRITE, "COMMIT failed, transaction rolled back: \(failure.message)")
        }
    }

    /// The batch is applied at `newVersion`: the transaction's pages become the
    /// committed snapshot.
    private func committed(at newVersion: UInt64, pageSize size: Int) -> Int32 {
        commits += 1
        context.noteCommitted(sequencer: options.sequencer, database: name, version: newVersion)
        if size != pageSize { cache.removeAll() }
        // Pages still in memory become cached committed pages; spilled ones
        // are not read back, only their old versions dropped.
        for pgno in dirty.sortedPageNumbers {
            if let data = dirty.inMemory(pgno) { cache.insert(pgno, data) } else { cache.remove(pgno) }
        }
        cache.removePages(above: txnPageCount)
        if newVersion != version &+ 1 {
            // Others committed too (only after a lease loss): re-read at the next transaction.
            needsRefresh = true
        }
        version = newVersion
        pageSize = size
        pageCount = txnPageCount
        endTransaction()
        return SQLITE_OK
    }

    // MARK: - Changeset capture

    /// The transaction's logical record, built before the batch leaves.
    /// Sends the commit, its changeset from `spilled` when capture put it in a file.
    private func commit(_ request: CommitRequest, _ pages: CommitPageSource, _ spilled: CommitChangesetSource?) throws(SequencerError) -> CommitResponse {
        if let spilled { return try client.commit(request, pages: pages, changeset: spilled) }
        return try client.commit(request, pages: pages)
    }

    private func captureBatch() throws(CaptureError) -> CapturedBatch {
        guard options.capture else { return CapturedBatch() }
        // Checked first: a synddb database ATTACHed to another connection has no
        // hook, and must not commit without its changeset.
        guard recorder.isInstalled, let routines = recorder.routines else {
            throw CaptureError(code: SQLITE_ERROR, message: "changeset capture is not installed on this connection (an ATTACHed synddb database, or a SQLite host built without the preupdate hook), so the commit was refused; open the database as the connection's main database")
        }
        if let problem = recorder.captureProblem() {
            throw CaptureError(code: SQLITE_ERROR, message: problem)
        }
        let schemaChanged = schemaCookieChanged
        // Every page rewritten (a restore through the backup API, VACUUM): rows
        // may have changed that no preupdate event names.
        let rewroteAll = pageCount > 0 && dirty.count >= Int(txnPageCount)
        guard recorder.hasEvents || schemaChanged || rewroteAll else { return CapturedBatch() }
        captureGeneration &+= 1
        // The first commit of a database may leave page 1 without a text
        // encoding (`PRAGMA auto_vacuum` alone): the scratch side opened on it
        // settles on UTF-8, so the next commit opens a new one.
        let newDatabase = pageCount == 0
        defer { if newDatabase { capture = nil } }
        if capture == nil {
            capture = try ChangesetCapture(database: name, fileID: id, vfs: context.name, routines: routines)
            capture!.spillDirectory = options.spillDirectory
            capture!.rowSpillThreshold = options.spillBytes == 0 ? 0 : min(options.spillBytes, 16 << 20)
        }
        return try capture!.build(from: recorder, schemaChanged: schemaChanged, compareAll: rewroteAll)
    }

    /// `table`'s primary-key columns in the committed state (nil: not there,
    /// or unknown), for the recorder of a large transaction.
    private func committedKeyColumns(of table: String) -> [Int]? {
        guard pageCount > 0, let routines = recorder.routines else { return nil }
        if committedSchema == nil {
            committedSchema = try? CommittedSchema(database: name, fileID: id, vfs: context.name, routines: routines)
        }
        return committedSchema?.keyColumns(of: table)
    }

    /// Whether page 1's schema cookie (offset 40) moved in this transaction.
    private var schemaCookieChanged: Bool {
        guard let after = dirty.page(1, pageSize: effectivePageSize) else { return false }
        guard pageCount > 0 else { return true }
        var before = [UInt8](repeating: 0, count: 4)
        let rc = before.withUnsafeMutableBytes { readCommitted($0, offset: 40) }
        return rc != SQLITE_OK || after[40..<44] != before[0..<4]
    }

    /// A page of the committed snapshot (the "before" view of capture).
    func readCommitted(_ buffer: UnsafeMutableRawBufferPointer, offset: Int64) -> Int32 {
        viewingCommitted = true
        defer { viewingCommitted = false }
        return read(buffer, offset: offset)
    }

    var committedSize: (pageSize: Int, pageCount: UInt32) { (pageSize, pageCount) }
    var committedVersion: UInt64 { version }

    // MARK: - Locks

    override func lock(_ level: Int32) -> Int32 {
        if level == SQLITE_LOCK_SHARED && lockLevel == SQLITE_LOCK_NONE {
            let rc = syncWithSequencer()
            guard rc == SQLITE_OK else { return rc }
        }
        if level >= SQLITE_LOCK_RESERVED && lockLevel < SQLITE_LOCK_RESERVED {
            if readOnly { return fail(SQLITE_READONLY, "'\(name)' is open read-only (mode=ro); open it read-write to change it") }
            let rc = takeWriteLease()
            guard rc == SQLITE_OK else { return rc }
            recorder.reset()
            beginTransaction()
        }
        lockLevel = max(lockLevel, level)
        return SQLITE_OK
    }

    /// The RESERVED lock is the writer lease. A lease this connection holds,
    /// live and not wanted by another writer, costs nothing. Otherwise it is
    /// taken (queued behind writers that asked earlier, waiting up to
    /// lock_wait_ms on the sequencer): SQLITE_BUSY while another connection
    /// holds it, which SQLite's busy handler retries. The transaction's
    /// snapshot was taken at SHARED: if the database moved since, the answer is
    /// SQLITE_BUSY_SNAPSHOT (the lease is kept). For an autocommit statement or
    /// BEGIN IMMEDIATE, SQLite then drops its read lock and the busy handler
    /// retries on the new version; inside a deferred transaction that already
    /// read, the application must roll back and retry, as with a WAL database.
    private func takeWriteLease() -> Int32 {
        guard let lease else { return SQLITE_OK }
        if !needsLease && lease.beginWrite() { return SQLITE_OK }
        let reason = lease.status.lost
        // A lease another writer waits for is given up first: it queues behind them.
        lease.handOverIfWanted()
        do throws(SequencerError) {
            traceContext = "lease acquire at first write" + (reason.map { " (\($0))" } ?? "")
            requests += 1
            let granted = try lease.acquire(waitMs: options.lockWaitMs, forWrite: true)
            leaseAcquisitions += 1
            needsLease = false
            if let info = granted.info, info.pageCount == 0, pageCount == 0 {
                // Empty then and now (a dropped database, created again): nothing
                // the transaction read can be stale; it builds on the head.
                adopt(info.version, Int(info.pageSize), 0)
            } else if let info = granted.info, info.version != version || Int(info.pageSize) != pageSize || info.pageCount != pageCount {
                needsRefresh = true
                // Kept for the retry SQLite's busy handler makes at once
                // (autocommit, BEGIN IMMEDIATE): handing it on now would
                // starve this writer behind a busy one.
                lease.reserve(for: .milliseconds(250))
                return fail(SYND_SQLITE_BUSY_SNAPSHOT, "'\(name)' moved from version \(version) to \(info.version) since this transaction's snapshot; roll back and retry the transaction (SQLite's busy handler retries autocommit statements and BEGIN IMMEDIATE by itself)")
            }
            return SQLITE_OK
        } catch {
            needsLease = true
            if error.code == .failedPrecondition { return fail(SQLITE_BUSY, error.message) }
            return fail(SYND_SQLITE_IOERR_LOCK, "cannot take the writer lease of '\(name)': \(error.message)")
        }
    }

    /// Start of a read transaction: a writer that holds its lease (live, and
    /// trusted: no commit outcome in doubt) trusts its cache; anyone else
    /// learns the latest version and the pages written since its own (one
    /// request), and drops only those. Only here, and after errors that make
    /// SQLite drop its cache, may the snapshot move.
    private func syncWithSequencer() -> Int32 {
        // A past version (version=, at=) never moves: its pages never change.
        if options.isPinned { return SQLITE_OK }
        if let follower { return syncWithStream(follower) }
        if let lease, !needsLease, !needsRefresh {
            // checkedStatus: a closed lease connection (the sequencer released
            // the lease) is noticed here, not at the next renewal.
            let status = lease.checkedStatus
            if status.held && status.expires > .now { return SQLITE_OK }
        }
        return refreshFromSequencer()
    }

    /// Asks the sequencer for the latest version and the pages written since
    /// this connection's (one request), and drops those from the cache.
    private func refreshFromSequencer() -> Int32 {
        do throws(SequencerError) {
            traceContext = "refresh of the latest version"
            requests += 1
            let since = version
            let info = try client.open(OpenDatabaseRequest(name: name, create: false, sinceVersion: since))
            guard adopt(info, since: since) else {
                return fail(SYND_SQLITE_IOERR_LOCK, "the sequencer reported an impossible page size for '\(name)'")
            }
            needsRefresh = false
            return SQLITE_OK
        } catch where error.code == .notFound {
            // Dropped since it was opened (synd drop, a delete): an empty
            // database until it is created again, as a deleted file reads empty.
            _ = adopt(0, 0, 0)
            needsRefresh = false
            return SQLITE_OK
        } catch {
            return fail(SYND_SQLITE_IOERR_LOCK, "cannot start a read transaction on '\(name)': \(error.message)")
        }
    }

    /// Start of a follower's read transaction: applies the checked batches the
    /// stream delivered, then waits (up to timeout_ms) for what the user asked
    /// (min_version, max_lag_ms). Without a request while the stream is up;
    /// while it is down, one request, as any read-only connection.
    private func syncWithStream(_ follower: Follower) -> Int32 {
        let deadline = ContinuousClock.now + .milliseconds(options.timeoutMs)
        while true {
            if let refusal = follower.refusal {
                return fail(SYND_SQLITE_IOERR_READ, "'\(name)' stopped serving: \(refusal). Nothing of it was shown; reopen the database to follow it again")
            }
            applyFollowed(follower.take())
            var f = follower.freshness
            if !f.isLive {
                // The stream is down (or not yet up): ask, then follow from there.
                let rc = refreshFromSequencer()
                guard rc == SQLITE_OK else { return rc }
                follower.restart(from: version)
                f = follower.freshness
            }
            var why: String?
            // What this process committed, its reads see; and what the user asked for.
            let ownWrites = context.committedVersion(sequencer: options.sequencer, database: name)
            if version < ownWrites {
                why = "version \(ownWrites), committed by this process, has not reached this follower: it is at \(version)"
            } else if version < minVersion {
                why = "version \(minVersion) (min_version) has not reached this follower: it is at \(version)"
            } else if let bound = options.maxLagMs, f.isLive {
                if let heard = f.heardAt, version >= f.head, ContinuousClock.now - heard <= .milliseconds(bound) {
                    why = nil
                } else {
                    why = "this follower cannot show it is within max_lag_ms=\(bound) of the sequencer (at version \(version), last heard of the head \(f.heardAt.map { "\((ContinuousClock.now - $0).milliseconds) ms ago" } ?? "never"))"
                }
            } else if options.maxLagMs != nil {
                // Just refreshed by a request: as fresh as can be.
                why = nil
            }
            guard let why else { return SQLITE_OK }
            if ContinuousClock.now >= deadline {
                let down = f.isLive ? "" : " (its stream is down: \(follower.lastError ?? "reconnecting"))"
                return fail(SQLITE_BUSY, "'\(name)': \(why) after waiting timeout_ms=\(options.timeoutMs)\(down); retry, or raise timeout_ms")
            }
            follower.waitForNews(until: min(deadline, .now + .milliseconds(f.isLive ? 250 : 20)))
        }
    }

    /// Moves to the versions `updates` carry, keeping the cache current: new
    /// page images go in, pages cut off go out.
    private func applyFollowed(_ updates: [Follower.Update]) {
        for u in updates where u.version > version {
            dropSentAhead()
            if Int(u.pageSize) != pageSize || u.sizeChanged || u.pageCount == 0 { cache.removeAll() }
            if let pages = u.pages {
                for p in pages where p.data.count == Int(u.pageSize) { cache.insert(p.number, p.data) }
            } else {
                for n in u.numbers { cache.remove(n) }
            }
            if u.lowestPageCount < pageCount { cache.removePages(above: u.lowestPageCount) }
            version = u.version
            pageSize = Int(u.pageSize)
            pageCount = u.pageCount
        }
    }

    override func unlock(_ level: Int32) -> Int32 {
        if level < SQLITE_LOCK_RESERVED && txnOpen {
            // No commit reached the sequencer: a rollback. Nothing to send.
            endTransaction()
        }
        if level < SQLITE_LOCK_RESERVED && lockLevel >= SQLITE_LOCK_RESERVED {
            // The write lock ends: a writer waiting for the lease gets it now.
            lease?.endWrite()
        }
        lockLevel = min(lockLevel, level)
        return SQLITE_OK
    }

    override func checkReservedLock() -> Bool { lockLevel >= SQLITE_LOCK_RESERVED }

    override func close() -> Int32 {
        follower?.stop()
        follower = nil
        dropSentAhead()
        capture = nil
        committedSchema = nil
        context.unregister(self)
        lease?.release()
        return SQLITE_OK
    }

    override var deviceCharacteristics: Int32 { SQLITE_IOCAP_POWERSAFE_OVERWRITE }
}

/// Why xOpen failed.
struct VFSOpenError: Error {
    var code: Int32
    var message: String
}

