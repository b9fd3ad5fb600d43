import SyndSQLite

/// Knows, for the physical replica, which b-tree every page of a keyed table
/// belongs to and which row owns every overflow page, so that a batch's page
/// images tell exactly which rows they changed. The validator then compares
/// only those rows (and the rows the changeset names) instead of every table:
/// the work per batch follows the batch, not the database.
///
/// Every structural claim of the new pages is checked on the way: a page
/// listed twice (by two parents, or as a child and an overflow page), a cycle,
/// a page of the wrong kind for its tree, an overflow chain of the wrong length.
/// Pages outside keyed tables' b-trees (indexes, the freelist, tables without
/// a primary key) are not tracked; the periodic full check covers them.
final class PageTracker {
    /// A row a batch may have changed: by rowid (looked up on the replica) or by key.
    enum RowRef: Hashable {
        /// A row of a rowid table that is there now, by its rowid.
        case rowid(Int64)
        /// A row that may be there or not, by its key.
        case key([Value])
        /// A row of a WITHOUT ROWID table that is there now, by its key (a lookup must find it).
        case present([Value])
    }

    /// What a batch changed, per table root; `undecided` when some row's key
    /// could not be read (the caller compares those tables whole).
    struct Changes {
        var rows: [UInt32: Set<RowRef>] = [:]
        var undecided: Set<UInt32> = []
    }

    let usableSize: Int
    let encoding: TextEncoding
    private(set) var tables: [UInt32: TableKeys]
    /// b-tree page → (root of its tree, parent page; 0 for the root).
    private var placement: [UInt32: (root: UInt32, parent: UInt32)] = [:]
    /// Overflow page → the row's cell that owns it.
    private var overflowOwner: [UInt32: Owner] = [:]
    /// Each row's overflow chain.
    private var chains: [Owner: Chain] = [:]
    /// The rowids each page of a rowid table may hold, from its ancestors' keys:
    /// a row outside them is in the file but not where a lookup looks.
    private var bounds: [UInt32: Bounds] = [:]

    /// Rowids `lower < rowid <= upper` (nil: no bound).
    struct Bounds: Equatable {
        var lower: Int64?
        var upper: Int64?
        func holds(_ k: Int64) -> Bool { (lower.map { k > $0 } ?? true) && (upper.map { k <= $0 } ?? true) }
        /// Child `i`'s bounds under a table interior `page` with these bounds.
        func child(_ i: Int, of page: BTreePage) -> Bounds {
            Bounds(lower: i == 0 ? lower : page.keys[i - 1], upper: i < page.keys.count ? page.keys[i] : upper)
        }
    }

    /// Walks every keyed table's b-tree from its root.
    /// - Parameter pointerMap: the page size, when the database has auto_vacuum's pointer map.
    init(
        tables: [UInt32: TableKeys], usableSize: Int, encoding: TextEncoding, pointerMap pageSize: Int? = nil, pageCount: UInt32 = .max,
        read: (UInt32) throws -> [UInt8]?
    ) throws {
        self.pageCount = pageCount
        self.tables = tables
        self.usableSize = usableSize
        self.encoding = encoding
        pointerMap = pageSize.map { (perPage: UInt32(usableSize / 5 + 1), pendingPage: UInt32(0x4000_0000 / $0 + 1)) }
        var changes = Changes()
        for root in tables.keys.sorted() {
            try attach(root: root, read: read, changes: &changes)
        }
        try walk(1, parent: 0, skipping: { _ in false }, read: read) { p, _, page in
            if p != 1 { schemaPages.insert(p) }
            for cell in page.cells where cell.firstOverflow != 0 {
                let count = BTreePage.overflowPages(payload: cell.payloadSize, local: cell.local.count, usableSize: usableSize)
                schemaPages.formUnion(try chainPages(Chain(first: cell.firstOverflow, pages: count, row: nil, cell: cell), read: read))
            }
        }
    }

    var trackedPages: Int { placement.count + overflowOwner.count }

    /// auto_vacuum's pointer map, when the database has one (pages per map page,
    /// and the page that holds SQLite's lock byte, which is never used).
    private let pointerMap: (perPage: UInt32, pendingPage: UInt32)?
    /// Each tracked overflow page's next page (0 for the last of its chain).
    private var overflowNext: [UInt32: UInt32] = [:]
    /// The database's page count as SQLite sees it (it never guesses past it).
    private var pageCount: UInt32

    /// The pages of sqlite_schema's b-tree other than page 1, and its rows' overflow pages.
    private var schemaPages: Set<UInt32> = []

    /// True when `changed` touches the schema: page 1's b-tree part, or another
    /// page of sqlite_schema (SQLite would read a new schema; only a full check will do).
    func touchesSchema(_ changed: [UInt32: (old: [UInt8]?, new: [UInt8]?)]) -> Bool {
        if let one = changed[1] {
            guard let old = one.old, let new = one.new, old.count >= usableSize, new.count >= usableSize,
                old[100..<usableSize] == new[100..<usableSize]
            else { return true }
        }
        return changed.keys.contains { schemaPages.contains($0) }
    }

    /// Whether the page map needs page `p`'s old bytes when a batch rewrites it.
    func isTracked(_ p: UInt32) -> Bool { placement[p] != nil || overflowOwner[p] != nil || schemaPages.contains(p) }

    /// The tracked pages among `range` (pages a batch cut off whose old bytes the tracker needs).
    func tracked(in range: ClosedRange<UInt32>) -> [UInt32] {
        if range.count <= trackedPages { return range.filter { placement[$0] != nil || overflowOwner[$0] != nil } }
        return (Array(placement.keys) + Array(overflowOwner.keys)).filter { range.contains($0) }
    }

    /// Takes in a batch: `changed` maps each page the batch wrote (or cut off,
    /// as nil new content) to its old and new bytes; `read` gives any other
    /// page (the same before and after). Returns the rows that changed.
    /// `visible`: pages after it are not part of the database now (page 1's header says so).
    func apply(changed: [UInt32: (old: [UInt8]?, new: [UInt8]?)], visible: UInt32 = .max, read: (UInt32) throws -> [UInt8]?) throws -> Changes {
        pageCount = visible
        let oldRead: (UInt32) throws -> [UInt8]? = { p in if let c = changed[p] { c.old } else { try read(p) } }
        let newRead: (UInt32) throws -> [UInt8]? = { p in if let c = changed[p] { c.new } else if p > visible { nil } else { try read(p) } }
        var parsedOld: [UInt32: BTreePage] = [:]
        for (p, c) in changed where placement[p] != nil {
            guard let data = c.old else { throw PageFormatError(p, "was a b-tree page and is missing") }
            parsedOld[p] = try BTreePage(data, number: p, usableSize: usableSize)
        }
        let (newPlacement, parsedNew, kidPlacement) = try placeChanged(changed)

        var changes = Changes()
        var removed: [UInt32: [CellKey: BTreePage.Cell]] = [:]
        var added: [UInt32: [CellKey: BTreePage.Cell]] = [:]
        func collect(_ page: BTreePage, root: UInt32, into rows: inout [UInt32: [CellKey: BTreePage.Cell]], page number: UInt32) throws {
            guard let table = tables[root] else { return }
            guard page.kind.isTable != table.withoutRowid else {
                throw PageFormatError(number, "is a \(page.kind.isTable ? "table" : "index") page in \(table.name)'s b-tree")
            }
            for cell in page.cells {
                let key: CellKey = page.kind.isTable ? .rowid(cell.rowid) : .bytes(Array(cell.bytes))
                guard rows[root, default: [:]].updateValue(cell, forKey: key) == nil else {
                    throw PageFormatError(number, "repeats a row of \(table.name) (rowid \(cell.rowid))")
                }
            }
        }

        // Changed pages: their rows before (where they hung) and after.
        for (p, page) in parsedOld {
            guard let root = placement[p]?.root else { continue }
            try collect(page, root: root, into: &removed, page: p)
        }
        for (p, at) in newPlacement {
            guard let page = parsedNew[p] else {
                // Why it does not parse, or that it is gone.
                if let data = changed[p]?.new { _ = try BTreePage(data, number: p, usableSize: usableSize) }
                throw PageFormatError(p, "hangs in \(tables[at.root]?.name ?? "?")'s b-tree but is cut off")
            }
            try collect(page, root: at.root, into: &added, page: p)
        }

        // Unchanged pages hung under a changed page, before or now: the same
        // tree (a rebalance moved them) changes no row; another tree, or none,
        // moves all their rows.
        var kids = Set(kidPlacement.keys)
        for (p, page) in parsedOld where placement[p] != nil { kids.formUnion(page.children.filter { changed[$0] == nil }) }
        var detached: [(UInt32, UInt32)] = []
        var attached: [(UInt32, UInt32, UInt32)] = []
        for c in kids {
            let before = placement[c]
            let now = kidPlacement[c]
            if let before, let now, before.root == now.root {
                placement[c] = now
                continue
            }
            if let before { detached.append((c, before.root)) }
            if let now { attached.append((c, now.root, now.parent)) }
        }
        for (c, root) in detached {
            // Not into changed pages (their old rows are counted as such) nor pages a changed page lists now (they stay).
            try walk(c, parent: 0, skipping: { changed[$0] != nil || kidPlacement[$0] != nil }, read: oldRead) { p, _, page in
                placement[p] = nil
                bounds[p] = nil
                try collect(page, root: root, into: &removed, page: p)
            }
        }
        for (p, _) in parsedOld { placement[p] = nil }
        for (c, _, _) in attached { placement[c] = nil }
        for (p, at) in newPlacement { placement[p] = at }
        // Pages with new content to check against their ancestors' keys.
        var rewritten = Set(newPlacement.keys)
        for (c, root, parent) in attached {
            // Changed pages under it that the placing above did not reach are read as they are now.
            try walk(c, parent: parent, skipping: { newPlacement[$0] != nil }, read: newRead) { p, above, page in
                guard placement[p] == nil, changed[p] != nil || overflowOwner[p] == nil else {
                    throw PageFormatError(p, "is listed by two b-tree pages, or is also an overflow page")
                }
                placement[p] = (root, above)
                rewritten.insert(p)
                try collect(page, root: root, into: &added, page: p)
            }
        }
        for p in parsedOld.keys where placement[p] == nil { bounds[p] = nil }

        // Rows whose stored cell changed: the key of each, and their overflow chains.
        var released: [Owner] = []
        var assigned: [(Owner, BTreePage.Cell)] = []
        for (root, rows) in removed {
            for (key, cell) in rows where added[root]?[key]?.bytes != cell.bytes {
                if let ref = try reference(cell, root: root, read: oldRead, changes: &changes) { changes.rows[root, default: []].insert(ref) }
                released.append(Owner(root: root, cell: key))
            }
        }
        for (root, rows) in added {
            for (key, cell) in rows where removed[root]?[key]?.bytes != cell.bytes {
                if let ref = try reference(cell, root: root, read: newRead, changes: &changes, present: true) { changes.rows[root, default: []].insert(ref) }
                if cell.firstOverflow != 0 { assigned.append((Owner(root: root, cell: key), cell)) }
            }
        }
        // Overflow pages written in place under a row whose cell did not change
        // (SQLite overwrites a same-sized payload in place).
        var rewalk: Set<Owner> = []
        for p in changed.keys {
            if let owner = overflowOwner[p], chains[owner] != nil { rewalk.insert(owner) }
        }
        for owner in released { try release(owner, read: oldRead) }
        var rewalked: [(Owner, Chain)] = []
        for owner in rewalk {
            // Rows whose cell the batch removed were counted above; these kept their cell.
            guard let chain = chains[owner] else { continue }
            switch chain.row {
            case .present(let key)?: changes.rows[owner.root, default: []].insert(.key(key))  // its key before, which may have changed
            case let row?: changes.rows[owner.root, default: []].insert(row)
            case nil: changes.undecided.insert(owner.root)
            }
            try release(owner, read: oldRead)
            rewalked.append((owner, chain))
        }
        for (owner, cell) in assigned {
            try own(owner, try chain(of: cell, root: owner.root, read: newRead, changes: &changes), read: newRead)
        }
        for (owner, old) in rewalked {
            // The key may live in the overflow pages: read it again, and compare the new key too.
            var cell = old.cell
            cell.firstOverflow = old.first
            let chain = try chain(of: cell, root: owner.root, read: newRead, changes: &changes)
            if let row = chain.row { changes.rows[owner.root, default: []].insert(row) } else { changes.undecided.insert(owner.root) }
            try own(owner, chain, read: newRead)
        }
        try checkPointerMaps(changed)
        try checkBounds(rewritten: rewritten, kids: kids, parsedNew: parsedNew, read: newRead)
        return changes
    }

    // MARK: - Placing changed pages

    private typealias Placement = (root: UInt32, parent: UInt32)

    /// Where each changed page and each unchanged page listed by one hangs in
    /// the new state, found top-down from the roots so that pages no root
    /// reaches (free pages, stale copies, cycles among them) are never placed.
    /// Throws when a page would hang in two places.
    private func placeChanged(_ changed: [UInt32: (old: [UInt8]?, new: [UInt8]?)]) throws
        -> (pages: [UInt32: Placement], parsed: [UInt32: BTreePage], kids: [UInt32: Placement])
    {
        var parsed: [UInt32: BTreePage] = [:]
        for (p, c) in changed {
            if let data = c.new, let page = try? BTreePage(data, number: p, usableSize: usableSize) { parsed[p] = page }
        }
        /// The unchanged page at the top of `u`'s unchanged ancestry: a root, or a page hung under a changed page.
        func top(_ u: UInt32) throws -> (page: UInt32, isRoot: Bool)? {
            var u = u
            for _ in 0..<64 {
                guard let at = placement[u] else { return nil }
                if at.parent == 0 { return (u, true) }
                if changed[at.parent] != nil { return (u, false) }
                u = at.parent
            }
            throw PageFormatError(u, "is deeper than 64 levels in a b-tree")
        }
        var pages: [UInt32: Placement] = [:]
        var kids: [UInt32: Placement] = [:]
        // Changed pages that an unchanged page lists, by the unchanged top of that page's ancestry.
        var underKid: [UInt32: [(UInt32, UInt32)]] = [:]
        var queue: [UInt32] = []
        func place(_ p: UInt32, _ at: Placement) throws {
            guard pages.updateValue(at, forKey: p) == nil else { throw PageFormatError(p, "is listed by two b-tree pages") }
            queue.append(p)
        }
        for p in changed.keys {
            if tables[p] != nil {
                try place(p, (p, 0))
            } else if let at = placement[p], at.parent != 0, changed[at.parent] == nil, let t = try top(at.parent) {
                if t.isRoot { try place(p, (t.page, at.parent)) } else { underKid[t.page, default: []].append((p, at.parent)) }
            }
        }
        while let p = queue.popLast() {
            guard let page = parsed[p], let root = pages[p]?.root else { continue }
            for child in page.children {
                guard tables[child] == nil else { throw PageFormatError(child, "is a table's root and also listed as a child of page \(p)") }
                if changed[child] != nil {
                    try place(child, (root, p))
                } else {
                    guard kids.updateValue((root, p), forKey: child) == nil else { throw PageFormatError(child, "is listed by two b-tree pages") }
                    for (q, parent) in underKid[child] ?? [] { try place(q, (root, parent)) }
                }
            }
        }
        // A page listed anew by a changed page must not still hang under an unchanged page.
        func stillHangs(_ u: UInt32) throws -> Bool {
            guard let t = try top(u) else { return false }
            return t.isRoot || kids[t.page] != nil
        }
        for (c, at) in kids {
            if let was = placement[c], was.parent != 0, changed[was.parent] == nil, try stillHangs(was.parent) {
                throw PageFormatError(c, "is listed by page \(at.parent) and still by page \(was.parent)")
            }
        }
        for (p, at) in pages where at.parent != 0 && changed[at.parent] != nil {
            if let was = placement[p], was.parent != 0, changed[was.parent] == nil, try stillHangs(was.parent) {
                throw PageFormatError(p, "is listed by page \(at.parent) and still by page \(was.parent)")
            }
        }
        return (pages, parsed, kids)
    }

    // MARK: - Rows and chains

    private enum CellKey: Hashable {
        case rowid(Int64)
        case bytes([UInt8])
    }

    /// A row's cell in a tree, as the owner of its overflow pages.
    private struct Owner: Hashable {
        var root: UInt32
        var cell: CellKey
    }

    private struct Chain {
        var first: UInt32
        var pages: Int
        /// The row, nil when its key could not be read (its table is then compared whole).
        var row: RowRef?
        /// The cell (its local bytes), to read the key again when the chain is written in place.
        var cell: BTreePage.Cell
    }

    private func chain(of cell: BTreePage.Cell, root: UInt32, read: (UInt32) throws -> [UInt8]?, changes: inout Changes) throws -> Chain {
        let count = BTreePage.overflowPages(payload: cell.payloadSize, local: cell.local.count, usableSize: usableSize)
        let row = try reference(cell, root: root, read: read, changes: &changes, present: true)
        var kept = cell
        kept.local = ArraySlice(Array(cell.local))
        kept.bytes = []
        return Chain(first: cell.firstOverflow, pages: count, row: row, cell: kept)
    }

    /// How the validator names a changed row: by its key (decoded from the
    /// record, or the rowid when that is the key). Nil, with the table marked
    /// undecided, when the record cannot give its key.
    private func reference(_ cell: BTreePage.Cell, root: UInt32, read: (UInt32) throws -> [UInt8]?, changes: inout Changes, present: Bool = false) throws -> RowRef? {
        guard let table = tables[root] else { return nil }
        if table.rowidKey { return .key([.integer(cell.rowid)]) }
        // A row that is there now is read by its rowid; its key then comes from the row.
        if present && !table.withoutRowid { return .rowid(cell.rowid) }
        var record = Array(cell.local)
        if cell.firstOverflow != 0, let last = table.keyFields.max(), !RecordFields.covers(record, count: last + 1) {
            try readChain(first: cell.firstOverflow, payload: cell.payloadSize, local: cell.local.count, read: read) { record.append(contentsOf: $0) }
        }
        // Text with a NUL would be cut short as a bound parameter, and a key
        // SQLite could not have stored is found by no lookup: compare that table whole.
        guard let key = table.key(rowid: cell.rowid, record: record, encoding: encoding),
            !key.contains(where: { if case .text(let s) = $0 { s.utf8.contains(0) } else { false } }), table.isStorable(key)
        else {
            changes.undecided.insert(root)
            return nil
        }
        if table.withoutRowid && key.contains(.null) {
            throw PageFormatError(0, "a row of \(table.name) (WITHOUT ROWID) has NULL in its primary key")
        }
        return present && table.withoutRowid ? .present(key) : .key(key)
    }

    private func readChain(first: UInt32, payload: Int, local: Int, read: (UInt32) throws -> [UInt8]?, _ body: (ArraySlice<UInt8>) throws -> Void) throws {
        var page = first
        var left = payload - local
        let count = BTreePage.overflowPages(payload: payload, local: local, usableSize: usableSize)
        for i in 0..<count {
            guard page != 0, let data = try read(page), data.count >= usableSize else {
                throw PageFormatError(page, "is missing from an overflow chain (\(i + 1) of \(count))")
            }
            let n = min(left, usableSize - 4)
            try body(data[4..<(4 + n)])
            left -= n
            page = BTreePage.uint32(data, 0)
        }
    }

    private func chainPages(_ chain: Chain, read: (UInt32) throws -> [UInt8]?) throws -> [UInt32] {
        var pages: [UInt32] = []
        var page = chain.first
        for i in 0..<chain.pages {
            guard page != 0, let data = try read(page), data.count >= 4 else {
                throw PageFormatError(page, "is missing from an overflow chain (\(i + 1) of \(chain.pages))")
            }
            pages.append(page)
            page = BTreePage.uint32(data, 0)
        }
        return pages
    }

    private func release(_ owner: Owner, read: (UInt32) throws -> [UInt8]?) throws {
        guard let chain = chains.removeValue(forKey: owner) else { return }
        for page in try chainPages(chain, read: read) where overflowOwner[page] == owner {
            overflowOwner[page] = nil
            overflowNext[page] = nil
        }
    }

    private func own(_ owner: Owner, _ chain: Chain, read: (UInt32) throws -> [UInt8]?) throws {
        let pages = try chainPages(chain, read: read)
        for (i, page) in pages.enumerated() {
            guard overflowOwner[page] == nil, placement[page] == nil else {
                throw PageFormatError(page, "is used twice (an overflow page of a row of \(tables[owner.root]?.name ?? "?") that is also another row's or a b-tree page)")
            }
            overflowOwner[page] = owner
            let next = i + 1 < pages.count ? pages[i + 1] : 0
            overflowNext[page] = next
            if next != 0 { try checkPointerMap(after: page, next: next, read: read) }
        }
        chains[owner] = chain
    }

    // MARK: - auto_vacuum's pointer map

    private func mapPage(for p: UInt32, _ m: (perPage: UInt32, pendingPage: UInt32)) -> UInt32 {
        var page = (p - 2) / m.perPage * m.perPage + 2
        if page == m.pendingPage { page += 1 }
        return page
    }

    private func isMapPage(_ p: UInt32) -> Bool {
        guard let m = pointerMap, p >= 2 else { return false }
        return mapPage(for: p, m) == p
    }

    /// The page SQLite tries as the overflow page after `q` without reading `q`
    /// (q + 1, past map pages and the lock-byte page): it takes it when the map
    /// names it as q's next overflow page (SQLite's getOverflowPage).
    private func guess(after q: UInt32) -> UInt32 {
        var g = q + 1
        while isMapPage(g) || g == pointerMap?.pendingPage { g += 1 }
        return g
    }

    /// Refuses a map entry that would send SQLite to another page than the
    /// chain's: it would read a row the validator never compares.
    private func checkPointerMap(after q: UInt32, next: UInt32, read: (UInt32) throws -> [UInt8]?) throws {
        guard let m = pointerMap else { return }
        let g = guess(after: q)
        guard g != next, g >= 3, g <= pageCount else { return }
        let map = mapPage(for: g, m)
        guard let data = try read(map) else { return }
        let at = 5 * Int(g - map - 1)
        guard at + 5 <= min(data.count, usableSize) else { return }
        if data[at] == 4, BTreePage.uint32(data, at + 1) == q {
            throw PageFormatError(g, "is named by the pointer map as the overflow page after \(q), where SQLite would read it instead of page \(next)")
        }
    }

    /// Every changed map page's entries that name a tracked overflow page's next page.
    private func checkPointerMaps(_ changed: [UInt32: (old: [UInt8]?, new: [UInt8]?)]) throws {
        guard pointerMap != nil else { return }
        for (p, c) in changed where isMapPage(p) {
            guard let data = c.new else { continue }
            var at = 0
            while at + 5 <= min(data.count, usableSize) {
                if data[at] == 4 {
                    let q = BTreePage.uint32(data, at + 1)
                    let g = p + 1 + UInt32(at / 5)
                    if let next = overflowNext[q], next != 0, next != g, g <= pageCount, guess(after: q) == g {
                        throw PageFormatError(g, "is named by the pointer map as the overflow page after \(q), where SQLite would read it instead of page \(next)")
                    }
                }
                at += 5
            }
        }
    }

    // MARK: - Whole subtrees

    /// Visits `top` (hung under `parent`) and every page under it with its
    /// parent, except pages in `skipping` (they are accounted for as changed pages).
    private func walk(
        _ top: UInt32, parent: UInt32, skipping: (UInt32) -> Bool, read: (UInt32) throws -> [UInt8]?,
        _ visit: (UInt32, UInt32, BTreePage) throws -> Void
    ) throws {
        var stack = [(top, parent)]
        var seen: Set<UInt32> = []
        while let (p, above) = stack.popLast() {
            guard seen.insert(p).inserted else { throw PageFormatError(p, "is listed twice in one b-tree") }
            guard let data = try read(p) else { throw PageFormatError(p, "is listed by a b-tree page but is past the end of the database") }
            let page = try BTreePage(data, number: p, usableSize: usableSize)
            try visit(p, above, page)
            for child in page.children where !skipping(child) { stack.append((child, p)) }
        }
    }

    /// Hangs the tree at `root` (used when building from scratch).
    private func attach(root: UInt32, read: (UInt32) throws -> [UInt8]?, changes: inout Changes) throws {
        guard let table = tables[root] else { return }
        try walk(root, parent: 0, skipping: { _ in false }, read: read) { p, above, page in
            guard placement[p] == nil else { throw PageFormatError(p, "is listed by two b-tree pages") }
            guard page.kind.isTable != table.withoutRowid else {
                throw PageFormatError(p, "is a \(page.kind.isTable ? "table" : "index") page in \(table.name)'s b-tree")
            }
            placement[p] = (root, above)
            if page.kind.isTable {
                // Parents are visited first: their keys bound this page's.
                let b = above == 0 ? Bounds() : (bounds[p] ?? Bounds())
                bounds[p] = b
                try check(page, number: p, within: b)
                for (i, child) in page.children.enumerated() { bounds[child] = b.child(i, of: page) }
            }
            for cell in page.cells where cell.firstOverflow != 0 {
                let key: CellKey = page.kind.isTable ? .rowid(cell.rowid) : .bytes(Array(cell.bytes))
                try own(Owner(root: root, cell: key), try chain(of: cell, root: root, read: read, changes: &changes), read: read)
            }
        }
    }

    // MARK: - Keys where lookups find them

    private func check(_ page: BTreePage, number: UInt32, within b: Bounds) throws {
        let keys = page.kind == .tableLeaf ? page.cells.map(\.rowid) : page.keys
        guard let first = keys.first, let last = keys.last else { return }
        guard b.holds(first), b.holds(last) else {
            throw PageFormatError(number, "holds rowids \(first)...\(last) outside the range its parent pages give it (\(b.lower.map(String.init) ?? "-inf") < rowid <= \(b.upper.map(String.init) ?? "+inf")): lookups would not find them")
        }
    }

    /// Checks the rowids of every rewritten table page against its ancestors'
    /// keys, and of every page whose range moved (only pages along the edges
    /// of a rewritten interior page can move, so this follows the batch).
    private func checkBounds(rewritten: Set<UInt32>, kids: Set<UInt32>, parsedNew: [UInt32: BTreePage], read: (UInt32) throws -> [UInt8]?) throws {
        var parsed = parsedNew
        func page(_ p: UInt32) throws -> BTreePage {
            if let known = parsed[p] { return known }
            guard let data = try read(p) else { throw PageFormatError(p, "is listed by a b-tree page but is past the end of the database") }
            let page = try BTreePage(data, number: p, usableSize: usableSize)
            parsed[p] = page
            return page
        }
        var settled: Set<UInt32> = []
        // Pages whose range this pass changed: their children's ranges are read from them again.
        var moved: Set<UInt32> = []
        func settle(_ p: UInt32) throws {
            guard settled.insert(p).inserted, let at = placement[p], let table = tables[at.root], !table.withoutRowid else { return }
            var b = Bounds()
            if at.parent != 0 {
                let parentMoved = rewritten.contains(at.parent) || kids.contains(at.parent) || moved.contains(at.parent)
                if parentMoved { try settle(at.parent) }
                if !parentMoved, let known = bounds[p] {
                    // Its parent and the parent's range are as they were: so is its range.
                    b = known
                } else {
                    let parent = try page(at.parent)
                    guard let i = parent.children.firstIndex(of: p) else { throw PageFormatError(p, "is not listed by its parent page \(at.parent)") }
                    b = (bounds[at.parent] ?? Bounds()).child(i, of: parent)
                }
            }
            guard rewritten.contains(p) || bounds[p] != b else { return }
            if bounds[p] != b { moved.insert(p) }
            bounds[p] = b
            let content = try page(p)
            try check(content, number: p, within: b)
            for (i, child) in content.children.enumerated() where bounds[child] != b.child(i, of: content) || rewritten.contains(child) {
                // Reached from here, its parent counts as moved (its range comes from this page's keys).
                moved.insert(p)
                try settle(child)
            }
        }
        for p in rewritten.union(kids).sorted() { try settle(p) }
    }
}
