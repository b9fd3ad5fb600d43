import SyndProtocol

/// The logical record of one write transaction, sealed into its commit.
public struct CapturedBatch: Sendable {
    /// SQLite changeset (https://www.sqlite.org/sessionintro.html) of the rows
    /// the transaction changed, relative to the schema in `schema` when set.
    /// Empty when the changeset is in `spilledChangeset` instead.
    public var changeset: [UInt8] = []
    /// A large transaction's changeset (past the capture's spill threshold),
    /// in a temporary file rather than memory; then `changeset` is empty.
    public var spilledChangeset: SpilledChangeset?
    /// The whole schema after the transaction (`sql` of sqlite_master, one
    /// statement per entry), present only when the transaction changed it.
    public var schema: [SchemaObject]?
    /// Tables the transaction changed that have no PRIMARY KEY: changesets
    /// cannot name their rows, so validators cannot audit them row by row.
    public var tablesWithoutPrimaryKey: [String] = []

    public init() {}
}
