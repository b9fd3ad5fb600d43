import Foundation
import SyndDB

/// A progress line on standard error, redrawn at most ten times a second, and
/// only when standard error is a terminal (quiet in scripts and logs).
final class TransferProgress {
    private let label: String
    private let unit: String
    private let enabled = isatty(2) != 0
    private var last = ContinuousClock.now - .seconds(1)
    private var drawn = false

    init(_ label: String, unit: String) {
        self.label = label
        self.unit = unit
    }

    /// The callback to hand a transfer, or nil when nothing is shown.
    var callback: ((DatabaseTransfer.Progress) -> Void)? {
        enabled ? { [self] in update($0) } : nil
    }

    private func update(_ p: DatabaseTransfer.Progress) {
        let now = ContinuousClock.now
        guard now - last >= .milliseconds(100) || p.done == p.total else { return }
        last = now
        let fraction = p.total > 0 ? min(1, Double(p.done) / Double(p.total)) : 0
        let width = 30
        let filled = Int(fraction * Double(width))
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        let line = "\r\(label) [\(bar)] \(Int(fraction * 100))%  \(p.done)/\(p.total) \(unit)  \(p.stage)"
        FileHandle.standardError.write(Data((line + "\u{1B}[K").utf8))
        drawn = true
    }

    /// Ends the line, if one was drawn.
    func finish() {
        if drawn { FileHandle.standardError.write(Data("\n".utf8)) }
        drawn = false
    }
}
