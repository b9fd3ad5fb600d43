// synd-sqlite3: SQLite's command-line shell whose main database is a synddb
// database on a sequencer.
//
//     synd-sqlite3 --sequencer http://127.0.0.1:8433 app
//     SYNDDB_SEQUENCER=http://127.0.0.1:8433 synd-sqlite3 app
//
// Which names are remote: only the main database (the name on the command line,
// `.open NAME`) and a `file:` URI with `vfs=synddb` (e.g. `ATTACH
// 'file:other?vfs=synddb' AS o`; writes to an ATTACHed synddb database are
// refused). Every other file the shell is given is a local file, as in stock
// sqlite3: `.backup`, `.save`, `.restore`, `.clone`, `.import`, `.read`,
// `.output`, `ATTACH 'path'`, `VACUUM INTO 'path'`. A local path never silently
// becomes a remote database. `:memory:` and temporary databases stay local, and
// `.restore` from a file that does not exist is an error (stock sqlite3 would
// restore an empty database over main).
//
// How: the platform VFS stays SQLite's default and synddb is registered by name.
// scripts/fetch-sqlite-shell.sh patches the shell's open_db() to open the main
// database through "synddb-main" (Sources/CSQLiteShell/shell_wrapper.c), which
// sends the main database to synddb and every other file, ATTACHed ones
// included, to the platform VFS. Everything else is the stock shell.
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
    // Not the default: files the shell opens by itself must stay local.
    guard SyndVFS.register(makeDefault: false, api: synd_linked_sqlite_api(), printsOpenErrors: true) == SQLITE_OK,
        synd_shell_register_main_vfs() == SQLITE_OK
    else {
        let message = "synd-sqlite3: cannot register the synddb VFS\n"
        _ = message.withCString { write(2, $0, strlen($0)) }
        exit(1)
    }
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
