import ArgumentParser
import CSQLite
import Foundation
import SyndProtocol
import SyndValidator

struct ValidateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "validate",
        abstract: "Verify a database's whole history: signatures, hash chain, and that page images and changesets agree.",
        discussion: """
            Follows the batch stream from its oldest batch (version 1, or the last drop), keeps a physical replica (page images
            applied) and a logical replica (changesets applied), and after every batch checks
            that both hold the same rows in every table. Stops at the first failure with the
            version, table, key, and both sides; exits non-zero.
            """)

    @Option(help: "Sequencer URL (default: $SYNDDB_SEQUENCER).")
    var sequencer: String?

    @Option(help: "Database name.")
    var db: String

    @Option(help: "File of SQL assertions, one per line, each must return 1 on every version (e.g. SELECT count(*) = 0 FROM accounts WHERE balance < 0).")
    var rules: String?

    @Flag(help: "Keep following new batches.")
    var follow = false

    @Flag(help: "Start from the sequencer's newest snapshot (`synd sequencer --snapshot-every`, `synd snapshot`) instead of the first batch: its pages are checked against the sequencer's signature, then every batch after it as usual. Reaches back past the retention window.")
    var fromSnapshot = false

    @Flag(help: "Compare every table after every batch, not only the rows each batch changed (the work then grows with the database).")
    var fullEveryBatch = false

    @Flag(help: "Print how long validation took and how (batches per second, whole-table checks).")
    var stats = false

    @Option(help: "The sequencer's key as `synd sequencer` prints it (ed25519:HEX; default: $SYNDDB_SEQUENCER_KEY, else the key the sequencer gives). Batches are checked with it alone.")
    var sequencerKey: String?

    @Option(help: "Folder for the replicas (default: a temporary one, removed at the end).")
    var work: String?

    @Option(help: "Longest one statement on a replica may run, in seconds (schema change, changeset, comparison, rule); a batch that needs longer fails validation.")
    var statementTimeout: Int = 300

    @Option(help: "Bound on SQLite's memory in this process, in MiB (0: none); a batch that needs more fails validation.")
    var memoryLimitMb: Int = 2048

    func run() async throws {
        let url = try sequencerURL(sequencer)
        guard statementTimeout > 0 else { throw ValidationError("--statement-timeout must be at least 1 second") }
        guard memoryLimitMb >= 0 else { throw ValidationError("--memory-limit-mb must be 0 or more") }
        // Schema text and page images come from the writer: bound what they can make SQLite allocate.
        if memoryLimitMb > 0 { sqlite3_hard_heap_limit64(Int64(memoryLimitMb) << 20) }
        var ruleList: [String] = []
        if let rules {
            ruleList = try String(contentsOfFile: rules, encoding: .utf8).split(separator: "\n")
                .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty && !$0.hasPrefix("--") }
        }
        let folder = work ?? FileManager.default.temporaryDirectory.appendingPathComponent("synd-validate-\(getpid())").path
        defer { if work == nil { try? FileManager.default.removeItem(atPath: folder) } }
        let client = LedgerClient(url: url)
        let served = try await client.publicKey()
        var key = served
        if let text = sequencerKey ?? ProcessInfo.processInfo.environment["SYNDDB_SEQUENCER_KEY"] {
            guard let pinned = SequencerKeyText.parse(text) else {
                throw CLIError("--sequencer-key \(text) is invalid: give the key `synd sequencer` prints (ed25519: and 64 hex digits)")
            }
            if pinned != served {
                printError("synd validate: the sequencer gives the key \(SequencerKeyText.format(served)), not \(SequencerKeyText.format(pinned)); checking with the pinned key")
            }
            key = pinned
        }
        let limits = ReplicaLimits(statementTimeout: .seconds(statementTimeout))
        let validator = try Validator(
            directory: folder, publicKey: key, rules: ruleList, limits: limits, fullCheck: fullEveryBatch ? .everyBatch : .share(0.05),
            deferSignatures: true)
        let clock = ContinuousClock()
        let started = clock.now
        var request = StreamBatchesRequest()
        request.database = db
        request.follow = follow
        request.fromSnapshot = fromSnapshot
        // Following, a heartbeat each second lets the validator settle the signatures it checks alongside.
        request.heartbeatMs = follow ? 1000 : 0
        let box = ValidatorBox(validator)
        let streamRequest = request
        let outcome: (failure: ValidationFailure?, seeded: ContinuousClock.Instant?) = try await onThread {
            let validator = box.validator
            var failure: ValidationFailure?
            var seeded: ContinuousClock.Instant?
            try BatchStream.read(url: url, request: streamRequest) { batch in
                guard batch.database == streamRequest.database else {
                    failure = ValidationFailure(version: batch.version, reason: "the stream sent a batch of '\(batch.database)', not of '\(streamRequest.database)'")
                    return false
                }
                do throws(ValidationFailure) {
                    try validator.process(batch)
                    if batch.snapshotLast { seeded = clock.now }
                    return true
                } catch {
                    failure = error
                    return false
                }
            }
            if failure == nil {
                do throws(ValidationFailure) { try validator.finish() } catch { failure = error }
            }
            return (failure, seeded)
        }
        if let failure = outcome.failure {
            print("FAILED at \(failure)")
            throw ExitCode(1)
        }
        let batches = validator.version - validator.snapshotVersion
        var line = "ok: \(batches) \(batches == 1 ? "batch" : "batches") of '\(db)' verified"
        if validator.snapshotVersion > 0 { line += " after the snapshot at version \(validator.snapshotVersion) (signed by the sequencer)" }
        line += " (Ed25519 signatures, hash chain, page images = changesets"
        line += ruleList.isEmpty ? ")" : ", \(ruleList.count) rules)"
        print(line)
        if stats {
            let total = (clock.now - started).seconds
            let seeding = outcome.seeded.map { ($0 - started).seconds } ?? 0
            let rate = Double(batches) / max(total - seeding, 1e-9)
            print(String(format: "stats: %.3f s in all, %.3f s seeding from the snapshot, %.0f batches/s after it; %d whole-table checks, %d changed-row checks",
                         total, seeding, rate, validator.fullChecks, validator.incrementalChecks))
        }
        if !validator.unauditedTables.isEmpty {
            print("warning: tables without a PRIMARY KEY were changed and could not be audited row by row: \(validator.unauditedTables.sorted().joined(separator: ", "))")
        }
    }
}

/// Runs `body` on a thread of its own (it blocks on the network and the disk) and returns its result.
func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread { continuation.resume(with: Result { try body() }) }
        thread.name = "synd.validate"
        thread.stackSize = 8 << 20
        thread.start()
    }
}

/// Hands the validator to the thread that runs it.
final class ValidatorBox: @unchecked Sendable {
    // Safe: only that thread uses the validator until it finished, and the
    // command reads its figures after the thread's result came back.
    let validator: Validator
    init(_ validator: Validator) { self.validator = validator }
}
