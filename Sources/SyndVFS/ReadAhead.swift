/// How many pages a cache miss reads: `initial` for a lone miss, doubling
/// (up to `maximum`) while misses continue where the previous read ended, as
/// a sequential scan's do. A miss elsewhere starts over.
struct ReadAhead {
    let initial: Int
    /// The most pages one read asks for (lowered if the sequencer refuses a read as too large).
    private(set) var maximum: Int
    private var window: Int
    /// The page range the previous miss read (0...0: none).
    private var lastStart: UInt32 = 0
    private var lastEnd: UInt32 = 0

    init(initial: Int, maximum: Int) {
        self.initial = max(1, initial)
        self.maximum = max(self.initial, maximum)
        self.window = self.initial
    }

    /// Pages to read for a miss at `pgno`, at most `limit` (and at least 1).
    /// Whether the last miss continued the previous read (a sequential scan).
    private(set) var isSequential = false

    mutating func window(forMissAt pgno: UInt32, limit: Int) -> Int {
        let sequential = lastEnd > 0 && pgno > lastStart && UInt64(pgno) <= UInt64(lastEnd) + UInt64(initial)
        isSequential = sequential
        window = sequential ? min(window * 2, maximum) : initial
        return max(1, min(window, limit))
    }

    /// Records the range a miss read.
    mutating func fetched(from start: UInt32, through end: UInt32) {
        lastStart = start
        lastEnd = end
    }

    /// The sequencer refused a read of `count` pages as too large: ask for
    /// half as many from now on. False when one page at a time is the floor.
    mutating func serverRefused(_ count: Int) -> Bool {
        guard count > 1 else { return false }
        maximum = max(1, count / 2)
        window = min(window, maximum)
        return true
    }
}
