import Foundation
import SyndClient
import SyndLedger
import SyndProtocol
import Testing

/// The VFS's batch check (OpenSSL) agrees with the sequencer's seal
/// (swift-crypto): what one seals the other accepts, and each kind of
/// tampering is refused, named.
@Suite struct BatchVerifierTests {
    let dir = TemporaryDirectory()

    func sealed(_ key: SigningKey, version: UInt64, previous: [UInt8]) throws -> Batch {
        var b = Batch()
        b.database = "verify"
        b.version = version
        b.committedAtMs = 1_795_428_930_250 + version
        b.pageSize = 512
        b.pageCount = 2
        b.pages = [Page(number: 2, data: [UInt8](repeating: UInt8(version), count: 512)), Page(number: 1, data: [UInt8](repeating: 7, count: 512))]
        b.changeset = [1, 2, 3]
        b.schemaChanged = version == 1
        b.schema = [SchemaObject(type: "table", name: "t", tableName: "t", sql: "CREATE TABLE t(x)")]
        try BatchSeal.seal(&b, previousHash: previous, key: key)
        return b
    }

    @Test func whatTheSequencerSealsVerifiesAndTamperingIsRefused() throws {
        let key = try SigningKey(path: dir.path + "/k.ed25519")
        let verifier = BatchVerifier(publicKey: key.publicKey)
        let first = try sealed(key, version: 1, previous: SealLayout.genesis)
        let second = try sealed(key, version: 2, previous: first.hash)
        #expect(verifier.problem(with: first, expectedVersion: 1, previousHash: SealLayout.genesis) == nil)
        #expect(verifier.problem(with: second, expectedVersion: 2, previousHash: first.hash) == nil)

        var page = second
        page.pages[0].data[100] ^= 1
        #expect(verifier.problem(with: page, expectedVersion: 2, previousHash: first.hash)?.contains("pages_hash") == true)
        var resealed = page
        resealed.pagesHash = BatchSeal.pagesHash(resealed.pages)
        resealed.hash = BatchSeal.hash(of: resealed)
        #expect(verifier.problem(with: resealed, expectedVersion: 2, previousHash: first.hash)?.contains("signature") == true,
                "hashes recomputed without the key: the signature gives it away")
        var changeset = second
        changeset.changeset = [9]
        #expect(verifier.problem(with: changeset, expectedVersion: 2, previousHash: first.hash)?.contains("changeset_hash") == true)
        var time = second
        time.committedAtMs += 1
        #expect(verifier.problem(with: time, expectedVersion: 2, previousHash: first.hash)?.contains("batch hash") == true)
        #expect(verifier.problem(with: second, expectedVersion: 2, previousHash: SealLayout.genesis)?.contains("chain is broken") == true)
        #expect(verifier.problem(with: second, expectedVersion: 3, previousHash: first.hash)?.contains("expected version 3") == true)
        let other = try SigningKey(path: dir.path + "/other.ed25519")
        #expect(BatchVerifier(publicKey: other.publicKey).problem(with: second, expectedVersion: 2, previousHash: first.hash)?.contains("signature") == true)
        #expect(BatchVerifier(publicKey: [1, 2]).problem(with: second, expectedVersion: 2, previousHash: first.hash) != nil)
    }
}
