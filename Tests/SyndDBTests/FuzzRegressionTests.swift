import Foundation
import SyndFuzzTargets
import SyndGRPC
import SyndLedger
import SyndProtocol
import SyndValidator
import Testing

/// Every fuzz target's seeds (Fuzz/corpus/<target>) and every input that ever
/// crashed one (Fuzz/regressions/<target>), through the same entry the fuzzer
/// calls (`scripts/fuzz.sh`). A target traps where the code under test broke
/// one of its promises (a clear error, never a crash), so passing means none did.
///
/// `SYND_WRITE_FUZZ_CORPUS=1` rewrites Fuzz/corpus from the targets' seeds.
@Suite(.serialized) struct FuzzRegressionTests {
    static let fuzzFolder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fuzz")

    static func inputs(_ kind: String, _ target: String) throws -> [(name: String, bytes: [UInt8])] {
        let folder = fuzzFolder.appendingPathComponent(kind).appendingPathComponent(target)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        return try names.filter { !$0.hasPrefix(".") }.sorted().map {
            ($0, Array(try Data(contentsOf: folder.appendingPathComponent($0))))
        }
    }

    @Test(arguments: FuzzTargets.all.map(\.name))
    func regressionInputsRunCleanly(target name: String) async throws {
        let target = try #require(FuzzTargets.named(name))
        let regressions = try Self.inputs("regressions", name)
        try await offPool {
            for input in regressions { target.run(input.bytes) }
        }
        print("fuzz regressions: \(name): \(regressions.count) inputs")
    }

    @Test(arguments: FuzzTargets.all.map(\.name))
    func seedsRunCleanly(target name: String) async throws {
        let target = try #require(FuzzTargets.named(name))
        let seeds = target.seeds()
        #expect(!seeds.isEmpty)
        if ProcessInfo.processInfo.environment["SYND_WRITE_FUZZ_CORPUS"] == "1" {
            let folder = Self.fuzzFolder.appendingPathComponent("corpus").appendingPathComponent(name)
            try? FileManager.default.removeItem(at: folder)
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            for (i, seed) in seeds.enumerated() {
                try Data(seed).write(to: folder.appendingPathComponent(String(format: "seed-%02d", i)))
            }
        }
        let committed = try Self.inputs("corpus", name)
        #expect(!committed.isEmpty, "Fuzz/corpus/\(name) is empty: run with SYND_WRITE_FUZZ_CORPUS=1")
        try await offPool {
            for seed in seeds { target.run(seed) }
            for input in committed { target.run(input.bytes) }
        }
    }
}

/// The codec defects the client target found, pinned against the generated code.
@Suite struct FuzzFoundCodecTests {
    /// An empty element of a repeated string is data: it was dropped on encoding.
    @Test func emptyRepeatedStringsSurviveEncoding() throws {
        var batch = Batch()
        batch.unauditedTables = ["", "log"]
        var generated = Synddb_V1_Batch()
        generated.unauditedTables = ["", "log"]
        #expect(batch.serializedBytes() == (try generated.serializedBytes() as [UInt8]))
        #expect(try Batch(serializedBytes: batch.serializedBytes()) == batch)
    }

    /// A known field sent with another wire type is skipped, as SwiftProtobuf
    /// skips it; it was read as if it had the expected type.
    @Test func fieldWithAnotherWireTypeIsSkippedLikeTheGeneratedCode() throws {
        // version as a length-delimited field, then as a varint; duplicate as a fixed32.
        let bytes: [UInt8] = [0x0A, 0x01, 0x41, 0x08, 0x05, 0x15, 1, 0, 0, 0]
        let hand = try CommitResponse(serializedBytes: bytes)
        let generated = try Synddb_V1_CommitResponse(serializedBytes: bytes)
        #expect(hand.version == generated.version)
        #expect(hand.duplicate == generated.duplicate)
        #expect(hand.version == 5)
    }
}

/// The validator target's first seed is a real history (so fuzzing starts deep):
/// sealed as the target seals it, every batch validates.
@Suite struct FuzzSeedDepthTests {
    @Test func validatorSeedIsAValidHistory() throws {
        let seed = try #require(ValidatorBatchTarget.seeds.first)
        let folder = NSTemporaryDirectory() + "synd-fuzz-seed-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let key = try SigningKey(path: folder + "/key")
        let validator = try Validator(directory: folder + "/replicas", publicKey: key.publicKey)
        var rest = seed.dropFirst()
        var previous = BatchSeal.genesis
        var count = 0
        while rest.count >= 2 {
            let n = Int(rest[rest.startIndex]) << 8 | Int(rest[rest.startIndex + 1])
            var batch = try Batch(serializedBytes: Array(rest.dropFirst(2).prefix(n)))
            rest = rest.dropFirst(2 + n)
            batch.version = UInt64(count + 1)
            try BatchSeal.seal(&batch, previousHash: previous, key: key)
            try validator.process(batch)
            previous = batch.hash
            count += 1
        }
        #expect(count == 4)
    }
}
