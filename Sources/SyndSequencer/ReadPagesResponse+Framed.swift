import NIOCore
import SyndProtocol

extension ReadPagesResponse {
    /// This response as one gRPC-framed message (5-byte prefix, then the
    /// protobuf encoding `serializedBytes()` gives), written straight into a
    /// buffer of its exact size: each page's bytes are copied once, instead of
    /// into a page message, the response, then the frame (a read-ahead answer
    /// is megabytes).
    package func framed(allocator: ByteBufferAllocator) -> ByteBuffer {
        var size = Self.varintFieldSize(version) + Self.varintFieldSize(UInt64(pageSize)) + Self.varintFieldSize(UInt64(pageCount))
        for page in pages {
            let inner = Self.innerSize(page)
            size += 1 + ProtoWriter.varintSize(UInt64(inner)) + inner
        }
        var buffer = allocator.buffer(capacity: 5 + size)
        buffer.writeInteger(UInt8(0))
        buffer.writeInteger(UInt32(truncatingIfNeeded: size))
        Self.writeVarintField(1, version, to: &buffer)
        Self.writeVarintField(2, UInt64(pageSize), to: &buffer)
        Self.writeVarintField(3, UInt64(pageCount), to: &buffer)
        for page in pages {
            Self.writeVarint(4 << 3 | 2, to: &buffer)
            Self.writeVarint(UInt64(Self.innerSize(page)), to: &buffer)
            Self.writeVarintField(1, UInt64(page.number), to: &buffer)
            if !page.data.isEmpty {
                Self.writeVarint(2 << 3 | 2, to: &buffer)
                Self.writeVarint(UInt64(page.data.count), to: &buffer)
                buffer.writeBytes(page.data)
            }
            Self.writeVarintField(3, UInt64(page.checksum), to: &buffer)
        }
        return buffer
    }

    private static func innerSize(_ page: Page) -> Int {
        Page.encodedSize(number: page.number, dataCount: page.data.count, checksum: page.checksum)
    }

    /// A varint field of a one-byte tag (field numbers below 16), or nothing for 0.
    private static func varintFieldSize(_ value: UInt64) -> Int {
        value == 0 ? 0 : 1 + ProtoWriter.varintSize(value)
    }

    private static func writeVarintField(_ field: UInt64, _ value: UInt64, to buffer: inout ByteBuffer) {
        guard value != 0 else { return }
        writeVarint(field << 3, to: &buffer)
        writeVarint(value, to: &buffer)
    }

    private static func writeVarint(_ value: UInt64, to buffer: inout ByteBuffer) {
        var v = value
        while v >= 0x80 {
            buffer.writeInteger(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        buffer.writeInteger(UInt8(v))
    }
}
