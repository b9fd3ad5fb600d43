import GRPCCore
import GRPCProtobuf
import GRPCNIOTransportHTTP2
import SwiftProtobuf
import SyndGRPC
import SyndHTTP2
import SyndProtocol
import SyndStorage

/// The sequencer's batch stream and key, through the client generated from proto/.
struct LedgerClient {
    let url: String

    /// Runs `body` with a client and the call options that admit every batch
    /// this sequencer accepts (gRPC's default of 4 MiB per message does not).
    func run<T: Sendable>(
        _ body: @Sendable @escaping (Synddb_V1_Sequencer.Client<HTTP2ClientTransport.Posix>, CallOptions) async throws -> T
    ) async throws -> T {
        try await run { sequencer, options, _ in try await body(sequencer, options) }
    }

    /// `run`, also giving the underlying client (for calls with a deserializer of their own).
    func run<T: Sendable>(
        _ body: @Sendable @escaping (Synddb_V1_Sequencer.Client<HTTP2ClientTransport.Posix>, CallOptions, GRPCClient<HTTP2ClientTransport.Posix>) async throws -> T
    ) async throws -> T {
        // A list of sequencers sharing a PostgreSQL store: this command talks to the first.
        let endpoint = try Endpoint(url: String((url.split(separator: ",").first ?? Substring(url)).filter { $0 != " " }))
        guard !endpoint.tls else { throw CLIError("https sequencers are not supported by this command yet; use http://") }
        let transport = try HTTP2ClientTransport.Posix(
            target: .dns(host: endpoint.host, port: endpoint.port), transportSecurity: .plaintext)
        return try await withGRPCClient(transport: transport) { client in
            let sequencer = Synddb_V1_Sequencer.Client(wrapping: client)
            let capabilities = try await sequencer.getCapabilities(Synddb_V1_GetCapabilitiesRequest())
            var options = CallOptions.defaults
            let limit = Self.messageLimit(maxBatchBytes: capabilities.maxBatchBytes)
            options.maxResponseMessageBytes = limit
            // grpc-swift-nio-transport (2.9) sizes the client's response deframer
            // from maxRequestMessageBytes, so raise both.
            options.maxRequestMessageBytes = limit
            return try await body(sequencer, options, client)
        }
    }

    /// The largest message a batch can need. A batch is what its commit request
    /// carried (page images of at most max_batch_bytes, plus the changeset and
    /// schema, all within the sequencer's request limit of twice max_batch_bytes
    /// plus 1 MiB) and a seal of a few hundred bytes; 16 MiB of headroom covers
    /// that. Never below what the default --max-batch-mb (256) implies, so
    /// batches accepted before a restart with a smaller limit stay readable.
    static func messageLimit(maxBatchBytes: UInt64) -> Int {
        let batch = max(maxBatchBytes, StoreConfiguration(directory: "").maxBatchBytes)
        let (doubled, overflow) = batch.multipliedReportingOverflow(by: 2)
        let limit = overflow ? UInt64.max : doubled.addingReportingOverflow(16 << 20).partialValue
        // A gRPC message's length prefix is 32 bits.
        return Int(min(limit, UInt64(UInt32.max)))
    }

    func publicKey() async throws -> [UInt8] {
        try await run { client, options in
            let key = try await client.getSequencerKey(Synddb_V1_GetSequencerKeyRequest(), options: options)
            guard key.algorithm == "ed25519" else { throw CLIError("unknown key algorithm \(key.algorithm)") }
            return Array(key.publicKey)
        }
    }

    /// Seals a snapshot of `database` at its head.
    func createSnapshot(database: String) async throws -> Synddb_V1_SnapshotInfo {
        try await run { client, options in
            var request = Synddb_V1_CreateSnapshotRequest()
            request.database = database
            return try await client.createSnapshot(request, options: options)
        }
    }

    /// Drops `database`; returns the drop batch's version (0: there was no such database).
    func drop(database: String, force: Bool = false) async throws -> UInt64 {
        try await run { client, options in
            var request = Synddb_V1_DropDatabaseRequest()
            request.database = database
            request.force = force
            return try await client.dropDatabase(request, options: options).version
        }
    }

    /// Calls `each` for every batch from `from` (`synd log`, `synd revert`); stops early when it returns false.
    func batches(database: String, from: UInt64, _ each: @Sendable @escaping (Batch) async throws -> Bool) async throws {
        try await run { _, options, client in
            var request = Synddb_V1_StreamBatchesRequest()
            request.database = database
            request.fromVersion = from
            // Batches decode straight into SyndProtocol's Batch, not through the generated type and back.
            try await client.serverStreaming(
                request: ClientRequest(message: request), descriptor: Synddb_V1_Sequencer.Method.StreamBatches.descriptor,
                serializer: ProtobufSerializer<Synddb_V1_StreamBatchesRequest>(), deserializer: BatchDeserializer(), options: options
            ) { response in
                for try await batch in response.messages {
                    guard try await each(batch) else { return }
                }
            }
        }
    }
}

struct CLIError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Decodes a StreamBatches message with SyndProtocol's codec.
struct BatchDeserializer: MessageDeserializer {
    func deserialize<Bytes: GRPCContiguousBytes>(_ serializedMessageBytes: Bytes) throws -> Batch {
        try serializedMessageBytes.withUnsafeBytes { try Batch(serializedBytes: Array($0)) }
    }
}
