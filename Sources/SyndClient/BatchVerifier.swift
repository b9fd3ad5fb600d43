import CNGHTTP2
import SyndProtocol

/// Checks sealed batches as a validator does (signature, hash chain, page,
/// changeset and schema hashes), with OpenSSL's SHA-256 and Ed25519, so the
/// VFS can check what it applies without swift-crypto and Foundation.
public struct BatchVerifier: Sendable {
    /// The sequencer's raw 32-byte Ed25519 public key.
    public let publicKey: [UInt8]
    /// The key loaded once (nil when it is not an Ed25519 key).
    private let key: Ed25519PublicKey?

    public init(publicKey: [UInt8]) {
        self.publicKey = publicKey
        key = Ed25519PublicKey(raw: publicKey)
    }

    /// Why `batch` does not verify as version `expectedVersion` after a batch
    /// whose hash is `previousHash`, or nil when it does.
    public func problem(with batch: Batch, expectedVersion: UInt64, previousHash: [UInt8]) -> String? {
        guard let key else { return "the sequencer key is not an Ed25519 key (\(publicKey.count) bytes)" }
        return SealLayout.problem(with: batch, expectedVersion: expectedVersion, previousHash: previousHash, OpenSSLSHA256.self) {
            key.isValidSignature($0, of: $1)
        }
    }
}

/// An Ed25519 public key loaded once into OpenSSL, for checking many
/// signatures: loading the key (decoding its point) costs about as much as a check.
public final class Ed25519PublicKey: @unchecked Sendable {
    // Safe: OpenSSL's EVP_PKEY is immutable once made and may be used from
    // several threads; each check has a context of its own.
    private let pkey: OpaquePointer

    /// Nil when `raw` is not a 32-byte Ed25519 public key.
    public init?(raw: [UInt8]) {
        guard raw.count == 32,
            let pkey = raw.withUnsafeBufferPointer({ EVP_PKEY_new_raw_public_key(synd_evp_pkey_ed25519(), nil, $0.baseAddress, $0.count) })
        else { return nil }
        self.pkey = pkey
    }

    deinit { EVP_PKEY_free(pkey) }

    /// Whether `signature` is this key's signature of `message`.
    public func isValidSignature(_ signature: [UInt8], of message: [UInt8]) -> Bool {
        guard signature.count == 64, let ctx = EVP_MD_CTX_new() else { return false }
        defer { EVP_MD_CTX_free(ctx) }
        guard EVP_DigestVerifyInit(ctx, nil, nil, nil, pkey) == 1 else { return false }
        return signature.withUnsafeBufferPointer { s in
            message.withUnsafeBufferPointer { m in EVP_DigestVerify(ctx, s.baseAddress, s.count, m.baseAddress, m.count) == 1 }
        }
    }
}

/// SHA-256 through OpenSSL's EVP interface.
struct OpenSSLSHA256: SealHasher {
    // A class so the context is freed once; used by one hasher at a time.
    private final class Context {
        let ctx = EVP_MD_CTX_new()
        init() { EVP_DigestInit_ex(ctx, EVP_sha256(), nil) }
        deinit { EVP_MD_CTX_free(ctx) }
    }
    private let context = Context()

    init() {}

    mutating func update(_ bytes: UnsafeRawBufferPointer) {
        if bytes.count > 0 { EVP_DigestUpdate(context.ctx, bytes.baseAddress, bytes.count) }
    }

    mutating func finish() -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        EVP_DigestFinal_ex(context.ctx, &digest, &length)
        return digest
    }
}
