import Foundation

/// What `synd bench` reads about processes, files and the machine from
/// /proc and the file system (Linux).
enum BenchProc {
    /// Clock ticks per second of /proc/PID/stat's utime and stime.
    static var ticksPerSecond: Double { Double(sysconf(Int32(_SC_CLK_TCK))) }

    /// User plus system CPU seconds of process `pid`, all its threads, the
    /// ended ones included (/proc/PID/stat, utime + stime).
    static func cpuSeconds(pid: Int32) -> Double? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        // After "pid (comm)" come the fields from the third (state) on; utime
        // and stime are the 14th and 15th.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        return (user + system) / ticksPerSecond
    }

    /// CPU seconds of this process (getrusage, microsecond resolution).
    static func ownCPUSeconds() -> Double {
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        func s(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
        return s(usage.ru_utime) + s(usage.ru_stime)
    }

    /// A "kB" field of /proc/PID/status (VmRSS, VmHWM, ...), in bytes.
    static func status(pid: Int32, _ field: String) -> Int64? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix(field + ":") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            if parts.count >= 2, let kib = Int64(parts[1]) { return kib * 1024 }
        }
        return nil
    }

    /// Resets process `pid`'s peak RSS (VmHWM) to its current RSS (Linux 4.0+, writing 5 to clear_refs).
    static func resetPeak(pid: Int32) -> Bool {
        write("5", to: "/proc/\(pid)/clear_refs")
    }

    /// Writes the dirty pages of every file system, then drops the clean ones
    /// from the OS page cache (needs root; false when the kernel refuses).
    static func dropCaches() -> Bool {
        sync()
        return write("1", to: "/proc/sys/vm/drop_caches")
    }

    static func write(_ text: String, to path: String) -> Bool {
        let fd = open(path, O_WRONLY)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let bytes = Array(text.utf8)
        return bytes.withUnsafeBytes { Foundation.write(fd, $0.baseAddress, $0.count) } == bytes.count
    }

    struct DiskUse {
        /// Bytes of disk blocks the files take (st_blocks * 512).
        var allocated: Int64 = 0
        /// Sum of the files' sizes.
        var apparent: Int64 = 0
        /// Each file's path under the folder and its allocated bytes, largest first.
        var files: [(path: String, allocated: Int64)] = []
    }

    /// The regular files under `directory`, recursively.
    static func diskUse(_ directory: String) -> DiskUse {
        var use = DiskUse()
        guard let paths = FileManager.default.enumerator(atPath: directory) else { return use }
        for case let path as String in paths {
            var st = stat()
            guard lstat(directory + "/" + path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { continue }
            use.allocated += Int64(st.st_blocks) * 512
            use.apparent += Int64(st.st_size)
            use.files.append((path, Int64(st.st_blocks) * 512))
        }
        use.files.sort { $0.allocated > $1.allocated }
        return use
    }

    /// "AMD EPYC" (the first model name of /proc/cpuinfo).
    static func cpuModel() -> String {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return "unknown CPU" }
        for line in text.split(separator: "\n") where line.hasPrefix("model name") {
            if let colon = line.firstIndex(of: ":") { return line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces) }
        }
        return "unknown CPU"
    }

    /// "x86_64, Linux 6.1.0" (uname).
    static func system() -> String {
        var uts = utsname()
        uname(&uts)
        func text<T>(_ field: T) -> String {
            withUnsafeBytes(of: field) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
        }
        return "\(text(uts.machine)), \(text(uts.sysname)) \(text(uts.release))"
    }

    /// "at abc1234" (the git HEAD of the current folder, when it is this repository), with the uncommitted files counted; else nil.
    static func gitDescription() -> String? {
        guard FileManager.default.fileExists(atPath: "Sources/synd/BenchCommand.swift") else { return nil }
        func git(_ arguments: [String]) -> String? {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/git")
            process.arguments = arguments
            let output = Pipe()
            process.standardOutput = output
            process.standardError = FileHandle.nullDevice
            guard (try? process.run()) != nil else { return nil }
            let data = output.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            return process.terminationStatus == 0 ? String(decoding: data, as: UTF8.self) : nil
        }
        guard let head = git(["rev-parse", "--short", "HEAD"])?.trimmingCharacters(in: .whitespacesAndNewlines), !head.isEmpty else { return nil }
        let changed = git(["status", "--porcelain"])?.split(separator: "\n").filter { !$0.hasPrefix("??") }.count ?? 0
        let untracked = git(["status", "--porcelain"])?.split(separator: "\n").filter { $0.hasPrefix("??") }.count ?? 0
        var text = "at \(head)"
        if changed + untracked > 0 { text += " with \(changed) tracked files changed and \(untracked) untracked files (uncommitted)" }
        return text
    }

    /// Total memory, from /proc/meminfo, in GiB.
    static func memoryGiB() -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("MemTotal:") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            if parts.count >= 2, let kib = Double(parts[1]) { return Int((kib / 1_048_576).rounded()) }
        }
        return nil
    }

    /// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then closed).
    static func freePort() -> Int? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        return bound ? Int(UInt16(bigEndian: address.sin_port)) : nil
    }

    /// "12.3 MB" (10^6 bytes).
    static func megabytes(_ bytes: Int64) -> String { String(format: "%.1f MB", Double(bytes) / 1e6) }
}
