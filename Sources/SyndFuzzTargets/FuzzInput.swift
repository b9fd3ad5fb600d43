#if canImport(Glibc)
import Glibc
#endif

/// Reads a fuzzer's bytes as a few fields; past the end everything is empty or 0,
/// so every input means something.
struct FuzzInput {
    private let bytes: [UInt8]
    private var index = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var isAtEnd: Bool { index >= bytes.count }

    mutating func byte() -> UInt8 {
        guard index < bytes.count else { return 0 }
        defer { index += 1 }
        return bytes[index]
    }

    /// A chunk preceded by its 2-byte big-endian length (cut short at the end).
    mutating func chunk() -> [UInt8] {
        let n = Int(byte()) << 8 | Int(byte())
        return take(n)
    }

    mutating func take(_ n: Int) -> [UInt8] {
        let end = min(bytes.count, index + n)
        defer { index = end }
        return Array(bytes[min(index, end)..<end])
    }

    mutating func rest() -> [UInt8] { take(bytes.count) }
}

/// How a fuzz target reports a broken promise: a trap, which is what libFuzzer
/// (and a crashing regression test) records.
func violated(_ target: String, _ what: String) -> Never {
    fatalError("\(target): \(what)")
}

/// A private folder for this process's fuzz state, on tmpfs where there is one
/// (the store fsyncs every commit).
func scratchDirectory(_ name: String) -> String {
    var base = "/dev/shm"
    var info = stat()
    if stat(base, &info) != 0 { base = "/tmp" }
    let path = "\(base)/synd-fuzz-\(getpid())-\(name)"
    mkdir(path, 0o700)
    return path
}

/// Removes the files directly inside `directory` (the fuzz targets make no subfolders).
func emptyDirectory(_ directory: String) {
    guard let dir = opendir(directory) else { return }
    defer { closedir(dir) }
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
        guard name != "." && name != ".." else { continue }
        let path = directory + "/" + name
        // Folders too: the store keeps its log in one (`log/`).
        if unlink(path) != 0 {
            emptyDirectory(path)
            rmdir(path)
        }
    }
}
