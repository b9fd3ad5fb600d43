import CCRC32C

/// CRC-32C (Castagnoli), the page checksum of the protocol: the CPU's crc32
/// instruction where it has one, a table elsewhere.
public enum CRC32C {
    private static let table: [UInt32] = (0..<256).map { i -> UInt32 in
        var c = UInt32(i)
        for _ in 0..<8 { c = c & 1 != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
        return c
    }

    public static func checksum<C: Collection>(_ bytes: C) -> UInt32 where C.Element == UInt8 {
        let table = self.table
        var crc: UInt32 = 0xFFFF_FFFF
        for b in bytes {
            crc = table[Int((crc ^ UInt32(b)) & 0xFF)] ^ (crc >> 8)
        }
        return crc ^ 0xFFFF_FFFF
    }

    public static func checksum(_ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBufferPointer { checksum(UnsafeRawBufferPointer($0)) }
    }

    public static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var ok: Int32 = 0
        if let base = bytes.baseAddress {
            let crc = synd_crc32c_hardware(base.assumingMemoryBound(to: UInt8.self), bytes.count, &ok)
            if ok != 0 { return crc }
        }
        return software(bytes)
    }

    /// The checksum of bytes that follow those whose checksum is `previous`:
    /// the checksum of both together, so a record in parts needs no copy.
    public static func checksum(_ bytes: [UInt8], continuing previous: UInt32) -> UInt32 {
        bytes.withUnsafeBytes { b in
            var ok: Int32 = 0
            if let base = b.baseAddress {
                let crc = synd_crc32c_hardware_continue(previous, base.assumingMemoryBound(to: UInt8.self), b.count, &ok)
                if ok != 0 { return crc }
            }
            return software(b, continuing: previous)
        }
    }

    /// The table-driven version (and the reference the tests compare with).
    public static func software(_ bytes: UnsafeRawBufferPointer, continuing previous: UInt32 = 0) -> UInt32 {
        table.withUnsafeBufferPointer { t in
            var crc: UInt32 = previous ^ 0xFFFF_FFFF
            for b in bytes {
                crc = t[Int((crc ^ UInt32(b)) & 0xFF)] ^ (crc >> 8)
            }
            return crc ^ 0xFFFF_FFFF
        }
    }
}
