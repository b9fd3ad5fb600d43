// swift-tools-version:6.1
import Foundation
import PackageDescription

// The libFuzzer driver of SyndDB's fuzz targets (Sources/SyndFuzzTargets).
// A package of its own so that only scripts/fuzz.sh builds it, with
// -sanitize=fuzzer,address and its own scratch path (.build-fuzz); a plain
// `swift build` of SyndDB never needs libFuzzer.

// A path dependency is named after its folder, whatever the checkout is called.
let syndDB = URL(fileURLWithPath: Context.packageDirectory).deletingLastPathComponent().lastPathComponent

let package = Package(
    name: "SyndFuzz",
    dependencies: [.package(path: "..")],
    targets: [
        .systemLibrary(name: "CLibFuzzer"),
        .executableTarget(
            name: "synd-fuzz",
            dependencies: ["CLibFuzzer", .product(name: "SyndFuzzTargets", package: syndDB)]
        ),
    ],
    swiftLanguageModes: [.v6]
)
