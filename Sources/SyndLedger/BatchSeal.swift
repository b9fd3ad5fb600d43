import Crypto
import Foundation
import SyndProtocol

#if canImport(Glibc)
import Glibc
#endif

/// The seal of a batch: the hashes that bind its page images, changeset and
/// schema to its version and to the previous batch, as proto/ documents them.
public enum BatchSeal {
    public static let genesis = SealLayout.genesis

    /// swift-crypto's SHA-256 for `SealLayout`.
    public struct Hasher: SealHasher {
        private var h = SHA256()
        public init() {}
        public mutating func update(_ bytes: UnsafeRawBufferPointer) { h.update(bufferPointer: bytes) }
        public mutating func finish() -> [UInt8] { Array(h.finalize()) }
    }

    public static func pagesHash(_ pages: [Page]) -> [UInt8] { SealLayout.pagesHash(pages, Hasher.self) }

    public static func changesetHash(_ changeset: [UInt8]) -> [UInt8] { SealLayout.changesetHash(changeset, Hasher.self) }

    public static func schemaHash(changed: Bool, schema: [SchemaObject], unaudited: [String]) -> [UInt8] {
        SealLayout.schemaHash(changed: changed, schema: schema, unaudited: unaudited, Hasher.self)
    }

    /// The hash the signature covers.
    public static func hash(of b: Batch) -> [UInt8] { SealLayout.hash(of: b, Hasher.self) }

    /// Fills in the content hashes, the batch hash and the signature.
    public static func seal(_ batch: inout Batch, previousHash: [UInt8], key: SigningKey) throws {
        batch.previousHash = previousHash
        batch.pagesHash = pagesHash(batch.pages)
        batch.changesetHash = changesetHash(batch.changeset)
        batch.schemaHash = schemaHash(changed: batch.schemaChanged, schema: batch.schema, unaudited: batch.unauditedTables)
        batch.hash = hash(of: batch)
        batch.signature = try key.sign(batch.hash)
    }

    /// Signs a snapshot's last part (`hash`, `pagesHash` and the rest already set).
    public static func sealSnapshot(_ last: inout Batch, key: SigningKey) throws {
        last.signature = try key.sign(SealLayout.snapshotHash(of: last, Hasher.self))
    }

    /// Hashes a snapshot's pages as they stream in.
    public typealias SnapshotPages = SealLayout.SnapshotPages<Hasher>

    /// Why a snapshot's last part, whose pages hashed to `pagesHash`, does not verify, or nil.
    public static func snapshotProblem(with last: Batch, pagesHash: [UInt8], publicKey: [UInt8]) -> String? {
        guard let key = try? Curve25519.Signing.PublicKey(rawRepresentation: publicKey) else { return "the sequencer key is not an Ed25519 key" }
        if pagesHash != last.pagesHash { return "the snapshot's page images do not match its pages_hash" }
        if !key.isValidSignature(last.signature, for: SealLayout.snapshotHash(of: last, Hasher.self)) {
            return "the snapshot's signature is not valid for the sequencer's key"
        }
        return nil
    }

    /// `problem(with:...)` but for the signature, which the caller checks elsewhere.
    public static func problem(with b: Batch, expectedVersion: UInt64, previousHash: [UInt8], checkingSignature: Bool) -> String? {
        SealLayout.problem(with: b, expectedVersion: expectedVersion, previousHash: previousHash, Hasher.self) { _, _ in !checkingSignature }
    }

    /// Why `batch` does not verify against the chain so far, or nil when it does.
    public static func problem(with b: Batch, expectedVersion: UInt64, previousHash: [UInt8], publicKey: [UInt8]) -> String? {
        guard let key = try? Curve25519.Signing.PublicKey(rawRepresentation: publicKey) else { return "the sequencer key is not an Ed25519 key" }
        return SealLayout.problem(with: b, expectedVersion: expectedVersion, previousHash: previousHash, Hasher.self) { signature, hash in
            key.isValidSignature(signature, for: hash)
        }
    }
}

/// The sequencer's Ed25519 signing key, kept in its data folder.
///
/// Every batch ever sealed verifies only under this key, so the file is
/// created once, only where no file exists (O_CREAT|O_EXCL, mode 0600 from the
/// start, fsynced with its folder), and never replaced: a file that exists but
/// cannot be read, or is not a 32-byte key, is an error for the operator.
public struct SigningKey: Sendable {
    private let key: Curve25519.Signing.PrivateKey
    /// The key file.
    public let path: String

    public var publicKey: [UInt8] { Array(key.publicKey.rawRepresentation) }

    /// Loads the key file at `path`. Where no file exists, creates one with a
    /// fresh key when `create` is true; otherwise (a store whose history was
    /// signed with a key that is now missing) throws.
    public init(path: String, create: Bool = true) throws {
        self.path = path
        var info = stat()
        if lstat(path, &info) != 0, errno == ENOENT {
            guard create else {
                throw SealError(message: """
                    the sequencer key \(path) is missing, but this store holds batches signed with it; \
                    restore that key file from a backup (a new key would not verify them)
                    """)
            }
            if let created = try Self.create(path) {
                key = created
                return
            }
            // Created by someone else since the check: load theirs.
        }
        key = try Self.load(path)
    }

    public func sign(_ digest: [UInt8]) throws -> [UInt8] {
        Array(try key.signature(for: digest))
    }

    /// True when `signature` is this key's signature of `digest`.
    public func isValidSignature(_ signature: [UInt8], for digest: [UInt8]) -> Bool {
        key.publicKey.isValidSignature(signature, for: digest)
    }

    private static let advice = """
        The sequencer never replaces an existing key (batches signed with it would stop verifying): \
        make the file readable, or restore the original from a backup, then start again.
        """

    /// A new key in a new file, or nil when a file appeared at `path` meanwhile.
    private static func create(_ path: String) throws -> Curve25519.Signing.PrivateKey? {
        // Written whole to a private temporary file, then linked to its name
        // (link never replaces): a crash midway leaves no partial key under
        // the real name that would stop the next start.
        let temporary = "\(path).new-\(getpid())"
        unlink(temporary)
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw SealError(message: "cannot create the sequencer key \(path): \(lastError())")
        }
        defer { unlink(temporary) }
        let key = Curve25519.Signing.PrivateKey()
        let bytes = Array(key.rawRepresentation)
        var failure: String?
        var written = 0
        while written < bytes.count {
            let n = bytes[written...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                failure = "write: \(lastError())"
                break
            }
            written += n
        }
        if failure == nil, fsync(fd) != 0 { failure = "fsync: \(lastError())" }
        if close(fd) != 0, failure == nil { failure = "close: \(lastError())" }
        if let failure { throw SealError(message: "cannot create the sequencer key \(path): \(failure)") }
        guard link(temporary, path) == 0 else {
            if errno == EEXIST { return nil }  // created by someone else meanwhile: load theirs
            throw SealError(message: "cannot create the sequencer key \(path): link: \(lastError())")
        }
        if let failure = syncFolder(of: path) {
            throw SealError(message: "cannot create the sequencer key \(path): \(failure)")
        }
        return key
    }

    private static func load(_ path: String) throws -> Curve25519.Signing.PrivateKey {
        // O_NONBLOCK: a FIFO in the key's place must not hang the start.
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else {
            throw SealError(message: "cannot read the sequencer key \(path): \(lastError()). \(advice)")
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            throw SealError(message: "cannot read the sequencer key \(path): \(lastError()). \(advice)")
        }
        guard info.st_mode & S_IFMT == S_IFREG else {
            let kind = info.st_mode & S_IFMT == S_IFDIR ? "a directory" : "not a regular file"
            throw SealError(message: "the sequencer key \(path) is \(kind). \(advice)")
        }
        var bytes = [UInt8](repeating: 0, count: 33)
        var count = 0
        while count < bytes.count {
            let n = bytes[count...].withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw SealError(message: "cannot read the sequencer key \(path): \(lastError()). \(advice)")
            }
            if n == 0 { break }
            count += n
        }
        guard count == 32 else {
            let size = count > 32 ? "longer than 32 bytes" : "\(count) bytes"
            throw SealError(message: "the sequencer key \(path) is \(size), not a 32-byte Ed25519 private key. \(advice)")
        }
        return try Curve25519.Signing.PrivateKey(rawRepresentation: bytes[0..<32])
    }

    /// fsyncs the folder that holds `path`, so the new entry survives a crash; nil when done.
    private static func syncFolder(of path: String) -> String? {
        let folder = path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) : "."
        let fd = open(folder.isEmpty ? "/" : folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return "open \(folder): \(lastError())" }
        defer { close(fd) }
        return fsync(fd) == 0 ? nil : "fsync \(folder): \(lastError())"
    }

    private static func lastError() -> String { String(cString: strerror(errno)) }
}

public struct SealError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
    public init(message: String) { self.message = message }
}
