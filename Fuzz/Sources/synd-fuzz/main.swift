import CLibFuzzer
import SyndFuzzTargets

#if canImport(Glibc)
import Glibc
#endif

// The libFuzzer driver for every target in SyndFuzzTargets; SYND_FUZZ_TARGET
// picks one (scripts/fuzz.sh sets it), so one sanitizer build serves them all.

nonisolated(unsafe) private var selected: FuzzTargets.Target?

@_cdecl("LLVMFuzzerTestOneInput")
func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = size > 0 ? Array(UnsafeBufferPointer(start: data, count: size)) : []
    selected?.run(bytes)
    return 0
}

let name = getenv("SYND_FUZZ_TARGET").map { String(cString: $0) } ?? ""
guard let target = FuzzTargets.named(name) else {
    print("synd-fuzz: set SYND_FUZZ_TARGET to one of: \(FuzzTargets.all.map(\.name).joined(separator: ", "))")
    exit(2)
}
FuzzTargets.prepareProcess()
selected = target
var argc = CommandLine.argc
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv, fuzzerTestOneInput))
