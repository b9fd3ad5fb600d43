import PostgresNIO
import SyndProtocol
import SyndStorage

extension PostgresStore {
    /// Every database that exists (dropped ones aside), by name; leases by PostgreSQL's clock.
    public func databaseStatuses() throws(SequencerError) -> [DatabaseStatus] {
        try blocking("listing the databases") { [self] () async throws -> [DatabaseStatus] in
            let rows = try await client.query(
                """
                SELECT name, version, page_size, page_count, oldest_version, lease_holder, lease_epoch,
                    CASE WHEN lease_holder IS NOT NULL AND lease_expires > clock_timestamp()
                        THEN (extract(epoch FROM lease_expires - clock_timestamp()) * 1000)::bigint END
                FROM synddb_databases WHERE NOT (version > 0 AND page_count = 0) ORDER BY name
                """, logger: logger)
            var all: [DatabaseStatus] = []
            for try await (name, version, pageSize, pageCount, oldest, holder, epoch, msLeft) in rows.decode(
                (String, Int64, Int32, Int64, Int64, String?, Int64, Int64?).self)
            {
                var status = DatabaseStatus(
                    name: name, version: UInt64(version), oldestVersion: UInt64(max(1, oldest)),
                    pageSize: UInt32(pageSize), pageCount: UInt32(clamping: pageCount))
                if let holder, let msLeft { status.lease = .init(holder: holder, epoch: UInt64(epoch), msLeft: msLeft) }
                all.append(status)
            }
            return all
        }
    }

    /// Bytes PostgreSQL takes for the store's tables and their indexes.
    public func storedBytes() throws(SequencerError) -> Int64 {
        try blocking("measuring the store") { [self] () async throws -> Int64 in
            var total: Int64 = 0
            for try await bytes in try await client.query(
                """
                SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c
                WHERE c.relkind = 'r' AND c.relname LIKE 'synddb\\_%'
                """, logger: logger
            ).decode(Int64.self) {
                total = bytes
            }
            return total
        }
    }
}
