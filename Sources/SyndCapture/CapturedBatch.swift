import SyndProtocol

/// The logical record of one write transaction, sealed into its commit.
public struct CapturedBatch: Sendable {
    /// SQLite changeset (https://www.sqlite.org/sessionintro.html) of the rows
    /// the transaction changed, relative to the schema in `schema` when set.
    public var changeset: [UInt8] = []
    /// The whole schema after the transaction (`sql` of sqlite_master, one
    /// statement per entry), present only when the transaction changed it.
    public var schema: [SchemaObject]?
    /// Tables the transaction changed that have no PRIMARY KEY: changesets
    /// cannot name their rows, so validators cannot audit them row by row.
    public var tablesWithoutPrimaryKey: [String] = []

    public init() {}
}
