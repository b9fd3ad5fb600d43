/// A SHA-256 implementation the seal layout can use: swift-crypto on the
/// sequencer and in validators, OpenSSL in the VFS (which keeps Foundation out).
public protocol SealHasher {
    init()
    mutating func update(_ bytes: UnsafeRawBufferPointer)
    /// The digest of everything given so far (once).
    mutating func finish() -> [UInt8]
}

extension SealHasher {
    mutating func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { update($0) } }
}

/// What a batch's seal covers, byte for byte, as proto/ documents it (the
/// `Batch` message): one definition for every side that seals or checks.
public enum SealLayout {
    public static let genesis = [UInt8](repeating: 0, count: 32)

    public static func pagesHash<H: SealHasher>(_ pages: [Page], _: H.Type) -> [UInt8] {
        var h = H()
        for page in pages.sorted(by: { $0.number < $1.number }) {
            h.update(be32(page.number))
            h.update(page.data)
        }
        return h.finish()
    }

    public static func changesetHash<H: SealHasher>(_ changeset: [UInt8], _: H.Type) -> [UInt8] {
        var h = H()
        h.update(changeset)
        return h.finish()
    }

    public static func schemaHash<H: SealHasher>(changed: Bool, schema: [SchemaObject], unaudited: [String], _: H.Type) -> [UInt8] {
        var h = H()
        h.update([changed ? 1 : 0])
        h.update(be32(UInt32(truncatingIfNeeded: schema.count)))
        for o in schema {
            for s in [o.type, o.name, o.tableName, o.sql] { h.update(prefixed(s)) }
        }
        h.update(be32(UInt32(truncatingIfNeeded: unaudited.count)))
        for t in unaudited { h.update(prefixed(t)) }
        return h.finish()
    }

    /// The hash the signature covers.
    public static func hash<H: SealHasher>(of b: Batch, _: H.Type) -> [UInt8] {
        var h = H()
        h.update(Array("synddb-batch-v1".utf8))
        h.update(prefixed(b.database))
        h.update(be64(b.version))
        h.update(be64(b.committedAtMs))
        h.update(be32(b.pageSize))
        h.update(be32(b.pageCount))
        h.update(b.previousHash)
        h.update(b.pagesHash)
        h.update(b.changesetHash)
        h.update(b.schemaHash)
        return h.finish()
    }

    /// Why `b` does not verify as version `expectedVersion` after a batch
    /// whose hash is `previousHash`, or nil when it does. `isValid(signature, hash)`
    /// checks the Ed25519 signature with the sequencer's key.
    public static func problem<H: SealHasher>(
        with b: Batch, expectedVersion: UInt64, previousHash: [UInt8], _: H.Type,
        isValid: ([UInt8], [UInt8]) -> Bool
    ) -> String? {
        if b.version != expectedVersion {
            return "expected version \(expectedVersion) but the stream sent version \(b.version) (a batch is missing or out of order)"
        }
        if b.previousHash != previousHash { return "previous_hash does not match the hash of version \(expectedVersion - 1): the chain is broken" }
        if pagesHash(b.pages, H.self) != b.pagesHash { return "page images do not match pages_hash" }
        if changesetHash(b.changeset, H.self) != b.changesetHash { return "changeset does not match changeset_hash" }
        if schemaHash(changed: b.schemaChanged, schema: b.schema, unaudited: b.unauditedTables, H.self) != b.schemaHash {
            return "schema does not match schema_hash"
        }
        if hash(of: b, H.self) != b.hash { return "batch hash does not match its contents" }
        if !isValid(b.signature, b.hash) { return "signature is not valid for the sequencer's key" }
        return nil
    }

    /// The hash a snapshot's signature covers (its last part, `Batch.snapshotLast`):
    /// the database at `version`, anchored on that batch's hash.
    public static func snapshotHash<H: SealHasher>(of b: Batch, _: H.Type) -> [UInt8] {
        var h = H()
        h.update(Array("synddb-snapshot-v1".utf8))
        h.update(prefixed(b.database))
        h.update(be64(b.version))
        h.update(be64(b.committedAtMs))
        h.update(be32(b.pageSize))
        h.update(be32(b.pageCount))
        h.update(b.hash)
        h.update(b.pagesHash)
        return h.finish()
    }

    /// Hashes a snapshot's pages as they stream in, laid out as `pagesHash` lays
    /// out a batch's; refuses pages out of order or with gaps.
    public struct SnapshotPages<H: SealHasher> {
        private var hasher = H()
        public private(set) var next: UInt32 = 1
        public init() {}
        /// False when `page` is not the next page number.
        public mutating func add(_ page: Page) -> Bool {
            guard page.number == next else { return false }
            hasher.update(be32(page.number))
            hasher.update(page.data)
            next += 1
            return true
        }
        public mutating func finish() -> [UInt8] { hasher.finish() }
    }

    static func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)] }
    static func be64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8((v >> (56 - 8 * UInt64($0))) & 0xFF) } }
    static func prefixed(_ s: String) -> [UInt8] { be32(UInt32(s.utf8.count)) + Array(s.utf8) }
}
