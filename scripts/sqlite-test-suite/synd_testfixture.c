/*
** SyndDB's hooks into SQLite's testfixture (scripts/sqlite-test-suite.sh).
**
** Linked into testfixture, which is built with
**   -DSQLITE_EXTRA_INIT=synd_testfixture_init
** and whose test_tclsh.c is patched (build copy only) to call
** Synddb_TestInit(interp) next to SQLite's own Tcl test commands.
**
** synd_testfixture_init runs at the end of every sqlite3_initialize() (the Tcl
** tests shut SQLite down and initialize it again, which clears auto-extensions,
** so registering on every initialization matters). When SYNDDB_VFS_LIBRARY
** names libsyndvfs.so it loads the extension with its entry point
** sqlite3_syndvfs_default_init on a temporary :memory: connection, which makes
** "synddb" the default VFS. Without SYNDDB_VFS_LIBRARY nothing happens and the
** tests run on the stock unix VFS (--stock).
**
** Synddb_TestInit adds the Tcl command
**   synddb_vfs_delete FILENAME
** which calls xDelete of the default VFS when that VFS is synddb (a database
** name drops that database on the sequencer; journal names are no-ops) and
** does nothing on any other default VFS (Tcl's own [file delete] then removes
** the local file). tester.tcl's [file delete] wrapper calls it, so
** forcedelete, delete_file and [file delete] reach the VFS.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tcl.h>
#include "sqlite3.h"

int synd_testfixture_init(const char *unused){
  const char *path = getenv("SYNDDB_VFS_LIBRARY");
  sqlite3 *db = 0;
  char *err = 0;
  int rc;
  (void)unused;
  if( path==0 || path[0]==0 ) return SQLITE_OK;
  rc = sqlite3_open_v2(":memory:", &db, SQLITE_OPEN_READWRITE|SQLITE_OPEN_CREATE, 0);
  if( rc==SQLITE_OK ){
    sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 1, (int*)0);
    rc = sqlite3_load_extension(db, path, "sqlite3_syndvfs_default_init", &err);
  }
  if( rc!=SQLITE_OK ){
    fprintf(stderr, "synd_testfixture_init: loading %s failed (%d): %s\n",
            path, rc, err ? err : (db ? sqlite3_errmsg(db) : "cannot open :memory:"));
  }else{
    sqlite3_vfs *vfs = sqlite3_vfs_find(0);
    if( vfs==0 || strcmp(vfs->zName, "synddb")!=0 ){
      fprintf(stderr, "synd_testfixture_init: %s loaded but the default VFS is %s\n",
              path, vfs ? vfs->zName : "(none)");
      rc = SQLITE_ERROR;
    }
  }
  sqlite3_free(err);
  sqlite3_close(db);
  return rc;
}

/* synddb_vfs_delete FILENAME: xDelete(FILENAME) on the default VFS if it is
** synddb. Returns nothing; a failure (other than "no such file") is a Tcl
** error carrying SQLite's code and the VFS's detail. */
#ifndef SQLITE_TCLAPI
# define SQLITE_TCLAPI
#endif
static int SQLITE_TCLAPI syndVfsDeleteCmd(
  ClientData cd, Tcl_Interp *interp, int objc, Tcl_Obj *const objv[]
){
  sqlite3_vfs *vfs = sqlite3_vfs_find(0);
  const char *name;
  char *full;
  int rc;
  (void)cd;
  if( objc!=2 ){
    Tcl_WrongNumArgs(interp, 1, objv, "FILENAME");
    return TCL_ERROR;
  }
  if( vfs==0 || strcmp(vfs->zName, "synddb")!=0 ) return TCL_OK;
  name = Tcl_GetString(objv[1]);
  if( name[0]==0 ) return TCL_OK;
  full = sqlite3_malloc(vfs->mxPathname + 1);
  if( full==0 ) return TCL_ERROR;
  rc = vfs->xFullPathname(vfs, name, vfs->mxPathname + 1, full);
  if( rc==SQLITE_OK ){
    rc = vfs->xDelete(vfs, full, 0);
  }
  if( rc!=SQLITE_OK && rc!=SQLITE_IOERR_DELETE_NOENT ){
    char detail[512];
    detail[0] = 0;
    if( vfs->xGetLastError ) vfs->xGetLastError(vfs, (int)sizeof(detail), detail);
    Tcl_SetObjResult(interp, Tcl_ObjPrintf(
        "synddb_vfs_delete %s: xDelete failed with %s (%d)%s%s", full,
        sqlite3_errstr(rc), rc, detail[0] ? ": " : "", detail));
    sqlite3_free(full);
    return TCL_ERROR;
  }
  sqlite3_free(full);
  return TCL_OK;
}

int Synddb_TestInit(Tcl_Interp *interp){
  Tcl_CreateObjCommand(interp, "synddb_vfs_delete", syndVfsDeleteCmd, 0, 0);
  return TCL_OK;
}
