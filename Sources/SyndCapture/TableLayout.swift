/// How capture reads one table's rows, learnt from the after image's schema.
struct TableLayout {
    /// Every column (none hidden), in order: its name and its place in the
    /// primary key (1-based, 0 for none), as a changeset's table header has it.
    var names: [String]
    var primaryKey: [Int]
    /// The primary-key columns, in column order (as the session extension hashes them).
    var keyColumns: [Int]
    /// The primary key is the rowid (an INTEGER PRIMARY KEY of a rowid table):
    /// the preupdate hook's rowids are the keys.
    var rowidKey: Bool
    /// Rows can be found and compared by key exactly as the session extension
    /// does: no generated or hidden columns, a primary key with BINARY collation.
    var exact: Bool
}
