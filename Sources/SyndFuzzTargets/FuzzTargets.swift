import CSQLite

/// The fuzz targets by name: what `scripts/fuzz.sh` runs, and what
/// FuzzRegressionTests replays (Fuzz/corpus and Fuzz/regressions).
public enum FuzzTargets {
    public struct Target: Sendable {
        public let name: String
        /// Runs one input; traps only where the code under test broke a promise.
        public let run: @Sendable ([UInt8]) -> Void
        /// The seed corpus (Fuzz/corpus/<name>).
        public let seeds: @Sendable () -> [[UInt8]]
    }

    public static let all: [Target] = [
        Target(name: SequencerRequestTarget.name, run: SequencerRequestTarget.run, seeds: { SequencerRequestTarget.seeds }),
        Target(name: ClientResponseTarget.name, run: ClientResponseTarget.run, seeds: { ClientResponseTarget.seeds }),
        Target(name: FramingTarget.name, run: FramingTarget.run, seeds: { FramingTarget.seeds }),
        Target(name: ValidatorBatchTarget.name, run: ValidatorBatchTarget.run, seeds: { ValidatorBatchTarget.seeds }),
    ]

    /// Process-wide limits for a fuzzing process (not for tests, which share
    /// their process): SQLite's memory bounded as `synd validate` bounds it.
    public static func prepareProcess() {
        sqlite3_hard_heap_limit64(512 << 20)
    }

    public static func named(_ name: String) -> Target? { all.first { $0.name == name } }
}
