import CSQLite

extension ChangesetCapture {
    /// Whether every row of rowid table `table` that differs between the
    /// committed state and the transaction's image is `named`: one pass over
    /// both in rowid order, one row of each at a time, so that checking a
    /// transaction that rewrote every page costs no memory for its rows.
    /// Rows compare exactly (type and bytes); a row that differs only in a
    /// way the changeset would not show must be named too, which at worst
    /// sends the caller to the full comparison.
    func everyChangedRowIsNamed(_ table: String, _ layout: TableLayout, _ named: (Int64) -> Bool) throws(CaptureError) -> Bool {
        let id = layout.names[layout.keyColumns[0]].quotedIdentifier
        let list = layout.names.map(\.quotedIdentifier).joined(separator: ", ")
        let r = scratch.r
        let present = try scratch.query("SELECT 1 FROM main.sqlite_master WHERE type = 'table' AND name = ?1", [.text(Array(table.utf8))])
        let afterSQL = "SELECT \(id), \(list) FROM after.\(table.quotedIdentifier) ORDER BY \(id)"
        let beforeSQL = "SELECT \(id), \(list) FROM main.\(table.quotedIdentifier) ORDER BY \(id)"
        let after = try scratch.statement(afterSQL)
        let before: OpaquePointer? = present.isEmpty ? nil : try scratch.statement(beforeSQL)
        defer {
            _ = r.pointee.reset(after)
            if let before { _ = r.pointee.reset(before) }
        }
        func step(_ stmt: OpaquePointer?, _ sql: String) throws(CaptureError) -> Int64? {
            guard let stmt else { return nil }
            let rc = r.pointee.step(stmt)
            if rc == SQLITE_DONE { return nil }
            guard rc == SQLITE_ROW else { throw scratch.error(rc, sql) }
            return r.pointee.column_int64(stmt, 0)
        }
        let columns = Int32(layout.names.count)
        func sameRow(_ a: OpaquePointer, _ b: OpaquePointer) -> Bool {
            for c in 1...columns {
                let type = r.pointee.column_type(a, c)
                guard type == r.pointee.column_type(b, c) else { return false }
                switch type {
                case SQLITE_INTEGER:
                    guard r.pointee.column_int64(a, c) == r.pointee.column_int64(b, c) else { return false }
                case SQLITE_FLOAT:
                    guard r.pointee.column_double(a, c).bitPattern == r.pointee.column_double(b, c).bitPattern else { return false }
                case SQLITE_TEXT, SQLITE_BLOB:
                    let pa = type == SQLITE_TEXT ? r.pointee.column_text(a, c).map(UnsafeRawPointer.init) : r.pointee.column_blob(a, c)
                    let pb = type == SQLITE_TEXT ? r.pointee.column_text(b, c).map(UnsafeRawPointer.init) : r.pointee.column_blob(b, c)
                    let n = r.pointee.column_bytes(a, c)
                    guard n == r.pointee.column_bytes(b, c) else { return false }
                    if n > 0 {
                        guard let pa, let pb, memcmp(pa, pb, Int(n)) == 0 else { return false }
                    }
                default:
                    break
                }
            }
            return true
        }
        var old = try step(before, beforeSQL)
        var new = try step(after, afterSQL)
        while old != nil || new != nil {
            if let o = old, let n = new, o == n {
                if !sameRow(before!, after), !named(o) { return false }
                old = try step(before, beforeSQL)
                new = try step(after, afterSQL)
            } else if let o = old, new.map({ o < $0 }) ?? true {
                // Deleted.
                guard named(o) else { return false }
                old = try step(before, beforeSQL)
            } else if let n = new {
                // Inserted.
                guard named(n) else { return false }
                new = try step(after, afterSQL)
            }
        }
        return true
    }
}
