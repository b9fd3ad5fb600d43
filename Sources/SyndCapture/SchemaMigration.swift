import SyndProtocol

/// Moves a database's schema to a target schema, keeping the rows of tables
/// that exist in both (by column name). The writer (before building a
/// changeset) and the validator (before applying it) run this same procedure on
/// the same starting schema, so their tables agree column for column.
public enum SchemaMigration {
    /// The schema of `schema` ("" for main): user objects in creation order.
    public static func query(schema: String) -> String {
        let prefix = schema.isEmpty ? "" : schema.quotedIdentifier + "."
        return "SELECT type, name, tbl_name, sql FROM \(prefix)sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY rowid"
    }

    /// Tables the target renamed (ALTER TABLE ... RENAME TO): a table that
    /// disappears while one with the same columns appears. Run these first, then
    /// re-read the schema and run `statements`.
    public static func renames(
        from current: [SchemaObject], to target: [SchemaObject], columnsOfCurrent: (String) throws -> [String],
        columnsOfTarget: (SchemaObject) throws -> [String]
    ) rethrows -> [String] {
        let currentNames = Set(current.filter { $0.type == "table" }.map(\.name))
        let targetNames = Set(target.filter { $0.type == "table" }.map(\.name))
        var gone = current.filter { $0.type == "table" && !$0.isVirtualTable && !targetNames.contains($0.name) }
        var out: [String] = []
        for t in target where t.type == "table" && !t.isVirtualTable && !currentNames.contains(t.name) {
            let columns = try columnsOfTarget(t)
            if let i = try gone.firstIndex(where: { try columnsOfCurrent($0.name) == columns }) {
                out.append("ALTER TABLE \(gone[i].name.quotedIdentifier) RENAME TO \(t.name.quotedIdentifier)")
                gone.remove(at: i)
            }
        }
        return out
    }

    /// The statements that turn `current` into `target`. `columns` gives a
    /// table's column names in the current schema (after renames, by old name).
    public static func statements(
        from current: [SchemaObject], to target: [SchemaObject], columnsOfCurrent: (String) throws -> [String],
        columnsOfTarget: (SchemaObject) throws -> [String]
    ) rethrows -> [String] {
        var out: [String] = []
        let currentTables = Dictionary(current.filter { $0.type == "table" }.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let targetTables = Dictionary(target.filter { $0.type == "table" }.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let targetSQL = Set(target.map { "\($0.type)\u{1F}\($0.name)\u{1F}\($0.sql)" })
        // Views and triggers are recreated; indexes only when they changed.
        for o in current.reversed() where o.type == "view" || o.type == "trigger" {
            out.append("DROP \(o.type.uppercased()) IF EXISTS \(o.name.quotedIdentifier)")
        }
        for o in current where o.type == "index" && !targetSQL.contains("\(o.type)\u{1F}\(o.name)\u{1F}\(o.sql)") {
            out.append("DROP INDEX IF EXISTS \(o.name.quotedIdentifier)")
        }
        for o in current where o.type == "table" && targetTables[o.name] == nil {
            out.append(o.isVirtualTable ? Self.unregister(o) : "DROP TABLE IF EXISTS \(o.name.quotedIdentifier)")
        }
        for t in target where t.type == "table" && t.isVirtualTable {
            guard currentTables[t.name]?.sql != t.sql else { continue }
            if let c = currentTables[t.name] { out.append(c.isVirtualTable ? Self.unregister(c) : "DROP TABLE IF EXISTS \(c.name.quotedIdentifier)") }
            out.append(Self.register(t))
        }
        for t in target where t.type == "table" && !t.isVirtualTable {
            if let c = currentTables[t.name], c.isVirtualTable {
                out.append(Self.unregister(c))
                out.append(t.sql)
                continue
            }
            guard let c = currentTables[t.name] else {
                out.append(t.sql)
                continue
            }
            guard c.sql != t.sql else { continue }
            if let added = addedColumns(from: c.sql, to: t.sql) {
                // ALTER TABLE ADD COLUMN leaves stored rows short, and SQLite reads
                // the default for them: do the same, not a rebuild that stores it.
                for definition in added {
                    out.append("ALTER TABLE \(t.name.quotedIdentifier) ADD COLUMN \(definition)")
                }
                continue
            }
            let old = "synddb_migrating_" + t.name
            out.append("ALTER TABLE \(t.name.quotedIdentifier) RENAME TO \(old.quotedIdentifier)")
            out.append(t.sql)
            let newColumns = try columnsOfTarget(t)
            let oldColumns = try columnsOfCurrent(t.name)
            if oldColumns.count == newColumns.count && oldColumns != newColumns {
                // Same shape, other names: a RENAME COLUMN keeps positions.
                let to = newColumns.map(\.quotedIdentifier).joined(separator: ", ")
                let from = oldColumns.map(\.quotedIdentifier).joined(separator: ", ")
                out.append("INSERT INTO \(t.name.quotedIdentifier)(\(to)) SELECT \(from) FROM \(old.quotedIdentifier)")
            } else {
                let common = oldColumns.filter { newColumns.contains($0) }.map(\.quotedIdentifier).joined(separator: ", ")
                if !common.isEmpty {
                    out.append("INSERT INTO \(t.name.quotedIdentifier)(\(common)) SELECT \(common) FROM \(old.quotedIdentifier)")
                }
            }
            out.append("DROP TABLE \(old.quotedIdentifier)")
        }
        return out
    }

    /// A virtual table's definition, recorded without instantiating it: its
    /// module may exist only in the writer's application. Its rows live in its
    /// shadow tables (ordinary tables, migrated and audited like any other) or
    /// outside the database, and changesets never carry them.
    static func register(_ t: SchemaObject) -> String {
        "PRAGMA writable_schema=ON; INSERT INTO sqlite_master(type, name, tbl_name, rootpage, sql) VALUES ('table', \(literal(t.name)), \(literal(t.name)), 0, \(literal(t.sql))); PRAGMA writable_schema=OFF"
    }

    static func unregister(_ t: SchemaObject) -> String {
        "PRAGMA writable_schema=ON; DELETE FROM sqlite_master WHERE type = 'table' AND name = \(literal(t.name)); PRAGMA writable_schema=OFF"
    }

    static func literal(_ s: String) -> String {
        "'" + s.split(separator: "'", omittingEmptySubsequences: false).joined(separator: "''") + "'"
    }

    /// What `statements` leaves for after the rows are right: indexes (a new
    /// UNIQUE index may only hold once the changeset is applied), views, triggers.
    public static func finishingStatements(from current: [SchemaObject], to target: [SchemaObject]) -> [String] {
        var out: [String] = []
        let currentTables = Dictionary(current.filter { $0.type == "table" }.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let targetTables = Dictionary(target.filter { $0.type == "table" }.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let currentSQL = Set(current.map { "\($0.type)\u{1F}\($0.name)\u{1F}\($0.sql)" })
        for t in target where t.type == "index" && !currentSQL.contains("\(t.type)\u{1F}\(t.name)\u{1F}\(t.sql)") {
            out.append(t.sql)
        }
        for t in target where t.type == "index" && currentSQL.contains("\(t.type)\u{1F}\(t.name)\u{1F}\(t.sql)") {
            if let table = currentTables[t.tableName], table.sql != targetTables[t.tableName]?.sql {
                out.append(t.sql)  // dropped with its rebuilt table
            }
        }
        for t in target where t.type == "view" || t.type == "trigger" {
            out.append(t.sql)
        }
        return out
    }
}

/// The column definitions ALTER TABLE ADD COLUMN appended to `old` to make
/// `new` (SQLite appends ", <definition>" before the final parenthesis).
func addedColumns(from old: String, to new: String) -> [String]? {
    guard old.hasSuffix(")"), new.hasSuffix(")") else { return nil }
    let base = String(old.dropLast())
    guard new.hasPrefix(base) else { return nil }
    let tail = new.dropFirst(base.count).dropLast()
    guard tail.hasPrefix(",") else { return nil }
    var definitions: [String] = []
    var current = ""
    var depth = 0
    var quote: Character?
    for c in tail.dropFirst() {
        if let q = quote {
            if c == q { quote = nil }
            current.append(c)
            continue
        }
        switch c {
        case "'", "\"", "`", "[": quote = c == "[" ? "]" : c; current.append(c)
        case "(": depth += 1; current.append(c)
        case ")": depth -= 1; current.append(c)
        case "," where depth == 0:
            definitions.append(current)
            current = ""
        default: current.append(c)
        }
    }
    definitions.append(current)
    let trimmed = definitions.map { $0.drop(while: { $0 == " " }) }.map(String.init)
    return trimmed.contains(where: \.isEmpty) ? nil : trimmed
}

extension SchemaObject {
    /// `CREATE VIRTUAL TABLE ...`: a table whose module the writer's
    /// application registered, which neither capture nor a validator may have.
    public var isVirtualTable: Bool {
        guard type == "table" else { return false }
        let words = sql.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" || $0 == "\r" }).prefix(2).map { $0.uppercased() }
        return words == ["CREATE", "VIRTUAL"]
    }
}
