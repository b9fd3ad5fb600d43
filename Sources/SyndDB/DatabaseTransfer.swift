import CSQLite
import SyndSQLite
import SyndVFS

#if canImport(Glibc)
import Glibc
#endif

/// Moves databases in and out of a sequencer as plain SQLite files.
///
/// - `export` copies every page of one version (the latest, or a past one)
///   into a local file that any SQLite opens; the file is checked with
///   `PRAGMA integrity_check` before it takes its name.
/// - `importFile` and `fork` make a new database from a local file or from a
///   version of another database, through SQL: schema, then each table's rows
///   in transactions of bounded size, then indexes, triggers and views. Every
///   step is an ordinary sealed commit, so the history records the rows (in
///   the changesets, for tables with a primary key) and validators check it.
public enum DatabaseTransfer {
    /// How far a transfer got: `done` of `total` units (pages for an export,
    /// rows for an import), and what it is working on.
    public struct Progress: Sendable {
        public var done: Int
        public var total: Int
        public var stage: String
    }

    /// What an export wrote.
    public struct ExportSummary: Sendable {
        /// The version exported and its commit time (ms since the Unix epoch; 0 for version 0).
        public var version: UInt64
        public var pages: Int
        public var bytes: Int
    }

    /// What an import or fork made.
    public struct ImportSummary: Sendable {
        public var tables: Int
        public var rows: Int
        /// Commits it took (the schema, the rows in batches, the indexes).
        public var commits: Int
        /// The new database's version when it was done.
        public var version: UInt64
        /// The version a fork copied (0 for a file).
        public var sourceVersion: UInt64 = 0
    }

    /// A transfer that cannot be done as asked, with what to do instead.
    public struct TransferError: Error, CustomStringConvertible {
        public var message: String
        public var description: String { message }
        init(_ message: String) { self.message = message }
    }

    /// Writes database `name` (as of `asOf`, or its latest version) to the
    /// local file `path`, which must not exist. Written beside it first and
    /// renamed once complete and checked: a failed export leaves no file.
    public static func export(
        _ name: String, sequencer: String, to path: String, asOf: DatabaseOptions.PastState? = nil,
        progress: ((Progress) -> Void)? = nil
    ) throws -> ExportSummary {
        guard access(path, F_OK) != 0 else {
            throw TransferError("\(path) exists: export writes a new file; remove it or choose another name")
        }
        let source = try pinned(name, sequencer: sequencer, asOf: asOf)
        let version = source.statistics.version
        let temporary = path + ".synd-export"
        unlink(temporary)
        do {
            let target = try Connection(path: temporary, vfs: "unix")
            guard let backup = sqlite3_backup_init(target.handle, "main", source.connection.handle, "main") else {
                throw TransferError("cannot start copying '\(name)': \(String(cString: sqlite3_errmsg(target.handle)))")
            }
            var rc: Int32 = SQLITE_OK
            repeat {
                rc = sqlite3_backup_step(backup, 1024)
                let total = Int(sqlite3_backup_pagecount(backup))
                progress?(Progress(done: total - Int(sqlite3_backup_remaining(backup)), total: total, stage: "pages"))
            } while rc == SQLITE_OK
            let pages = Int(sqlite3_backup_pagecount(backup))
            sqlite3_backup_finish(backup)
            guard rc == SQLITE_DONE else {
                let detail = SQLiteError.from(source.connection.handle, rc, context: "copying pages")
                throw TransferError("copying '\(name)' version \(version) failed: \(detail)")
            }
            let check = try target.query("PRAGMA integrity_check").map { $0.first?.string ?? "" }
            guard check == ["ok"] else {
                throw TransferError("the copy of '\(name)' version \(version) fails integrity_check: \(check.prefix(5).joined(separator: "; "))")
            }
            let pageSize = Int(try target.scalar("PRAGMA page_size")?.int64 ?? 0)
            guard rename(temporary, path) == 0 else {
                throw TransferError("cannot rename \(temporary) to \(path): \(String(cString: strerror(errno)))")
            }
            return ExportSummary(version: version, pages: pages, bytes: pages * pageSize)
        } catch {
            unlink(temporary)
            unlink(temporary + "-journal")
            throw error
        }
    }

    /// Makes database `name` on the sequencer from the local SQLite file
    /// `path`. `name` must be new (or empty). Rows go in commits of about
    /// `batchBytes` each.
    public static func importFile(
        _ path: String, as name: String, sequencer: String, batchBytes: Int = 8 << 20,
        progress: ((Progress) -> Void)? = nil
    ) throws -> ImportSummary {
        guard access(path, R_OK) == 0 else {
            throw TransferError("cannot read \(path): \(String(cString: strerror(errno)))")
        }
        // SQLite reads a file too short for a header as an empty database: say what it is instead.
        var header = [UInt8](repeating: 0, count: 16)
        if let f = fopen(path, "rb") {
            _ = fread(&header, 1, 16, f)
            fclose(f)
        }
        guard header == Array("SQLite format 3\0".utf8) else {
            throw TransferError("\(path) is not a SQLite database (it lacks the \"SQLite format 3\" header)")
        }
        let source = try Connection(path: path, readOnly: true, vfs: "unix")
        do {
            _ = try source.scalar("SELECT count(*) FROM sqlite_schema")
        } catch {
            throw TransferError("\(path) is not a SQLite database SyndDB can read: \(error)")
        }
        return try copy(from: source, describing: path, into: name, sequencer: sequencer, batchBytes: batchBytes, progress: progress)
    }

    /// Makes database `target` from `source` as of `asOf` (default: its
    /// latest version when the fork starts). `target` must be new (or empty).
    public static func fork(
        _ source: String, to target: String, sequencer: String, asOf: DatabaseOptions.PastState? = nil,
        batchBytes: Int = 8 << 20, progress: ((Progress) -> Void)? = nil
    ) throws -> ImportSummary {
        guard source != target else { throw TransferError("fork needs a new name: '\(target)' is the source") }
        let from = try pinned(source, sequencer: sequencer, asOf: asOf)
        let described = "'\(source)' version \(from.statistics.version)"
        var summary = try copy(from: from.connection, describing: described, into: target, sequencer: sequencer, batchBytes: batchBytes, progress: progress)
        summary.sourceVersion = from.statistics.version
        return summary
    }

    /// `name` pinned to one version: `asOf`, or the latest when this is called.
    static func pinned(_ name: String, sequencer: String, asOf: DatabaseOptions.PastState?) throws -> Database {
        var options = DatabaseOptions()
        if let asOf {
            options.asOf = asOf
        } else {
            // The latest version, then that version pinned: the copy sees one state throughout.
            options.readOnly = true
            let latest = try Database.open(name, sequencer: sequencer, options: options)
            _ = try latest.scalar("SELECT count(*) FROM sqlite_schema")
            let version = latest.statistics.version
            guard version > 0 else { throw TransferError("'\(name)' has no committed version: nothing to copy") }
            options.asOf = .version(version)
        }
        let db = try Database.open(name, sequencer: sequencer, options: options)
        _ = try db.scalar("SELECT count(*) FROM sqlite_schema")
        return db
    }
}
