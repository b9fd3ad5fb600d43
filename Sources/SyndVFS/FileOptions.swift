import CSQLite
import SyndClient
import SyndProtocol

#if canImport(Glibc)
import Glibc
#endif

/// Per-database settings from URI parameters, with environment variables as
/// defaults (https://www.sqlite.org/uri.html).
///
/// | URI parameter  | environment            | default |
/// |----------------|------------------------|---------|
/// | sequencer      | SYNDDB_SEQUENCER       | none (required) |
/// | lease_ttl_ms   | SYNDDB_LEASE_TTL_MS    | 10000 |
/// | lease_renew    | SYNDDB_LEASE_RENEW     | 1 (renew in the background) |
/// | lock_wait_ms   | SYNDDB_LOCK_WAIT_MS    | 500 (how long one attempt at the write lock waits on the sequencer for an idle holder to hand the lease over, before SQLITE_BUSY) |
/// | cache_mb       | SYNDDB_CACHE_MB        | 256 |
/// | timeout_ms     | SYNDDB_TIMEOUT_MS      | 5000 (per request) |
/// | prefetch       | SYNDDB_PREFETCH        | 16 (pages read on a lone miss; sequential misses double it) |
/// | readahead      | SYNDDB_READAHEAD       | 2048 (most pages one read asks for; at most 8 MiB and a quarter of the cache) |
/// | spill_mb       | SYNDDB_SPILL_MB        | 64 (a write transaction's pages past this, and capture's ordered rows and changeset past min(this, 16), go to a temporary file; 0: never) |
/// | spill_dir      | SYNDDB_SPILL_DIR       | $TMPDIR or /tmp |
/// | trace          | SYNDDB_TRACE           | 0 (1: print every request to stderr) |
/// | capture        | SYNDDB_CAPTURE         | 1 (0: send no changesets; for measuring only, validators reject such history) |
/// | tls_ca         | SYNDDB_TLS_CA_FILE     | system store (PEM CA for https sequencers) |
///
/// | follow         | SYNDDB_FOLLOW          | 0 (1: a read-only connection follows the batch stream instead of asking for the latest version at each read transaction) |
/// | max_lag_ms     | SYNDDB_MAX_LAG_MS      | none (a follower serves what it has; N: at most N ms behind the sequencer, else it waits, then SQLITE_BUSY) |
/// | min_version    |                        | none (a follower's read transactions wait for this version, then SQLITE_BUSY) |
/// | sequencer_key  | SYNDDB_SEQUENCER_KEY   | none (a follower checks batches with the key the sequencer gives; with this, only with this key) |
///
/// Time travel, URI only (it names one connection's view, never a default):
/// `version=N` opens version N read-only; `at=TIME` (RFC 3339, or Unix
/// milliseconds) the last version committed at or before TIME.
struct FileOptions {
    var sequencer: String
    var leaseTTLMs: UInt32
    var leaseRenew: Bool
    var lockWaitMs: UInt32
    var cacheBytes: Int
    var timeoutMs: Int
    var prefetch: Int
    var readAheadPages: Int
    var spillBytes: Int
    var spillDirectory: String
    var trace: Bool
    var capture: Bool
    var tlsCAFile: String?
    /// Open as of this version (0: follow the latest).
    var atVersion: UInt64 = 0
    /// Open as of this time, milliseconds since the Unix epoch (0: the latest).
    var atTimeMs: UInt64 = 0
    /// The connection is pinned to a past version: read-only, and it never moves.
    var isPinned: Bool { atVersion != 0 || atTimeMs != 0 }
    /// A read-only connection follows the database's batch stream.
    var follow = false
    /// A follower's bound on staleness: how long ago it may have last known it was current.
    var maxLagMs: Int?
    /// A follower's read transactions wait for this version.
    var minVersion: UInt64 = 0
    /// The sequencer's Ed25519 key a follower checks batches with, instead of asking for it.
    var sequencerKey: [UInt8]?

    init(uriName: UnsafePointer<CChar>?, api: synd_sqlite_api) throws(FileOptionError) {
        func value(_ key: String, _ env: String) -> String? {
            if let uriName, let v = api.uri_parameter(uriName, key) { return String(cString: v) }
            if let v = getenv(env) { return String(cString: v) }
            return nil
        }
        func number(_ key: String, _ env: String, _ fallback: Int, _ range: ClosedRange<Int>) throws(FileOptionError) -> Int {
            guard let s = value(key, env) else { return fallback }
            guard let n = Int(s), range.contains(n) else {
                throw FileOptionError(message: "\(key)=\(s) is invalid: use a number in \(range.lowerBound)...\(range.upperBound)")
            }
            return n
        }
        guard let url = value("sequencer", "SYNDDB_SEQUENCER"), !url.isEmpty else {
            throw FileOptionError(message: "no sequencer URL: add ?sequencer=http://HOST:PORT to the file: URI, or set SYNDDB_SEQUENCER")
        }
        sequencer = url
        leaseTTLMs = UInt32(try number("lease_ttl_ms", "SYNDDB_LEASE_TTL_MS", 10_000, 50...300_000))
        leaseRenew = try number("lease_renew", "SYNDDB_LEASE_RENEW", 1, 0...1) == 1
        lockWaitMs = UInt32(try number("lock_wait_ms", "SYNDDB_LOCK_WAIT_MS", 500, 0...30_000))
        cacheBytes = try number("cache_mb", "SYNDDB_CACHE_MB", 256, 1...1_048_576) << 20
        timeoutMs = try number("timeout_ms", "SYNDDB_TIMEOUT_MS", 5000, 10...600_000)
        prefetch = try number("prefetch", "SYNDDB_PREFETCH", 16, 1...4096)
        readAheadPages = try number("readahead", "SYNDDB_READAHEAD", 2048, 1...65536)
        spillBytes = try number("spill_mb", "SYNDDB_SPILL_MB", 64, 0...1_048_576) << 20
        spillDirectory = value("spill_dir", "SYNDDB_SPILL_DIR") ?? getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
        trace = try number("trace", "SYNDDB_TRACE", 0, 0...1) == 1
        capture = try number("capture", "SYNDDB_CAPTURE", 1, 0...1) == 1
        tlsCAFile = value("tls_ca", "SYNDDB_TLS_CA_FILE")
        let uriVersion = uriName.flatMap { api.uri_parameter($0, "version") }.map { String(cString: $0) }
        let uriAt = uriName.flatMap { api.uri_parameter($0, "at") }.map { String(cString: $0) }
        if let text = uriVersion {
            guard let v = UInt64(text), v > 0 else {
                throw FileOptionError(message: "version=\(text) is invalid: use a committed version, 1 or more (PRAGMA synddb_version and `synd log` show them)")
            }
            atVersion = v
        }
        if let text = uriAt {
            guard let ms = UnixTime.parse(text), ms > 0 else {
                throw FileOptionError(message: "at=\(text) is not a time: use RFC 3339 with an offset (2026-11-23T10:15:30Z, 2026-11-23T11:15:30.250+01:00) or Unix milliseconds")
            }
            atTimeMs = ms
        }
        follow = try number("follow", "SYNDDB_FOLLOW", 0, 0...1) == 1
        if value("max_lag_ms", "SYNDDB_MAX_LAG_MS") != nil {
            maxLagMs = try number("max_lag_ms", "SYNDDB_MAX_LAG_MS", 0, 0...3_600_000)
            follow = true
        }
        if let text = uriName.flatMap({ api.uri_parameter($0, "min_version") }).map({ String(cString: $0) }) {
            guard let v = UInt64(text) else {
                throw FileOptionError(message: "min_version=\(text) is invalid: use a version number (PRAGMA synddb_version of the writer that committed it)")
            }
            minVersion = v
            follow = true
        }
        if let text = value("sequencer_key", "SYNDDB_SEQUENCER_KEY") {
            guard let key = SequencerKeyText.parse(text) else {
                throw FileOptionError(message: "sequencer_key=\(text) is invalid: give the 64 hex digits `synd sequencer` prints after 'key ed25519:'")
            }
            sequencerKey = key
        }
        if uriVersion != nil && uriAt != nil {
            throw FileOptionError(message: "version= and at= both given: open a past state by version or by time, not both")
        }
    }

    var clientOptions: ClientOptions {
        var o = ClientOptions()
        o.requestTimeout = .milliseconds(timeoutMs)
        o.tlsCAFile = tlsCAFile
        return o
    }
}

struct FileOptionError: Error {
    var message: String
}
