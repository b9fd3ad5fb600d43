import CSQLite
import SyndSQLite

#if canImport(Glibc)
import Glibc
#endif

extension Connection {
    /// Gives every collation the writer's application registered (and the
    /// validator cannot have) a stand-in that compares bytes, so the schema
    /// loads and rows compare. Replicas never depend on the order it gives:
    /// tables are compared key by key, and each replica's indexes are built
    /// (logical) or only read (physical) consistently.
    func useStandInCollations() {
        sqlite3_collation_needed(handle, nil) { _, db, _, name in
            guard let db, let name else { return }
            sqlite3_create_collation_v2(db, name, SQLITE_UTF8, nil, { _, n1, p1, n2, p2 in
                let n = Int(min(n1, n2))
                let c = n == 0 ? 0 : memcmp(p1!, p2!, n)
                return c != 0 ? c : n1 - n2
            }, nil)
        }
    }
}
