#if canImport(Glibc)
import Glibc
#endif

func flushStandardOutput() {
    fflush(nil)
}

enum Environment {
    static func value(_ name: String) -> String? {
        getenv(name).map { String(cString: $0) }
    }
}
