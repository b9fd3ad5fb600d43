import Logging
import PostgresNIO

/// The store's tables in PostgreSQL, created and migrated by the sequencer
/// (docs/postgresql.md describes them). Each migration runs once, in order,
/// in one transaction under an advisory lock, so sequencers starting together
/// neither race nor half-apply one; `synddb_meta.schema_version` says which ran.
enum PostgresSchema {
    /// Migration k brings the schema from version k to k + 1.
    static let migrations: [String] = [
        """
        CREATE TABLE synddb_databases (
            id bigserial PRIMARY KEY,
            name text NOT NULL UNIQUE,
            version bigint NOT NULL DEFAULT 0,
            page_size integer NOT NULL DEFAULT 0,
            page_count bigint NOT NULL DEFAULT 0,
            oldest_version bigint NOT NULL DEFAULT 0,
            last_hash bytea NOT NULL,
            last_committed_at_ms bigint NOT NULL DEFAULT 0,
            lease_holder text,
            lease_epoch bigint NOT NULL DEFAULT 0,
            lease_ttl_ms integer NOT NULL DEFAULT 0,
            lease_expires timestamptz,
            lease_in_txn boolean NOT NULL DEFAULT false
        );
        CREATE TABLE synddb_batches (
            db bigint NOT NULL REFERENCES synddb_databases (id),
            version bigint NOT NULL,
            txn_id bytea NOT NULL,
            committed_at_ms bigint NOT NULL,
            page_size integer NOT NULL,
            page_count bigint NOT NULL,
            seal bytea NOT NULL,
            PRIMARY KEY (db, version)
        );
        CREATE UNIQUE INDEX synddb_batches_txn ON synddb_batches (db, txn_id);
        CREATE TABLE synddb_pages (
            db bigint NOT NULL,
            number bigint NOT NULL,
            version bigint NOT NULL,
            checksum bigint NOT NULL,
            data bytea NOT NULL,
            PRIMARY KEY (db, number, version)
        );
        CREATE INDEX synddb_pages_version ON synddb_pages (db, version);
        CREATE TABLE synddb_refusals (
            db bigint NOT NULL,
            txn_id bytea NOT NULL,
            holder text NOT NULL,
            epoch bigint NOT NULL,
            base_version bigint NOT NULL,
            code integer NOT NULL,
            message text NOT NULL,
            refused_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            PRIMARY KEY (db, txn_id)
        );
        """,
    ]

    static var currentVersion: Int { migrations.count }

    /// Brings the schema up to `currentVersion`; refuses a schema written by a newer SyndDB.
    static func migrate(_ client: PostgresClient, logger: Logger) async throws -> [String] {
        try await client.query("CREATE TABLE IF NOT EXISTS synddb_meta (key text PRIMARY KEY, value text NOT NULL)", logger: logger)
        return try await client.withTransaction(logger: logger) { connection in
            // Sequencers starting at once: one migrates, the others then find it done.
            try await connection.query("SELECT pg_advisory_xact_lock(7283461)", logger: logger)
            var found = 0
            for try await value in try await connection.query("SELECT value FROM synddb_meta WHERE key = 'schema_version'", logger: logger).decode(String.self) {
                found = Int(value) ?? -1
            }
            guard found >= 0, found <= currentVersion else {
                throw PostgresStoreError("the PostgreSQL store's schema is version \(found), newer than this sequencer knows (\(currentVersion)); run a newer synd")
            }
            var notes: [String] = []
            for k in found..<currentVersion {
                // One statement per query: the extended protocol takes no more.
                for statement in migrations[k].split(separator: ";") where !statement.allSatisfy(\.isWhitespace) {
                    try await connection.query(PostgresQuery(unsafeSQL: String(statement)), logger: logger)
                }
                notes.append("PostgreSQL store: schema migrated to version \(k + 1)")
            }
            let version = String(currentVersion)
            try await connection.query(
                "INSERT INTO synddb_meta (key, value) VALUES ('schema_version', \(version)) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                logger: logger)
            return notes
        }
    }

    /// Registers `publicKey` as the key every batch of this store is signed
    /// with, or checks that it is the one registered: sequencers sharing a
    /// PostgreSQL must share their key, or validators would see two chains' signers.
    static func registerKey(_ client: PostgresClient, publicKey: String, keyPath: String, logger: Logger) async throws {
        try await client.query(
            "INSERT INTO synddb_meta (key, value) VALUES ('sequencer_key', \(publicKey)) ON CONFLICT (key) DO NOTHING", logger: logger)
        var registered = ""
        for try await value in try await client.query("SELECT value FROM synddb_meta WHERE key = 'sequencer_key'", logger: logger).decode(String.self) {
            registered = value
        }
        guard registered == publicKey else {
            throw PostgresStoreError("""
                this sequencer's key (\(keyPath), \(publicKey)) is not the key of the sequencers already sharing \
                this PostgreSQL store (\(registered)): every batch must verify under one key. Copy the key file of \
                the first sequencer (sequencer.ed25519 in its --data folder) into this one's --data folder, then start again
                """)
        }
    }
}
