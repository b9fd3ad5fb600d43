import GRPCCore
import GRPCNIOTransportHTTP2
import SwiftProtobuf
import SyndGRPC
import SyndHTTP2
import SyndProtocol

/// The sequencer's batch stream and key, through the client generated from proto/.
struct LedgerClient {
    let url: String

    func run<T: Sendable>(_ body: @Sendable @escaping (Synddb_V1_Sequencer.Client<HTTP2ClientTransport.Posix>) async throws -> T) async throws -> T {
        let endpoint = try Endpoint(url: url)
        guard !endpoint.tls else { throw CLIError("https sequencers are not supported by this command yet; use http://") }
        let transport = try HTTP2ClientTransport.Posix(
            target: .dns(host: endpoint.host, port: endpoint.port), transportSecurity: .plaintext)
        return try await withGRPCClient(transport: transport) { client in
            try await body(Synddb_V1_Sequencer.Client(wrapping: client))
        }
    }

    func publicKey() async throws -> [UInt8] {
        try await run { client in
            let key = try await client.getSequencerKey(Synddb_V1_GetSequencerKeyRequest())
            guard key.algorithm == "ed25519" else { throw CLIError("unknown key algorithm \(key.algorithm)") }
            return Array(key.publicKey)
        }
    }

    /// Calls `each` for every batch from `from`; stops early when it returns false.
    func batches(database: String, from: UInt64, follow: Bool = false, _ each: @Sendable @escaping (Batch) async throws -> Bool) async throws {
        try await run { client in
            var request = Synddb_V1_StreamBatchesRequest()
            request.database = database
            request.fromVersion = from
            request.follow = follow
            try await client.streamBatches(request) { response in
                for try await message in response.messages {
                    let bytes: [UInt8] = try message.serializedBytes()
                    guard try await each(try Batch(serializedBytes: bytes)) else { return }
                }
            }
        }
    }
}

struct CLIError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
