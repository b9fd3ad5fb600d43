// synd-sqlite3: SQLite's command-line shell with the synddb VFS as the default.
//
//     synd-sqlite3 --sequencer http://127.0.0.1:8433 app
//     SYNDDB_SEQUENCER=http://127.0.0.1:8433 synd-sqlite3 app
//
// Everything else is the stock shell: dot-commands, .mode, .dump, .import.
// `:memory:` and temp databases stay local.
import CSQLite
import CSQLiteShell
import SyndVFS

#if canImport(Glibc)
import Glibc
#endif

/// Called by the shell's main once its sqlite3_config calls are done.
@_cdecl("synd_shell_init")
public func synd_shell_init() {
    sqlite3_initialize()
    SyndVFS.register(makeDefault: true, api: synd_linked_sqlite_api(), printsOpenErrors: true)
}

// Take our own option out before the shell sees it.
var arguments: [String] = []
var iterator = CommandLine.arguments.makeIterator()
while let argument = iterator.next() {
    if argument == "--sequencer" || argument == "-sequencer" {
        guard let url = iterator.next() else {
            let message = "synd-sqlite3: --sequencer needs a URL, e.g. http://127.0.0.1:8433\n"
            _ = message.withCString { write(2, $0, strlen($0)) }
            exit(1)
        }
        setenv("SYNDDB_SEQUENCER", url, 1)
    } else if argument.hasPrefix("--sequencer=") {
        setenv("SYNDDB_SEQUENCER", String(argument.dropFirst("--sequencer=".count)), 1)
    } else {
        arguments.append(argument)
    }
}
var cArguments = arguments.map { strdup($0) }
cArguments.append(nil)
exit(synd_shell_main(Int32(arguments.count), &cArguments))
