import Foundation
import SyndPostgres
import SyndStorage
import Testing

/// The PostgreSQL that `scripts/with-postgres.sh` started (SYNDDB_TEST_POSTGRES).
/// `scripts/test.sh` always runs the tests under it; a bare `swift test`
/// without it reports the PostgreSQL tests as skipped, with this reason.
enum PostgresTest {
    static let url = ProcessInfo.processInfo.environment["SYNDDB_TEST_POSTGRES"]
    static var available: Bool { url != nil }
    static let why: Comment = "needs a PostgreSQL: run under scripts/with-postgres.sh (scripts/test.sh does)"
    /// SYNDDB_TEST_STORE=postgres: every sequencer the tests start keeps its
    /// databases in PostgreSQL (a database of its own per sequencer).
    static let storeForAllTests = ProcessInfo.processInfo.environment["SYNDDB_TEST_STORE"] == "postgres"
}

/// A PostgreSQL database of its own for one test, created on the test
/// server (so tests run in parallel) and dropped when released.
final class PostgresTestDatabase: @unchecked Sendable {
    // Safe: both fields are immutable.
    let name: String
    /// The store URL for `synd sequencer --store` and `PostgresStore`.
    let url: String

    init() throws {
        guard let admin = PostgresTest.url else { throw TestFailure("SYNDDB_TEST_POSTGRES is not set: run under scripts/with-postgres.sh") }
        name = "synd_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(16)
        try Self.psql(admin, "CREATE DATABASE \(name)")
        guard let slash = admin.range(of: "/postgres") else { throw TestFailure("SYNDDB_TEST_POSTGRES must name the database 'postgres': \(admin)") }
        url = admin.replacingCharacters(in: slash, with: "/\(name)")
    }

    deinit {
        if let admin = PostgresTest.url { try? Self.psql(admin, "DROP DATABASE IF EXISTS \(name) WITH (FORCE)") }
    }

    /// Runs one SQL statement with psql against `url`; returns its unaligned output.
    @discardableResult
    static func psql(_ url: String, _ sql: String) throws -> String {
        let r = try runProgram("/usr/bin/psql", [url, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
        guard r.status == 0 else { throw TestFailure("psql '\(sql)' failed: \(r.error)") }
        return r.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// One SQL statement against this test's database.
    @discardableResult
    func sql(_ statement: String) throws -> String { try Self.psql(url, statement) }
}

/// The stores every `SequencerStore` test runs against.
enum StoreKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case embedded, postgres
    var testDescription: String { rawValue }

    /// A fresh store of this kind: the embedded one in `directory`; PostgreSQL's
    /// in a database of its own (its key in `directory`).
    func make(_ directory: String, configure: (inout StoreConfiguration) -> Void = { _ in }) async throws -> (store: any SequencerStore, keep: AnyObject?) {
        var configuration = StoreConfiguration(directory: directory)
        configure(&configuration)
        switch self {
        case .embedded:
            return (try PageStore(configuration), nil)
        case .postgres:
            let database = try PostgresTestDatabase()
            let store = try await PostgresStore(PostgresLocation(url: database.url), configuration: configuration)
            return (store, database)
        }
    }

    /// Whether this machine can run it.
    var available: Bool { self == .embedded || PostgresTest.available }
}

import SyndSequencer

extension SequencerService {
    /// The embedded store of a sequencer a test started with one (what `SequencerServer.start(store: StoreConfiguration)` makes).
    var pageStore: PageStore { store as! PageStore }
}
