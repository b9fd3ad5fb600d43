import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif
import SyndProtocol
import Logging
import SyndPostgres
import SyndSequencer
import SyndStorage

struct SequencerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sequencer", abstract: "Run a sequencer: the durable store of SyndDB databases, over gRPC/HTTP2.")

    @Option(help: "Folder for the durable store (created if missing). With --store postgresql://..., it holds only the sequencer's key (sequencer.ed25519): sequencers sharing one PostgreSQL need the same key, so copy this folder to each.")
    var data: String

    @Option(help: ArgumentHelp(
        "Where the databases live: 'embedded' (the default: a log in --data), or a PostgreSQL URL, postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=require|verify-full&sslrootcert=FILE], which any number of sequencers may share. The password may also come from PGPASSWORD or --store-password-file. The schema is created and migrated on start (docs/postgresql.md).",
        valueName: "embedded|URL"))
    var store: String = "embedded"

    @Option(help: "File holding the PostgreSQL password (instead of the URL or PGPASSWORD).")
    var storePasswordFile: String?

    @Option(help: "TCP port (0 picks a free one; the URL is printed).")
    var port: Int = 8433

    @Option(help: "Address to listen on.")
    var host: String = "127.0.0.1"

    @Option(help: "Versions behind the head kept for point-in-time reads and for validators to catch up from. Older versions' changesets and superseded page images are let go, and the log's space is reclaimed in the background.")
    var retain: UInt64 = 10_000

    @Option(help: "Seal a snapshot of a database each time it moves this many versions past its last one (0: only on request, `synd snapshot`). A validator can start from a snapshot (`synd validate --from-snapshot`), even when the history before it is past --retain; keep this below --retain so the batches after a snapshot are still there.")
    var snapshotEvery: UInt64 = 0

    @Option(help: "Snapshots kept per database (the newest).")
    var snapshotsKept: Int = 2

    @Option(help: ArgumentHelp("Size at which the store starts a new log segment, in MiB. Only closed segments are compacted.", visibility: .hidden))
    var segmentMB: Int = 64

    @Option(help: "Largest commit batch (pages and changeset), in MiB. A commit in progress holds its batch in the sequencer's memory, about once its size, until it is durable.")
    var maxBatchMB: UInt64 = 256

    @Option(help: "PEM certificate chain: serve https (HTTP/2 over TLS) instead of h2c.")
    var tlsCert: String?

    @Option(help: "PEM private key of --tls-cert.")
    var tlsKey: String?

    @Option(help: "Serve Prometheus metrics at http://METRICS-HOST:PORT/metrics (0 picks a free port; the URL is printed). Off unless given.")
    var metricsPort: Int?

    @Option(help: "Address the metrics endpoint listens on.")
    var metricsHost: String = "127.0.0.1"

    @Option(help: "Client connections open at once; more are closed as soon as accepted (and counted in synddb_connections_refused_total). The sequencer raises its open-file limit to fit.")
    var maxConnections: Int = 4096

    @Option(help: "Seconds a new connection has to send the HTTP/2 preface (or its TLS handshake) before it is closed.")
    var handshakeTimeout: Double = 10

    @OptionGroup var log: LogOptions

    func run() async throws {
        var configuration = StoreConfiguration(directory: data)
        configuration.retainedVersions = retain
        configuration.maxBatchBytes = maxBatchMB << 20
        guard snapshotsKept >= 1 else { throw ValidationError("--snapshots-kept must be at least 1") }
        configuration.snapshotEveryVersions = snapshotEvery
        configuration.snapshotsKept = snapshotsKept
        guard segmentMB >= 1, segmentMB <= 1024 else { throw ValidationError("--segment-mb must be between 1 and 1024") }
        configuration.segmentBytes = segmentMB << 20
        let logger = log.logger("synd.sequencer")
        guard maxConnections >= 1 else { throw ValidationError("--max-connections must be at least 1") }
        guard handshakeTimeout > 0, handshakeTimeout <= 3600 else { throw ValidationError("--handshake-timeout must be between 0 and 3600 seconds") }
        var limits = ServerLimits()
        limits.maxConnections = maxConnections
        limits.handshakeTimeout = .milliseconds(Int64(handshakeTimeout * 1000))
        // Each connection is a file descriptor, and the store needs some of its own.
        if let note = Self.raiseOpenFileLimit(to: maxConnections + 256) { logger.warning("\(note)") }
        let server: SequencerServer
        do {
            guard (tlsCert == nil) == (tlsKey == nil) else { throw ValidationError("give both --tls-cert and --tls-key") }
            let tls = tlsCert.flatMap { cert in tlsKey.map { (certificateChain: cert, privateKey: $0) } }
            if store == "embedded" {
                server = try await SequencerServer.start(store: configuration, host: host, port: port, tls: tls, limits: limits, logger: logger)
            } else {
                let location = try PostgresLocation(url: store, passwordFile: storePasswordFile)
                let postgres = try await PostgresStore(location, configuration: configuration, logger: log.logger("synd.postgres"))
                do {
                    server = try await SequencerServer.start(
                        store: postgres, maxBatchBytes: configuration.maxBatchBytes, host: host, port: port, tls: tls, limits: limits, logger: logger)
                } catch {
                    postgres.shutdown()
                    throw error
                }
            }
        } catch {
            throw ValidationError("cannot start the sequencer: \(error)")
        }
        var metricsServer: MetricsServer?
        if let metricsPort {
            do {
                metricsServer = try await MetricsServer.start(host: metricsHost, port: metricsPort, service: server.service)
            } catch {
                await server.stop()
                throw ValidationError("cannot start the sequencer: \(error)")
            }
        }
        for note in server.service.store.recoveryNotes {
            printError("synd sequencer: \(note)")
        }
        // The key, to pin in followers (sequencer_key=) and validators (--sequencer-key).
        let key = SequencerKeyText.format(server.service.store.sequencerKey.publicKey)
        let kept = store == "embedded" ? "data: \(data)" : "store: \(server.service.store.location); key file in \(data)"
        let scraped = metricsServer.map { "; metrics \($0.url)" } ?? ""
        print("synd sequencer listening on \(server.url) (\(kept); key \(key)\(scraped))")
        flushStandardOutput()
        try await server.wait()
        await metricsServer?.stop()
    }

    /// Raises the soft open-file limit to `wanted` (at most the hard limit);
    /// what to tell the operator if it stays below.
    static func raiseOpenFileLimit(to wanted: Int) -> String? {
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return nil }
        let goal = rlim_t(wanted)
        if limit.rlim_cur >= goal { return nil }
        limit.rlim_cur = min(goal, limit.rlim_max)
        _ = setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < goal else { return nil }
        return "the open-file limit is \(limit.rlim_cur) (hard limit \(limit.rlim_max)), below the \(wanted) that --max-connections needs: raise it (ulimit -n, LimitNOFILE=) or lower --max-connections"
    }
}
