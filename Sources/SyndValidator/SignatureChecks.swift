import Dispatch
import Synchronization
import SyndClient

/// Checks batch signatures on a thread of its own, in order, while the
/// validator applies and compares the batches (an Ed25519 check costs about
/// as much as the rest of a small batch's work). The validator reports no
/// success before `wait()` says every signature so far was good (before any
/// verdict, and when a following stream goes idle), and a bad one fails
/// validation at its own version.
final class SignatureChecks: Sendable {
    private let key: Ed25519PublicKey?
    private let queue = DispatchQueue(label: "synd.validator.signatures")
    /// Bounds how far the checks may fall behind (each holds a hash and a signature).
    private let room = DispatchSemaphore(value: 4096)
    private let failure = Mutex<ValidationFailure?>(nil)

    init(publicKey: [UInt8]) {
        key = Ed25519PublicKey(raw: publicKey)
    }

    /// Queues the check of batch `version`'s signature over its hash.
    func check(version: UInt64, hash: [UInt8], signature: [UInt8]) {
        room.wait()
        queue.async { [self] in
            defer { room.signal() }
            guard failure.withLock({ $0 == nil }) else { return }
            if key?.isValidSignature(signature, of: hash) != true {
                failure.withLock { $0 = ValidationFailure(version: version, reason: "signature is not valid for the sequencer's key") }
            }
        }
    }

    /// The first bad signature found so far, if any.
    var firstFailure: ValidationFailure? { failure.withLock { $0 } }

    /// Waits for every queued check; throws the first bad signature.
    func wait() throws(ValidationFailure) {
        queue.sync {}
        if let failure = firstFailure { throw failure }
    }
}
