// Hand-written mirrors of proto/synddb/v1/sequencer.proto for the Foundation-free
// client. Tests check them byte for byte against the generated SwiftProtobuf code.

public struct GetCapabilitiesRequest: WireMessage {
    public init() {}
    public func encode(to writer: inout ProtoWriter) {}
    public mutating func decode(field: Int, wire: WireType, from reader: inout ProtoReader) throws {
        try reader.skip(wire)
    }
}

public struct Capabilities: WireMessage {
    public var protocolVersion: UInt32 = 0
    public var pageSizes: [UInt32] = []
    public var maxBatchBytes: UInt64 = 0
    public var maxPagesPerRead: UInt32 = 0
    public var features: [String] = []
    public var defaultLeaseTTLMs: UInt32 = 0
    public var retainedVersions: UInt64 = 0
    public init() {}
    public func encode(to w: inout ProtoWriter) {
        w.uint32(1, protocolVersion)
        w.packedUInt32(2, pageSizes)
        w.uint64(3, maxBatchBytes)
        w.uint32(4, maxPagesPerRead)
        for f in features { w.element(5, f) }
        w.uint32(6, defaultLeaseTTLMs)
        w.uint64(7, retainedVersions)
    }
    public mutating func decode(field: Int, wire: WireType, from r: inout ProtoReader) throws {
        switch field {
        case 1: protocolVersion = try r.uint32()
        case 2: try r.appendUInt32(wire, to: &pageSizes)
        case 3: maxBatchBytes = try r.varint()
        case 4: maxPagesPerRead = try r.uint32()
        case 5: features.append(try r.string())
        case 6: defaultLeaseTTLMs = try r.uint32()
        case 7: retainedVersions = try r.varint()
        default: try r.skip(wire)
        }
    }
}

public struct OpenDatabaseRequest: WireMessage {
    public var name = ""
    public var create = false
    /// The version the caller's cache holds: the answer lists pages written since.
    public var sinceVersion: UInt64 = 0
    /// Open as of this version (read-only; 0: the latest).
    public var atVersion: UInt64 = 0
    /// Open as of the last version committed at or before this time, in
    /// milliseconds since the Unix epoch (0: the latest).
    public var atTimeMs: UInt64 = 0
    /// Whether the request asks for a past version rather than the head.
    public var isPinned: Bool { atVersion != 0 || atTimeMs != 0 }
    public init() {}
    public init(name: String, create: Bool, sinceVersion: UInt64 = 0) {
        self.name = name
        self.create = create
        self.sinceVersion = sinceVersion
    }
    public func encode(to w: inout ProtoWriter) {
        w.string(1, name)
        w.bool(2, create)
        w.uint64(3, sinceVersion)
        w.uint64(4, atVersion)
        w.uint64(5, atTimeMs)
    }
    public mutating func decode(field: Int, wire: WireType, from r: inout ProtoReader) throws {
        switch field {
        case 1: name = try r.string()
        case 2: create = try r.varint() != 0
        case 3: sinceVersion = try r.varint()
        case 4: atVersion = try r.varint()
        case 5: atTimeMs = try r.varint()
        default: try r.skip(wire)
        }
    }
}

public struct DatabaseInfo: WireMessage {
    public var name = ""
    public var version: UInt64 = 0
    public var pageSize: UInt32 = 0
    public var pageCount: UInt32 = 0
    public var oldestVersion: UInt64 = 0
    /// Whether `changedPages` lists every page written after the request's `sinceVersion`.
    public var changesKnown = false
    public var changedPages: [UInt32] = []
    /// Commit time of `version`, milliseconds since the Unix epoch (0: not known, or version 0).
    public var committedAtMs: UInt64 = 0
    public init() {}
    public func encode(to w: inout ProtoWriter) {
        w.string(1, name)
        w.uint64(2, version)
        w.uint32(3, pageSize)
        w.uint32(4, pageCount)
        w.uint64(5, oldestVersion)
        w.bool(6, changesKnown)
        w.packedUInt32(7, changedPages)
        w.uint64(8, committedAtMs)
    }
    public mutating func decode(field: Int, wire: WireType, from r: inout ProtoReader) throws {
        switch field {
        case 1: name = try r.string()
        case 2: version = try r.varint()
        case 3: pageSize = try r.uint32()
        case 4: pageCount = try r.uint32()
        case 5: oldestVersion = try r.varint()
        case 6: changesKnown = try r.varint() != 0
        case 7: try r.appendUInt32(wire, to: &changedPages)
        case 8: committedAtMs = try r.varint()
        default: try r.skip(wire)
        }
    }
}

public struct AcquireLeaseRequest: WireMessage {
    public var database = ""
    public var holder = ""
    public var ttlMs: UInt32 = 0
    /// How long to wait for another holder's live lease to be given up.
    public var waitMs: UInt32 = 0
    public init() {}
    public func encode(to w: inout ProtoWriter) {
        w.string(1, database)
        w.string(2, holder)
        w.uint32(3, ttlMs)
        w.uint32(4, waitMs)
    }
    public mutating func decode(field: Int, wire: WireType, from r: inout ProtoReader) throws {
        switch field {
        case 1: database = try r.string()
        case 2: holder = try r.string()
        case 3: ttlMs = try r.uint32()
        case 4: waitMs = try r.uint32()
        default: try r.skip(wire)
        }
    }
}

public struct Lease: WireMessage {
    public var database = ""
    public var holder = ""
    public var epoch: UInt64 = 0
    public var ttlMs: UInt32 = 0
    public var info: DatabaseInfo?
    public init() {}
    public func encode(to w: inout ProtoWriter) {
        w.string(1, database)
        w.string(2, holder)
        w.uint64(3, epoch)
        w.uint32(4, ttlMs)
        w.optionalMessage(5, info)
    }
    public mutating func decode(field: Int, wire: WireType, from r: inout ProtoReader) throws {
        switch field {
        case 1: database = try r.string()
        case 2: holder = try r.string()
        case 3: epoch = try r.varint()
        case 4: ttlMs = try r.uint32()
        case 5: info = try r.message(DatabaseInfo.self)
        default: try r.skip(wire)
        }
    }
}

public struct RenewLeaseRequest: WireMessage {
    public var database = ""
    public var holder = ""
    public var epoch: UInt64 = 0
    public var ttlMs: UInt32 = 0
    /// The holder is inside a write transaction: waiters should not wait.
    public var inTransaction = false
    public init() {}
    public func encode(to w: inout ProtoWriter) {
        w.string(1, database)
        w.string(2, holder)
        w.uint64(3, epoch)
        w.uint32(4, ttlMs)
        w.bool(5, inTransaction)
    }
    public mutating func decode(field: Int, wire: WireType, from r: inout ProtoReader) throws {
        switch field {
        case 1: database = try r.string()
        case 2: holder = try r.string()
        case 3: epoch = try r.varint()
        case 4: ttlMs = try r.uint32()
        case 5: inTransaction = try r.varint() != 0
        default: try r.skip(wire)
        }
    }
}

public struct ReleaseLeaseRequest: WireMessage {
    public var database = ""
    public var holder = ""
    public var epoch: UInt64 = 0
    public init() {}
    public func encode(to w: inout ProtoWriter) {
        w.string(1, database)
        w.string(2, holder)
        w.uint64(3, epoch)
    }
    public mutating func decode(field: Int, wire: WireType, from r: inout ProtoReader) throws {
        switch field {
        case 1: database = try r.string()
        case 2: holder = try r.string()
        case 3: epoch = try r.varint()
        default: try r.skip(wire)
        }
    }
}

public struct ReleaseLeaseResponse: WireMessage {
    public init() {}
    public func encode(to writer: inout ProtoWriter) {}
    public mutating func decode(field: Int, wire: WireType, from reader: inout ProtoReader) throws {
        try reader.skip(wire)
    }
}

public struct HoldLeaseRequest: WireMessage {
    public var database = ""
    public var holder = ""
    public var epoch: UInt64 = 0
    public init() {}
    public func encode(to w: inout ProtoWriter) {
        w.string(1, database)
        w.string(2, holder)
        w.uint64(3, epoch)
    }
    public mutating func decode(field: Int, wire: WireType, from r: inout ProtoReader) throws {
        switch field {
        case 1: database = try r.string()
        case 2: holder = try r.string()
        case 3: epoch = try r.varint()
        default: try r.skip(wire)
        }
    }
}

/// The one message of a HoldLease call: the hold is in place.
public struct HoldLeaseEvent: WireMessage {
    public var lease: Lease?
    /// Another writer is waiting for the lease.
    public var wanted = false
    public init() {}
    public func encode(to w: inout ProtoWriter) {
        w.optionalMessage(1, lease)
        w.bool(2, wanted)
    }
    public mutating func decode(field: Int, wire: WireType, from r: inout ProtoReader) throws {
        switch field {
        case 1: lease = try r.message(Lease.self)
        case 2: wanted = try r.varint() != 0
        default: try r.skip(wire)
        }
    }
}

public struct ReadPagesRequest: WireMessage {
    public var database = ""
    public var version: UInt64 = 0
    public var pageNumbers: [UInt32] = []
    public init() {}
    public func encode(to w: inout ProtoWriter) {
        w.string(1, database)
        w.uint64(2, version)
        w.packedUInt32(3, pageNumbers)
    }
    public mutating func decode(field: Int, wire: WireType, from r: inout ProtoReader) throws {
        switch field {
        case 1: database = try r.string()
        case 2: version = try r.varint()
        case 3: try r.appendUInt32(wire, to: &pageNumbers)
        default: try r.skip(wire)
        }
    }
}

public struct Page: WireMessage {
    public var number: UInt32 = 0
    public var data: [UInt8] = []
    public var checksum: UInt32 = 0
    public init() {}
    /// A page with its CRC-32C computed.
    public init(number: UInt32, data: [UInt8]) {
        self.number = number
        self.data = data
        self.checksum = CRC32C.checksum(data)
    }
    public func encode(to w: inout ProtoWriter) {
        w.uint32(1, number)
        w.bytes(2, data)
        w.uint32(3, checksum)
    }
    public mutating func decode(field: Int, wire: WireType, from r: inout ProtoReader) throws {
        switch field {
        case 1: number = try r.uint32()
        case 2: data = try r.bytes()
        case 3: checksum = try r.uint32()
        default: try r.skip(wire)
        }
    }
    /// Whether `checksum` matches `data`.
    public var isIntact: Bool { CRC32C.checksum(data) == checksum }
    /// Bytes of the encoding of a Page with these fields, as `encode` writes
    /// it (defaults left out): for writers that encode pages straight into
    /// their output and must know its length first.
    public static func encodedSize(number: UInt32, dataCount: Int, checksum: UInt32) -> Int {
        var n = 0
        if number != 0 { n += 1 + ProtoWriter.varintSize(UInt64(number)) }
        if dataCount != 0 { n += 1 + ProtoWriter.varintSize(UInt64(dataCount)) + dataCount }
        if checksum != 0 { n += 1 + ProtoWriter.varintSize(UInt64(checksum)) }
        return n
    }
}

public struct ReadPagesResponse: WireMessage {
    public var version: UInt64 = 0
    public var pageSize: UInt32 = 0
    public var pageCount: UInt32 = 0
    public var pages: [Page] = []
    public init() {}
    public func encode(to w: inout ProtoWriter) {
        w.uint64(1, version)
        w.uint32(2, pageSize)
        w.uint32(3, pageCount)
        for p in pages { w.message(4, p) }
    }
    public mutating func decode(field: Int, wire: WireType, from r: inout ProtoReader) throws {
        switch field {
        case 1: version = try r.varint()
        case 2: pageSize = try r.uint32()
        case 3: pageCount = try r.uint32()
        case 4: pages.append(try r.message(Page.self))
        default: try r.skip(wire)
        }
    }
}

public struct CommitRequest: WireMessage {
    public var database = ""
    public var baseVersion: UInt64 = 0
    public var leaseEpoch: UInt64 = 0
    public var txnID: [UInt8] = []
    public var pages: [Page] = []
    public var pageCount: UInt32 = 0
    public var pageSize: UInt32 = 0
    public var changeset: [UInt8] = []
    public var holder = ""
    public var schemaChanged = false
    public var schema: [SchemaObject] = []
    public var unauditedTables: [String] = []
    public init() {}
    public func encode(to w: inout ProtoWriter) {
        w.string(1, database)
        w.uint64(2, baseVersion)
        w.uint64(3, leaseEpoch)
        w.bytes(4, txnID)
        for p in pages { w.message(5, p) }
        w.uint32(6, pageCount)
        w.uint32(7, pageSize)
        w.bytes(8, changeset)
        w.string(9, holder)
        w.bool(10, schemaChanged)
        for o in schema { w.message(11, o) }
        for t in unauditedTables { w.element(12, t) }
    }
    public mutating func decode(field: Int, wire: WireType, from r: inout ProtoReader) throws {
        switch field {
        case 1: database = try r.string()
        case 2: baseVersion = try r.varint()
        case 3: leaseEpoch = try r.varint()
        case 4: txnID = try r.bytes()
        case 5: pages.append(try r.message(Page.self))
        case 6: pageCount = try r.uint32()
        case 7: pageSize = try r.uint32()
        case 8: changeset = try r.bytes()
        case 9: holder = try r.string()
        case 10: schemaChanged = try r.varint() != 0
        case 11: schema.append(try r.message(SchemaObject.self))
        case 12: unauditedTables.append(try r.string())
        default: try r.skip(wire)
        }
    }
}

public struct CommitResponse: WireMessage {
    public var version: UInt64 = 0
    public var duplicate = false
    public init() {}
    public func encode(to w: inout ProtoWriter) {
        w.uint64(1, version)
        w.bool(2, duplicate)
    }
    public mutating func decode(field: Int, wire: WireType, from r: inout ProtoReader) throws {
        switch field {
        case 1: version = try r.varint()
        case 2: duplicate = try r.varint() != 0
        default: try r.skip(wire)
        }
    }
}

public struct GetCommitStatusRequest: WireMessage {
    public var database = ""
    public var txnID: [UInt8] = []
    public init() {}
    public func encode(to w: inout ProtoWriter) {
        w.string(1, database)
        w.bytes(2, txnID)
    }
    public mutating func decode(field: Int, wire: WireType, from r: inout ProtoReader) throws {
        switch field {
        case 1: database = try r.string()
        case 2: txnID = try r.bytes()
        default: try r.skip(wire)
        }
    }
}

public struct GetCommitStatusResponse: WireMessage {
    public enum State: UInt32, Sendable {
        case unspecified = 0
        case committed = 1
        case notFound = 2
    }
    public var state: State = .unspecified
    public var version: UInt64 = 0
    public init() {}
    public func encode(to w: inout ProtoWriter) {
        w.uint32(1, state.rawValue)
        w.uint64(2, version)
    }
    public mutating func decode(field: Int, wire: WireType, from r: inout ProtoReader) throws {
        switch field {
        case 1: state = State(rawValue: try r.uint32()) ?? .unspecified
        case 2: version = try r.varint()
        default: try r.skip(wire)
        }
    }
}

/// One entry of sqlite_master: a table, index, view or trigger.
public struct SchemaObject: WireMessage, Hashable {
    public var type = ""
    public var name = ""
    public var tableName = ""
    public var sql = ""
    public init() {}
    public init(type: String, name: String, tableName: String, sql: String) {
        self.type = type
        self.name = name
        self.tableName = tableName
        self.sql = sql
    }
    public func encode(to w: inout ProtoWriter) {
        w.string(1, type)
        w.string(2, name)
        w.string(3, tableName)
        w.string(4, sql)
    }
    public mutating func decode(field: Int, wire: WireType, from r: inout ProtoReader) throws {
        switch field {
        case 1: type = try r.string()
        case 2: name = try r.string()
        case 3: tableName = try r.string()
        case 4: sql = try r.string()
        default: try r.skip(wire)
        }
    }
}

/// A committed, sealed batch as the sequencer streams it (proto: Batch).
public struct Batch: WireMessage {
    public var database = ""
    public var version: UInt64 = 0
    public var committedAtMs: UInt64 = 0
    public var pageSize: UInt32 = 0
    public var pageCount: UInt32 = 0
    public var pages: [Page] = []
    public var changeset: [UInt8] = []
    public var schemaChanged = false
    public var schema: [SchemaObject] = []
    public var unauditedTables: [String] = []
    public var previousHash: [UInt8] = []
    public var pagesHash: [UInt8] = []
    public var changesetHash: [UInt8] = []
    public var schemaHash: [UInt8] = []
    public var hash: [UInt8] = []
    public var signature: [UInt8] = []
    /// Not a batch: a heartbeat of a follow stream that asked for them
    /// (`StreamBatchesRequest.heartbeatMs`). `version` is the head, `committedAtMs` the sequencer's clock.
    public var heartbeat = false
    /// Part of a snapshot (a stream asked `fromSnapshot`): pages of the database at
    /// `version`, in order; the last part (`snapshotLast`) carries the snapshot's seal.
    public var snapshot = false
    public var snapshotLast = false
    public init() {}
    public func encode(to w: inout ProtoWriter) {
        w.string(1, database)
        w.uint64(2, version)
        w.uint64(3, committedAtMs)
        w.uint32(4, pageSize)
        w.uint32(5, pageCount)
        for p in pages { w.message(6, p) }
        w.bytes(7, changeset)
        w.bool(8, schemaChanged)
        for o in schema { w.message(9, o) }
        for t in unauditedTables { w.element(10, t) }
        w.bytes(11, previousHash)
        w.bytes(12, pagesHash)
        w.bytes(13, changesetHash)
        w.bytes(14, schemaHash)
        w.bytes(15, hash)
        w.bytes(16, signature)
        w.bool(17, heartbeat)
        w.bool(18, snapshot)
        w.bool(19, snapshotLast)
    }
    public mutating func decode(field: Int, wire: WireType, from r: inout ProtoReader) throws {
        switch field {
        case 1: database = try r.string()
        case 2: version = try r.varint()
        case 3: committedAtMs = try r.varint()
        case 4: pageSize = try r.uint32()
        case 5: pageCount = try r.uint32()
        case 6: pages.append(try r.message(Page.self))
        case 7: changeset = try r.bytes()
        case 8: schemaChanged = try r.varint() != 0
        case 9: schema.append(try r.message(SchemaObject.self))
        case 10: unauditedTables.append(try r.string())
        case 11: previousHash = try r.bytes()
        case 12: pagesHash = try r.bytes()
        case 13: changesetHash = try r.bytes()
        case 14: schemaHash = try r.bytes()
        case 15: hash = try r.bytes()
        case 16: signature = try r.bytes()
        case 17: heartbeat = try r.varint() != 0
        case 18: snapshot = try r.varint() != 0
        case 19: snapshotLast = try r.varint() != 0
        default: try r.skip(wire)
        }
    }
}

public struct StreamBatchesRequest: WireMessage {
    public var database = ""
    public var fromVersion: UInt64 = 0
    public var follow = false
    /// With `follow`: send a heartbeat (the head, once sent up to it) this often, in milliseconds (0: none).
    public var heartbeatMs: UInt32 = 0
    /// With `fromVersion` 0: start with the newest usable snapshot.
    public var fromSnapshot = false
    public init() {}
    public func encode(to w: inout ProtoWriter) {
        w.string(1, database)
        w.uint64(2, fromVersion)
        w.bool(3, follow)
        w.uint32(4, heartbeatMs)
        w.bool(5, fromSnapshot)
    }
    public mutating func decode(field: Int, wire: WireType, from r: inout ProtoReader) throws {
        switch field {
        case 1: database = try r.string()
        case 2: fromVersion = try r.varint()
        case 3: follow = try r.varint() != 0
        case 4: heartbeatMs = try r.uint32()
        case 5: fromSnapshot = try r.varint() != 0
        default: try r.skip(wire)
        }
    }
}

/// DropDatabase: deletes a database, under the caller's lease if it holds one.
public struct DropDatabaseRequest: WireMessage {
    public var database = ""
    public var holder = ""
    public var epoch: UInt64 = 0
    /// Drop even while another writer's lease is live; the lease ends with it.
    public var force = false
    public init() {}
    public func encode(to w: inout ProtoWriter) {
        w.string(1, database)
        w.string(2, holder)
        w.uint64(3, epoch)
        w.bool(4, force)
    }
    public mutating func decode(field: Int, wire: WireType, from r: inout ProtoReader) throws {
        switch field {
        case 1: database = try r.string()
        case 2: holder = try r.string()
        case 3: epoch = try r.varint()
        case 4: force = try r.varint() != 0
        default: try r.skip(wire)
        }
    }
}

/// The version of the drop batch (0: there was no such database).
public struct DropDatabaseResponse: WireMessage {
    public var version: UInt64 = 0
    public init() {}
    public func encode(to w: inout ProtoWriter) {
        w.uint64(1, version)
    }
    public mutating func decode(field: Int, wire: WireType, from r: inout ProtoReader) throws {
        switch field {
        case 1: version = try r.varint()
        default: try r.skip(wire)
        }
    }
}

/// GetStatus: every database (or `database`) as the sequencer holds it now.
public struct GetStatusRequest: WireMessage {
    public var database = ""
    public init() {}
    public func encode(to w: inout ProtoWriter) {
        w.string(1, database)
    }
    public mutating func decode(field: Int, wire: WireType, from r: inout ProtoReader) throws {
        switch field {
        case 1: database = try r.string()
        default: try r.skip(wire)
        }
    }
}

/// One database in a `GetStatusResponse`.
public struct DatabaseStatusMessage: WireMessage, Equatable {
    public var name = ""
    public var version: UInt64 = 0
    public var oldestVersion: UInt64 = 0
    public var pageSize: UInt32 = 0
    public var pageCount: UInt32 = 0
    /// The live writer lease ("" and 0 when none).
    public var leaseHolder = ""
    public var leaseEpoch: UInt64 = 0
    public var leaseMsLeft: UInt64 = 0
    public var followStreams: UInt32 = 0
    public var followerLagVersions: UInt64 = 0
    public init() {}
    public func encode(to w: inout ProtoWriter) {
        w.string(1, name)
        w.uint64(2, version)
        w.uint64(3, oldestVersion)
        w.uint32(4, pageSize)
        w.uint32(5, pageCount)
        w.string(6, leaseHolder)
        w.uint64(7, leaseEpoch)
        w.uint64(8, leaseMsLeft)
        w.uint32(9, followStreams)
        w.uint64(10, followerLagVersions)
    }
    public mutating func decode(field: Int, wire: WireType, from r: inout ProtoReader) throws {
        switch field {
        case 1: name = try r.string()
        case 2: version = try r.varint()
        case 3: oldestVersion = try r.varint()
        case 4: pageSize = try r.uint32()
        case 5: pageCount = try r.uint32()
        case 6: leaseHolder = try r.string()
        case 7: leaseEpoch = try r.varint()
        case 8: leaseMsLeft = try r.varint()
        case 9: followStreams = try r.uint32()
        case 10: followerLagVersions = try r.varint()
        default: try r.skip(wire)
        }
    }
}

/// What GetStatus answers.
public struct GetStatusResponse: WireMessage {
    public var databases: [DatabaseStatusMessage] = []
    public var store = ""
    public var storeBytes: UInt64 = 0
    public var connections: UInt32 = 0
    public init() {}
    public func encode(to w: inout ProtoWriter) {
        for d in databases { w.message(1, d) }
        w.string(2, store)
        w.uint64(3, storeBytes)
        w.uint32(4, connections)
    }
    public mutating func decode(field: Int, wire: WireType, from r: inout ProtoReader) throws {
        switch field {
        case 1: databases.append(try r.message(DatabaseStatusMessage.self))
        case 2: store = try r.string()
        case 3: storeBytes = try r.varint()
        case 4: connections = try r.uint32()
        default: try r.skip(wire)
        }
    }
}

public struct GetSequencerKeyRequest: WireMessage {
    public init() {}
    public func encode(to writer: inout ProtoWriter) {}
    public mutating func decode(field: Int, wire: WireType, from reader: inout ProtoReader) throws { try reader.skip(wire) }
}

public struct SequencerKey: WireMessage {
    public var algorithm = ""
    public var publicKey: [UInt8] = []
    public init() {}
    public func encode(to w: inout ProtoWriter) {
        w.string(1, algorithm)
        w.bytes(2, publicKey)
    }
    public mutating func decode(field: Int, wire: WireType, from r: inout ProtoReader) throws {
        switch field {
        case 1: algorithm = try r.string()
        case 2: publicKey = try r.bytes()
        default: try r.skip(wire)
        }
    }
}

public struct CreateSnapshotRequest: WireMessage {
    public var database = ""
    public init() {}
    public func encode(to w: inout ProtoWriter) {
        w.string(1, database)
    }
    public mutating func decode(field: Int, wire: WireType, from r: inout ProtoReader) throws {
        switch field {
        case 1: database = try r.string()
        default: try r.skip(wire)
        }
    }
}

/// A snapshot the sequencer keeps (see `Batch.snapshot`).
public struct SnapshotInfo: WireMessage {
    public var database = ""
    public var version: UInt64 = 0
    public var pageSize: UInt32 = 0
    public var pageCount: UInt32 = 0
    public var committedAtMs: UInt64 = 0
    public init() {}
    public func encode(to w: inout ProtoWriter) {
        w.string(1, database)
        w.uint64(2, version)
        w.uint32(3, pageSize)
        w.uint32(4, pageCount)
        w.uint64(5, committedAtMs)
    }
    public mutating func decode(field: Int, wire: WireType, from r: inout ProtoReader) throws {
        switch field {
        case 1: database = try r.string()
        case 2: version = try r.varint()
        case 3: pageSize = try r.uint32()
        case 4: pageCount = try r.uint32()
        case 5: committedAtMs = try r.varint()
        default: try r.skip(wire)
        }
    }
}
