import ArgumentParser

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

/// The sequencer URL from --sequencer, else $SYNDDB_SEQUENCER.
func sequencerURL(_ option: String?) throws -> String {
    guard let url = option ?? Environment.value("SYNDDB_SEQUENCER") else {
        throw ValidationError("give --sequencer URL or set SYNDDB_SEQUENCER")
    }
    return url
}

/// Writes a line to standard error.
func printError(_ line: String) {
    let text = line + "\n"
    _ = text.withCString { write(2, $0, strlen($0)) }
}
