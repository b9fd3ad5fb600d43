import Crypto
import Foundation
import SyndProtocol

/// The seal of a batch: the hashes that bind its page images, changeset and
/// schema to its version and to the previous batch, as proto/ documents them.
public enum BatchSeal {
    public static let genesis = [UInt8](repeating: 0, count: 32)

    public static func pagesHash(_ pages: [Page]) -> [UInt8] {
        var h = SHA256()
        for page in pages.sorted(by: { $0.number < $1.number }) {
            h.update(data: be32(page.number))
            h.update(data: page.data)
        }
        return Array(h.finalize())
    }

    public static func changesetHash(_ changeset: [UInt8]) -> [UInt8] {
        Array(SHA256.hash(data: changeset))
    }

    public static func schemaHash(changed: Bool, schema: [SchemaObject], unaudited: [String]) -> [UInt8] {
        var h = SHA256()
        h.update(data: [changed ? 1 : 0])
        h.update(data: be32(UInt32(truncatingIfNeeded: schema.count)))
        for o in schema {
            for s in [o.type, o.name, o.tableName, o.sql] { h.update(data: prefixed(s)) }
        }
        h.update(data: be32(UInt32(truncatingIfNeeded: unaudited.count)))
        for t in unaudited { h.update(data: prefixed(t)) }
        return Array(h.finalize())
    }

    /// The hash the signature covers.
    public static func hash(of b: Batch) -> [UInt8] {
        var h = SHA256()
        h.update(data: Array("synddb-batch-v1".utf8))
        h.update(data: prefixed(b.database))
        h.update(data: be64(b.version))
        h.update(data: be64(b.committedAtMs))
        h.update(data: be32(b.pageSize))
        h.update(data: be32(b.pageCount))
        h.update(data: b.previousHash)
        h.update(data: b.pagesHash)
        h.update(data: b.changesetHash)
        h.update(data: b.schemaHash)
        return Array(h.finalize())
    }

    /// Fills in the content hashes, the batch hash and the signature.
    public static func seal(_ batch: inout Batch, previousHash: [UInt8], key: SigningKey) throws {
        batch.previousHash = previousHash
        batch.pagesHash = pagesHash(batch.pages)
        batch.changesetHash = changesetHash(batch.changeset)
        batch.schemaHash = schemaHash(changed: batch.schemaChanged, schema: batch.schema, unaudited: batch.unauditedTables)
        batch.hash = hash(of: batch)
        batch.signature = try key.sign(batch.hash)
    }

    /// Why `batch` does not verify against the chain so far, or nil when it does.
    public static func problem(with b: Batch, expectedVersion: UInt64, previousHash: [UInt8], publicKey: [UInt8]) -> String? {
        if b.version != expectedVersion {
            return "expected version \(expectedVersion) but the stream sent version \(b.version) (a batch is missing or out of order)"
        }
        if b.previousHash != previousHash { return "previous_hash does not match the hash of version \(expectedVersion - 1): the chain is broken" }
        if pagesHash(b.pages) != b.pagesHash { return "page images do not match pages_hash" }
        if changesetHash(b.changeset) != b.changesetHash { return "changeset does not match changeset_hash" }
        if schemaHash(changed: b.schemaChanged, schema: b.schema, unaudited: b.unauditedTables) != b.schemaHash {
            return "schema does not match schema_hash"
        }
        if hash(of: b) != b.hash { return "batch hash does not match its contents" }
        guard let key = try? Curve25519.Signing.PublicKey(rawRepresentation: publicKey) else { return "the sequencer key is not an Ed25519 key" }
        if !key.isValidSignature(b.signature, for: b.hash) { return "signature is not valid for the sequencer's key" }
        return nil
    }

    static func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)] }
    static func be64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8((v >> (56 - 8 * UInt64($0))) & 0xFF) } }
    static func prefixed(_ s: String) -> [UInt8] { be32(UInt32(s.utf8.count)) + Array(s.utf8) }
}

/// The sequencer's Ed25519 signing key, kept in its data folder (mode 0600).
public struct SigningKey: Sendable {
    private let key: Curve25519.Signing.PrivateKey

    public var publicKey: [UInt8] { Array(key.publicKey.rawRepresentation) }

    /// Loads `path`, or creates it with a fresh key.
    public init(path: String) throws {
        if let data = FileManager.default.contents(atPath: path) {
            key = try Curve25519.Signing.PrivateKey(rawRepresentation: data)
        } else {
            key = Curve25519.Signing.PrivateKey()
            let created = FileManager.default.createFile(
                atPath: path, contents: key.rawRepresentation, attributes: [.posixPermissions: 0o600])
            guard created else { throw SealError(message: "cannot write the sequencer key to \(path)") }
        }
    }

    public func sign(_ digest: [UInt8]) throws -> [UInt8] {
        Array(try key.signature(for: digest))
    }
}

public struct SealError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}
