/// A sequencer's Ed25519 public key as people pass it around: 64 hex digits,
/// optionally after `ed25519:` (as `synd sequencer` prints it).
public enum SequencerKeyText {
    /// The 32 key bytes, or nil when `text` is not such a key.
    public static func parse(_ text: String) -> [UInt8]? {
        var hex = Substring(text)
        if hex.hasPrefix("ed25519:") { hex = hex.dropFirst(8) }
        let digits = Array(hex.utf8)
        guard digits.count == 64 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(32)
        var i = 0
        while i < 64 {
            guard let hi = value(digits[i]), let lo = value(digits[i + 1]) else { return nil }
            bytes.append(hi << 4 | lo)
            i += 2
        }
        return bytes
    }

    /// `key` as `ed25519:` and 64 hex digits.
    public static func format(_ key: [UInt8]) -> String {
        "ed25519:" + key.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }

    private static func value(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: c - 0x30
        case 0x61...0x66: c - 0x61 + 10
        case 0x41...0x46: c - 0x41 + 10
        default: nil
        }
    }
}
