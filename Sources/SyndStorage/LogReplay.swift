import SyndProtocol

#if canImport(Glibc)
import Glibc
#endif

/// Reads the log back at open: checks every record, keeps whole groups,
/// cuts off a torn tail of the newest segment and refuses damage anywhere else.
struct LogReplay {
    var indexes: [Int64: DatabaseIndex] = [:]
    var segments: [LogSegment] = []
    /// Where the newest segment's intact part ends: the next group goes there.
    var activeSize = 0
    /// The last group's sequence number.
    var groups: UInt64 = 0
    var notes: [String] = []
    /// The pages files that batches refer to, open.
    var pagesFiles: [UInt32: LogSegment] = [:]
    /// The next pages file number to use.
    var nextPagesFile: UInt32 = 1
    /// Per pages file, the segment whose record refers to it.
    var pagesOwners: [UInt32: UInt32] = [:]

    init(directory: String) throws(SequencerError) {
        // A compaction a crash interrupted before its rename: the segment it
        // was rewriting is still whole under its own name.
        for name in try Self.fileNames(in: directory) where name.hasSuffix(LogStore.compactingSuffix) {
            unlink(directory + "/" + name)
            notes.append("removed \(directory)/\(name): a compaction a crash interrupted (the segment it rewrote is intact)")
        }
        let numbers = try Self.segmentNumbers(in: directory)
        // A merged segment covers the numbers after it through some last one;
        // the next segment must follow that. Covered files still there are
        // what a crash left of a merge before removing them.
        let newest = numbers.last
        var expected = numbers.first
        for number in numbers {
            if let e = expected, number < e {
                let path = directory + "/" + LogSegment.fileName(number)
                unlink(path)
                notes.append("removed \(path): a compaction a crash interrupted had merged it into \(segments.last.map(\.path) ?? "an earlier segment")")
                continue
            }
            if let e = expected, number != e {
                throw Self.damage(directory, "segment \(LogSegment.fileName(e)) is missing (the folder has \(LogSegment.fileName(number)) after \(segments.last.map(\.path) ?? "nothing"))")
            }
            let segment = try LogSegment(directory: directory, number: number, create: false)
            segments.append(segment)
            let covers = try replay(segment, isNewest: number == newest, directory: directory)
            expected = max(number, covers ?? number) + 1
        }
        if !numbers.isEmpty { try? syncDirectory(directory) }
        // Pages files no batch refers to were being written when a crash came
        // (their batch was never acknowledged).
        for number in try Self.pagesFileNumbers(in: directory) {
            nextPagesFile = max(nextPagesFile, (number & ~LogSegment.pagesFileBit) + 1)
            guard pagesFiles[number] == nil else { continue }
            let path = directory + "/" + LogSegment.fileName(number)
            unlink(path)
            notes.append("removed \(path): no record refers to it (the pages of a large commit a crash interrupted, never acknowledged, or of old versions a compaction a crash interrupted had just freed)")
        }
    }

    /// Replays one segment; returns the last segment number it covers, if it was merged from several.
    private mutating func replay(_ segment: LogSegment, isNewest: Bool, directory: String) throws(SequencerError) -> UInt32? {
        var covers: UInt32?
        let size = segment.size
        var offset = 0
        var groupStart = 0
        var group: [(update: IndexUpdate, offset: Int, length: Int)] = []
        var problem: String?
        while offset < size {
            guard size - offset >= LogRecord.headerSize else {
                problem = "a partial record header"
                break
            }
            let headerBytes = try segment.read(LogRecord.headerSize, at: offset)
            guard let header = headerBytes.withUnsafeBytes({ LogRecord.header($0) }) else {
                problem = "a damaged record header"
                break
            }
            let length = LogRecord.headerSize + header.payloadLength
            guard header.payloadLength <= size - offset - LogRecord.headerSize else {
                problem = "a record that runs past the end of the file"
                break
            }
            let payload = try segment.read(header.payloadLength, at: offset + LogRecord.headerSize)
            guard CRC32C.checksum(payload) == header.payloadChecksum else {
                problem = "a record that fails its checksum"
                break
            }
            do {
                if header.kind == .groupEnd {
                    groups = try payload.withUnsafeBytes { raw throws(LogPayloadReader.Overrun) in
                        var r = LogPayloadReader(raw)
                        return try r.u64()
                    }
                    for g in group { try apply(g.update, segment: segment.number, offset: g.offset, length: g.length, directory: directory) }
                    group = []
                    groupStart = offset + length
                } else if header.kind == .covers {
                    covers = try payload.withUnsafeBytes { raw throws(LogPayloadReader.Overrun) in
                        var r = LogPayloadReader(raw)
                        return try r.u32()
                    }
                    guard isNewest == false, covers! > segment.number else { throw LogPayloadReader.Overrun() }
                } else {
                    let update = try payload.withUnsafeBytes { raw throws(LogPayloadReader.Overrun) in
                        try Self.update(kind: header.kind, payload: raw)
                    }
                    group.append((update, offset, length))
                }
            } catch is LogPayloadReader.Overrun {
                problem = "a malformed record"
                break
            } catch let error as SequencerError {
                throw Self.damage(directory, "\(segment.path) at offset \(offset): \(error.message)")
            } catch {
                throw Self.damage(directory, "\(segment.path) at offset \(offset): \(error)")
            }
            offset += length
        }
        guard problem != nil || !group.isEmpty else {
            if isNewest { activeSize = size }
            return covers
        }
        if group.isEmpty, problem != nil, try segment.isZero(from: offset) {
            // The zeros of an allocated end (see `LogSegment.allocate`): where the log ends.
            if isNewest { activeSize = offset }
            return covers
        }
        let reason = problem.map { "\($0) at offset \(offset)" } ?? "records without a group end after offset \(groupStart)"
        guard isNewest else {
            throw Self.damage(directory, "\(segment.path) has \(reason), but later segments follow it")
        }
        if problem != nil, let later = try Self.intactGroupEnd(in: segment, after: offset, size: size) {
            throw Self.damage(directory, "\(segment.path) has \(reason), but an intact group end follows at offset \(later): acknowledged commits may lie beyond the damage")
        }
        // A crash during the last group's write: none of it was acknowledged.
        try segment.truncate(to: groupStart)
        activeSize = groupStart
        notes.append("cut off a torn tail of \(size - groupStart) bytes at offset \(groupStart) of \(segment.path) (\(reason)): the last write before a crash, never acknowledged")
        return covers
    }

    private mutating func apply(_ update: IndexUpdate, segment: UInt32, offset: Int, length: Int, directory: String) throws(SequencerError) {
        switch update {
        case .create(let id, let name):
            guard indexes[id] == nil else { throw SequencerError(.dataLoss, "database id \(id) is created twice") }
            indexes[id] = DatabaseIndex(id: id, name: name)
        case .batch(let id, let version, let txnID, let pageSize, let pageCount, let committedAtMs, let pages, let drop, let external):
            guard let index = indexes[id] else { throw SequencerError(.dataLoss, "a batch of database id \(id), which was never created") }
            if let external {
                if pagesFiles[external] == nil {
                    pagesFiles[external] = try LogSegment(directory: directory, number: external, create: false)
                }
                let end = pages.map { $0.position + Int($0.length) }.max() ?? 0
                guard pagesFiles[external]!.size >= end else {
                    throw SequencerError(.dataLoss, "batch \(version) of '\(index.name)' has pages up to byte \(end) of \(LogSegment.fileName(external)), which is shorter")
                }
            }
            // A drop may follow a gap: stores imported from the earlier format kept no batches before a drop.
            guard version == index.version + 1 || (drop && version > index.version) else {
                throw SequencerError(.dataLoss, "batch \(version) of '\(index.name)' follows version \(index.version)")
            }
            indexes[id]!.applyBatch(version: version, txnID: txnID, pageSize: pageSize, pageCount: pageCount, committedAtMs: committedAtMs, pages: pages, drop: drop,
                                    external: external, segment: segment, offset: offset, length: length)
            if let external { pagesOwners[external] = segment }
        case .compacted(let id, let first, let last, let pageSize, let pageCount, let images):
            guard let index = indexes[id] else { throw SequencerError(.dataLoss, "a compacted record of database id \(id), which was never created") }
            guard first == index.version + 1, last >= first else {
                throw SequencerError(.dataLoss, "compacted versions \(first)...\(last) of '\(index.name)' follow version \(index.version)")
            }
            for file in Set(images.compactMap(\.external)) {
                if pagesFiles[file] == nil {
                    pagesFiles[file] = try LogSegment(directory: directory, number: file, create: false)
                }
                let end = images.filter { $0.external == file }.map { $0.position + Int($0.length) }.max() ?? 0
                guard pagesFiles[file]!.size >= end else {
                    throw SequencerError(.dataLoss, "compacted versions of '\(index.name)' have pages up to byte \(end) of \(LogSegment.fileName(file)), which is shorter")
                }
                pagesOwners[file] = segment
            }
            indexes[id]!.applyCompacted(last: last, pageSize: pageSize, pageCount: pageCount, images: images, segment: segment, offset: offset)
        case .epochCeiling(let id, let ceiling):
            guard indexes[id] != nil else { throw SequencerError(.dataLoss, "an epoch record of database id \(id), which was never created") }
            indexes[id]!.epochCeiling = max(indexes[id]!.epochCeiling, ceiling)
        case .prune(let id, let keepFrom):
            guard indexes[id] != nil else { throw SequencerError(.dataLoss, "a prune record of database id \(id), which was never created") }
            indexes[id]!.prune(keepFrom: keepFrom)
        }
    }

    /// What a record of `kind` changes in the index, with page positions from the record's first byte.
    static func update(kind: LogRecord.Kind, payload raw: UnsafeRawBufferPointer) throws(LogPayloadReader.Overrun) -> IndexUpdate {
        var r = LogPayloadReader(raw)
        let id = Int64(bitPattern: try r.u64())
        switch kind {
        case .create:
            return .create(database: id, name: String(decoding: try r.take(r.remaining), as: UTF8.self))
        case .batch, .drop:
            let (seal, txnID, pages) = try decodeBatchPayload(&r, keepPages: false)
            return .batch(database: id, version: seal.version, txnID: txnID, pageSize: seal.pageSize, pageCount: seal.pageCount, committedAtMs: seal.committedAtMs,
                          pages: pages.map { ($0.number, $0.position, $0.checksum, $0.length) }, drop: kind == .drop)
        case .externalBatch:
            let (seal, txnID, file, pages) = try decodeExternalPayload(&r)
            return .batch(database: id, version: seal.version, txnID: txnID, pageSize: seal.pageSize, pageCount: seal.pageCount, committedAtMs: seal.committedAtMs,
                          pages: pages.map { ($0.number, $0.offset, $0.checksum, $0.length) }, drop: false, external: file)
        case .epochCeiling:
            return .epochCeiling(database: id, ceiling: try r.u64())
        case .prune:
            return .prune(database: id, keepFrom: try r.u64())
        case .compacted:
            let first = try r.u64()
            let last = try r.u64()
            let pageSize = try r.u32()
            let pageCount = try r.u32()
            let count = Int(try r.u32())
            guard count <= r.remaining / 24 else { throw LogPayloadReader.Overrun() }
            var images: [CompactedImage] = []
            images.reserveCapacity(count)
            for _ in 0..<count {
                let number = try r.u32()
                let version = try r.u64()
                let checksum = try r.u32()
                let length = try r.u32()
                let place = try r.u32()
                guard version >= first, version <= last else { throw LogPayloadReader.Overrun() }
                if place == 0 {
                    let position = LogRecord.headerSize + r.offset
                    _ = try r.take(Int(length))
                    images.append(CompactedImage(number: number, version: version, position: position, checksum: checksum, length: length))
                } else {
                    guard place & LogSegment.pagesFileBit != 0 else { throw LogPayloadReader.Overrun() }
                    let offset = try r.u64()
                    guard offset < 1 << 48 else { throw LogPayloadReader.Overrun() }
                    images.append(CompactedImage(number: number, version: version, position: Int(offset), checksum: checksum, length: length, external: place))
                }
            }
            return .compacted(database: id, first: first, last: last, pageSize: pageSize, pageCount: pageCount, images: images)
        case .groupEnd, .covers:
            throw LogPayloadReader.Overrun()
        }
    }

    /// What every batch-like payload holds after its database id: version, commit id, seal.
    private static func readBatchStart(_ r: inout LogPayloadReader) throws(LogPayloadReader.Overrun) -> (Batch, [UInt8]) {
        let version = try r.u64()
        let txnID = try r.bytes(Int(try r.u16()))
        let sealBytes = try r.bytes(Int(try r.u32()))
        guard let seal = try? Batch(serializedBytes: sealBytes), seal.version == version else { throw LogPayloadReader.Overrun() }
        return (seal, txnID)
    }

    /// A batch or drop payload after its database id: the seal, the commit id
    /// and the pages (their bytes only if `keepPages`).
    private static func decodeBatchPayload(_ r: inout LogPayloadReader, keepPages: Bool) throws(LogPayloadReader.Overrun)
        -> (Batch, [UInt8], [(number: UInt32, position: Int, checksum: UInt32, length: UInt32, data: [UInt8])])
    {
        var (seal, txnID) = try readBatchStart(&r)
        let count = Int(try r.u32())
        var pages: [(number: UInt32, position: Int, checksum: UInt32, length: UInt32, data: [UInt8])] = []
        pages.reserveCapacity(count)
        for _ in 0..<count {
            let number = try r.u32()
            let checksum = try r.u32()
            let length = try r.u32()
            let position = LogRecord.headerSize + r.offset
            var data: [UInt8] = []
            if keepPages { data = try r.bytes(Int(length)) } else { _ = try r.take(Int(length)) }
            pages.append((number, position, checksum, length, data))
        }
        seal.pages = []
        return (seal, txnID, pages)
    }

    /// An external batch payload after its database id: the seal, the commit
    /// id, its pages file and where each page lies in it.
    static func decodeExternalPayload(_ r: inout LogPayloadReader) throws(LogPayloadReader.Overrun)
        -> (Batch, [UInt8], UInt32, [(number: UInt32, checksum: UInt32, length: UInt32, offset: Int)])
    {
        let (seal, txnID) = try readBatchStart(&r)
        let file = try r.u32()
        guard file & LogSegment.pagesFileBit != 0 else { throw LogPayloadReader.Overrun() }
        let count = Int(try r.u32())
        var pages: [(number: UInt32, checksum: UInt32, length: UInt32, offset: Int)] = []
        pages.reserveCapacity(count)
        for _ in 0..<count {
            let number = try r.u32()
            let checksum = try r.u32()
            let length = try r.u32()
            let offset = try r.u64()
            guard offset < 1 << 48 else { throw LogPayloadReader.Overrun() }
            pages.append((number, checksum, length, Int(offset)))
        }
        return (seal, txnID, file, pages)
    }

    /// The payload of a whole record (header included) of one of `kinds`,
    /// after checking its header and checksum.
    private static func checkedPayload(_ raw: UnsafeRawBufferPointer, kinds: [LogRecord.Kind]) throws(SequencerError) -> UnsafeRawBufferPointer {
        guard let header = LogRecord.header(raw), kinds.contains(header.kind),
            header.payloadLength == raw.count - LogRecord.headerSize
        else { throw SequencerError(.dataLoss, "its header is damaged") }
        let payload = UnsafeRawBufferPointer(rebasing: raw[LogRecord.headerSize...])
        guard CRC32C.checksum(payload) == header.payloadChecksum else { throw SequencerError(.dataLoss, "it fails its checksum") }
        return payload
    }

    /// An external batch record (header included): its seal and where its pages are.
    static func decodeExternal(_ raw: UnsafeRawBufferPointer) throws(SequencerError)
        -> (Batch, UInt32, [(number: UInt32, checksum: UInt32, length: UInt32, offset: Int)])
    {
        let payload = try checkedPayload(raw, kinds: [.externalBatch])
        do {
            var r = LogPayloadReader(payload)
            _ = try r.u64()
            let (seal, _, file, pages) = try decodeExternalPayload(&r)
            return (seal, file, pages)
        } catch {
            throw SequencerError(.dataLoss, "it is malformed")
        }
    }

    /// The pages file numbers (with `LogSegment.pagesFileBit`) in `directory`.
    static func pagesFileNumbers(in directory: String) throws(SequencerError) -> [UInt32] {
        try fileNumbers(in: directory, LogSegment.pagesFileNumber(of:))
    }

    /// A whole batch or drop record (header included) as a `Batch` with its pages.
    static func decodeBatch(_ raw: UnsafeRawBufferPointer) throws(SequencerError) -> Batch {
        let payload = try checkedPayload(raw, kinds: [.batch, .drop])
        do {
            var r = LogPayloadReader(payload)
            _ = try r.u64()
            var (batch, _, pages) = try decodeBatchPayload(&r, keepPages: true)
            batch.pages = pages.map { p in
                var page = Page()
                page.number = p.number
                page.data = p.data
                page.checksum = p.checksum
                return page
            }
            return batch
        } catch {
            throw SequencerError(.dataLoss, "it is malformed")
        }
    }

    /// The offset of an intact group end record after `offset`, if there is one.
    private static func intactGroupEnd(in segment: LogSegment, after offset: Int, size: Int) throws(SequencerError) -> Int? {
        guard size - offset > LogRecord.headerSize else { return nil }
        let rest = try segment.read(size - offset, at: offset)
        return rest.withUnsafeBytes { raw -> Int? in
            var i = 1
            let endLength = LogRecord.headerSize + 8
            while i + endLength <= raw.count {
                if raw[i] == 0x53, raw[i + 1] == 0x59, raw[i + 2] == 0x4E, raw[i + 3] == 0x52,
                    let h = LogRecord.header(UnsafeRawBufferPointer(rebasing: raw[i..<(i + LogRecord.headerSize)])),
                    h.kind == .groupEnd, h.payloadLength == 8,
                    CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[(i + LogRecord.headerSize)..<(i + endLength)])) == h.payloadChecksum
                {
                    return offset + i
                }
                i += 1
            }
            return nil
        }
    }

    private static func damage(_ directory: String, _ what: String) -> SequencerError {
        SequencerError(.dataLoss, """
            the store in \(directory) is damaged: \(what). The sequencer will not serve a damaged history. \
            Restore the folder from a backup or a replica; or, accepting the loss of every commit from the damage on, \
            move the damaged segment and those after it aside and start again
            """)
    }

    /// The segment numbers in `directory`, in order.
    static func segmentNumbers(in directory: String) throws(SequencerError) -> [UInt32] {
        try fileNumbers(in: directory, LogSegment.number(of:))
    }

    /// The numbers `parse` finds in the names of `directory`'s files, in order.
    private static func fileNumbers(in directory: String, _ parse: (String) -> UInt32?) throws(SequencerError) -> [UInt32] {
        try fileNames(in: directory).compactMap(parse).sorted()
    }

    /// The names of `directory`'s entries.
    static func fileNames(in directory: String) throws(SequencerError) -> [String] {
        guard let dir = opendir(directory) else {
            throw SequencerError(.unavailable, "store: cannot list \(directory): \(String(cString: strerror(errno)))")
        }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            names.append(withUnsafePointer(to: &entry.pointee.d_name) {
                String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self))
            })
        }
        return names
    }
}
