#!/usr/bin/env python3
"""Patches the BUILD COPY of SQLite's sources for scripts/sqlite-test-suite.sh.

Never applied to anything committed: SQLite's sources live only under the
git-ignored build directory. Each pattern must be found exactly once, or the
build fails (a new SQLite version must be looked at, not silently mis-patched).

  src/test_tclsh.c  sqlite3TestInit() also calls Synddb_TestInit(interp)
                    (scripts/sqlite-test-suite/synd_testfixture.c), which adds
                    the Tcl command synddb_vfs_delete.
  test/tester.tcl   [file delete] is wrapped: every name it deletes is first
                    passed to synddb_vfs_delete (xDelete of the default VFS when
                    that is synddb), so forcedelete, delete_file and the tests'
                    own [file delete] drop databases on the sequencer.
                    (reset_db's "./test.db" needs no change: synddb names
                    every spelling of one path one database.)
                    db_delete_and_reopen (faultsim_delete_and_reopen) deletes
                    the test.db* files glob finds on disk; a synddb test.db is
                    not on disk, so it first deletes test.db by name.
"""
import sys

MARKER_C = "/* SYNDDB_TESTFIXTURE_PATCH 1 */"
MARKER_TCL = "# SYNDDB_TESTER_PATCH 2"


def fail(message):
    sys.exit(f"patch_sources.py: {message}")


def replace_once(text, old, new, what):
    n = text.count(old)
    if n != 1:
        fail(f"{what}: expected the pattern once, found it {n} times: {old!r}")
    return text.replace(old, new)


def patch_tclsh(path):
    text = open(path, encoding="utf-8").read()
    if MARKER_C in text:
        return
    text = replace_once(
        text,
        "  TestRecover_Init(interp);\n",
        "  TestRecover_Init(interp);\n"
        "  { extern int Synddb_TestInit(Tcl_Interp*); Synddb_TestInit(interp); } " + MARKER_C + "\n",
        "test_tclsh.c sqlite3TestInit",
    )
    open(path, "w", encoding="utf-8").write(text)


TCL_WRAPPER = MARKER_TCL + r"""
# Added by scripts/sqlite-test-suite/patch_sources.py: [file delete] first
# asks the default VFS to delete each name (synddb_vfs_delete does nothing
# unless that VFS is synddb), then deletes the local file as before.
if {[info commands ::synddb_tcl_file] eq "" && [info commands synddb_vfs_delete] ne ""} {
  rename ::file ::synddb_tcl_file
  proc ::file {args} {
    if {[lindex $args 0] eq "delete"} {
      set names [lrange $args 1 end]
      while {[string match -* [lindex $names 0]]} {
        set opt [lindex $names 0]
        set names [lrange $names 1 end]
        if {$opt eq "--"} break
      }
      foreach name $names { synddb_vfs_delete $name }
    }
    uplevel 1 [list ::synddb_tcl_file {*}$args]
  }
}

"""


def patch_tester(path):
    text = open(path, encoding="utf-8").read()
    if MARKER_TCL in text:
        return
    text = replace_once(text, "proc delete_file {args} {\n", TCL_WRAPPER + "proc delete_file {args} {\n",
                        "tester.tcl delete_file")
    text = replace_once(
        text,
        "proc db_delete_and_reopen {{file test.db}} {\n  catch { db close }\n",
        "proc db_delete_and_reopen {{file test.db}} {\n  catch { db close }\n"
        "  forcedelete test.db ;# synddb: not a local file that glob finds\n",
        "tester.tcl db_delete_and_reopen",
    )
    open(path, "w", encoding="utf-8").write(text)


if __name__ == "__main__":
    top = sys.argv[1]
    patch_tclsh(f"{top}/src/test_tclsh.c")
    patch_tester(f"{top}/test/tester.tcl")
