// swift-tools-version:6.1
import PackageDescription

// synd-sqlite3 links SQLite statically (Debian's libsqlite3.a).
#if arch(arm64)
let libDirectory = "/usr/lib/aarch64-linux-gnu"
#else
let libDirectory = "/usr/lib/x86_64-linux-gnu"
#endif

// One module per component; the folders under Sources/ show the architecture.
// The VFS path (SyndVFS, SyndClient, SyndHTTP2, SyndProtocol) imports no Foundation.
let package = Package(
    name: "SyndDB",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "SyndDB", targets: ["SyndDB"]),
        .library(name: "SyndSequencer", targets: ["SyndSequencer"]),
        .executable(name: "synd", targets: ["synd"]),
        // Built with static Swift stdlib by scripts/build-shell.sh and scripts/build-extension.sh.
        .executable(name: "synd-sqlite3", targets: ["synd-sqlite3"]),
        .library(name: "syndvfs", type: .dynamic, targets: ["SyndExtension"]),
        // Fuzz targets, linked with libFuzzer only by the package in Fuzz/ (scripts/fuzz.sh).
        .library(name: "SyndFuzzTargets", targets: ["SyndFuzzTargets"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.0"),
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.0"..<"5.0.0"),
        .package(url: "https://github.com/grpc/grpc-swift-2.git", from: "2.4.0"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport.git", from: "2.9.0"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", from: "2.4.0"),
        // Already resolved through grpc-swift-nio-transport; the sequencer's server uses them directly.
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.81.0"),
        .package(url: "https://github.com/apple/swift-nio-http2.git", from: "1.36.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.29.0"),
        // The PostgreSQL store (SyndPostgres).
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.0"),
        // The sequencer's metrics (`synd sequencer --metrics-port`).
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.1.0"),
        // examples/grdb: GRDB on SyndDB.
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.0.0"),
    ],
    targets: [
        // C shims.
        // No pkgConfig: it would add -lsqlite3 to everything, and the extension must link no SQLite.
        .systemLibrary(name: "CSQLite", providers: [.apt(["libsqlite3-dev"])]),
        .systemLibrary(name: "CNGHTTP2", pkgConfig: "libnghttp2", providers: [.apt(["libnghttp2-dev", "libssl-dev"])]),

        // Hardware CRC-32C (SSE4.2) for page checksums.
        .systemLibrary(name: "CCRC32C"),
        // Wire protocol: messages, protobuf codec, gRPC framing, checksums. No Foundation.
        .target(name: "SyndProtocol", dependencies: ["CCRC32C"]),
        // Code generated from proto/ by scripts/generate-proto.sh (server side).
        .target(
            name: "SyndGRPC",
            dependencies: [
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
            ]
        ),
        // HTTP/2 client on libnghttp2 (h2c and TLS via OpenSSL).
        .target(
            name: "SyndHTTP2",
            dependencies: ["CNGHTTP2"],
            linkerSettings: [.linkedLibrary("nghttp2"), .linkedLibrary("ssl"), .linkedLibrary("crypto")]
        ),
        // Typed sequencer client: RPCs, deadlines, retries, idempotent commit.
        .target(name: "SyndClient", dependencies: ["SyndProtocol", "SyndHTTP2", "CNGHTTP2"]),
        // Small SQLite wrapper shared by the API, the store and the tools.
        .target(name: "SyndSQLite", dependencies: ["CSQLite"], linkerSettings: [.linkedLibrary("sqlite3")]),
        // The SQLite VFS.
        // Changeset capture: preupdate hook + SQLite's session extension on a scratch connection.
        .target(name: "SyndCapture", dependencies: ["CSQLite", "SyndProtocol"]),
        // Calls SQLite only through `synd_sqlite_api`, so it links no SQLite itself.
        .target(name: "SyndVFS", dependencies: ["CSQLite", "SyndClient", "SyndCapture"]),
        // libsyndvfs.so: the VFS as a loadable extension.
        .target(name: "SyndExtension", dependencies: ["CSQLite", "SyndVFS"]),
        // SQLite's shell, from Debian's source package at build time.
        .target(name: "CSQLiteShell", cSettings: [.unsafeFlags(["-w"])]),
        .executableTarget(
            name: "synd-sqlite3",
            dependencies: ["CSQLite", "CSQLiteShell", "SyndVFS"],
            linkerSettings: [
                .unsafeFlags(["-Xlinker", "\(libDirectory)/libsqlite3.a"]),
                .linkedLibrary("m"), .linkedLibrary("dl"), .linkedLibrary("pthread"),
            ]
        ),
        // Sealed batches: hashes, the hash chain and Ed25519 signatures.
        .target(name: "SyndLedger", dependencies: ["SyndProtocol", .product(name: "Crypto", package: "swift-crypto")]),
        // The sequencer's durable store.
        .target(name: "SyndStorage", dependencies: ["SyndSQLite", "SyndProtocol", "SyndLedger"]),
        // The sequencer: gRPC service over the store.
        .target(
            name: "SyndSequencer",
            dependencies: [
                "SyndStorage", "SyndProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        // The PostgreSQL store: several sequencers on one PostgreSQL.
        .target(
            name: "SyndPostgres",
            dependencies: [
                "SyndStorage", "SyndProtocol", "SyndLedger",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Validation: logical replicas, physical replicas, the checks between them.
        .target(name: "SyndValidator", dependencies: ["SyndSQLite", "SyndCapture", "SyndLedger", "SyndProtocol", "SyndClient"]),
        // Fuzz targets: pure entries over bytes (Fuzz/, scripts/fuzz.sh, FuzzRegressionTests).
        .target(
            name: "SyndFuzzTargets",
            dependencies: [
                "SyndProtocol", "SyndClient", "SyndHTTP2", "SyndSequencer", "SyndStorage", "SyndValidator",
                "SyndLedger", "SyndSQLite", "SyndCapture", "CSQLite",
            ]
        ),
        // The Swift API.
        .target(name: "SyndDB", dependencies: ["SyndSQLite", "SyndVFS"]),
        // The `synd` command.
        .executableTarget(
            name: "synd",
            dependencies: [
                "SyndDB", "SyndSequencer", "SyndPostgres", "SyndValidator", "SyndCapture", "SyndClient", "SyndGRPC", "SyndHTTP2", "SyndLedger", "SyndSQLite", "CSQLite",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // examples/swift-api: the Swift API in a small program (run by the tests).
        .executableTarget(name: "swift-api-example", dependencies: ["SyndDB", "SyndSQLite"], path: "examples/swift-api"),
        // examples/grdb: GRDB's DatabaseQueue, migrations and records on SyndDB (run by the tests).
        .executableTarget(name: "grdb-example", dependencies: ["SyndDB", .product(name: "GRDB", package: "GRDB.swift")], path: "examples/grdb"),
        .testTarget(
            name: "SyndDBTests",
            dependencies: [
                "SyndDB", "SyndSequencer", "SyndPostgres", "SyndStorage", "SyndGRPC", "SyndClient", "SyndProtocol", "SyndSQLite", "SyndValidator", "SyndLedger",
                "SyndFuzzTargets", "synd", "swift-api-example", "grdb-example",
                // GRPCServerTests call the sequencer through grpc-swift's client.
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
