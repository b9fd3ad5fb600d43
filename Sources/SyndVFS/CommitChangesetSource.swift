import SyndCapture
import SyndClient

/// A large transaction's changeset, read from capture's temporary file as the
/// commit is sent (see `CommitBody`), instead of being loaded into memory.
final class CommitChangesetSource: CommitChangeset {
    private let spilled: SpilledChangeset
    private(set) var failure: String?

    init(_ spilled: SpilledChangeset) {
        self.spilled = spilled
    }

    var count: Int { spilled.count }

    func read(at offset: Int, into buffer: UnsafeMutableRawBufferPointer) -> Bool {
        do throws(CaptureError) {
            try spilled.read(at: offset, into: buffer)
            return true
        } catch {
            failure = error.message
            return false
        }
    }
}
