import SyndProtocol

/// Stores written before the log (a `store.sqlite` file in the data folder).
enum LegacyStoreImport {
    /// Refuses, with what to do: the log cannot yet read that format.
    static func run(from path: String, into logDirectory: String) throws(SequencerError) -> [String] {
        throw SequencerError(.failedPrecondition, """
            \(path) was written by an earlier SyndDB sequencer, which kept one SQLite file; this one keeps a log \
            (\(logDirectory)). Serve that folder with the earlier sequencer, or start this one with a new --data folder
            """)
    }
}
