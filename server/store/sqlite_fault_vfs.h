// A SQLite VFS that lets tests fail packs.idx's own I/O through the fault
// injector (server/cache/fault_injection.h): a shim over the default VFS
// (unix) whose xOpen, xWrite, xSync, xTruncate and xDelete first ask the
// injector, so the index commit a packed put waits for can fail like any
// other write of the engine.
//
// How the calls fail: with SQLITE_FULL for ENOSPC and EDQUOT, whichever
// call meets them (the engine maps it to RESOURCE_EXHAUSTED); else as the
// unix VFS fails them: an open with SQLITE_CANTOPEN, a write with
// SQLITE_IOERR_WRITE, sync, truncate and delete with SQLITE_IOERR_FSYNC,
// _TRUNCATE, _DELETE. A short write is completed by a second write, which
// the fault may fail (the unix VFS retries short writes the same way).
// Everything else is the default VFS's.
//
// Thread-safety: install once, before any container opens (SQLite picks a
// connection's VFS when it opens); the shim itself keeps no state.
//
//   ASSERT_TRUE(InstallSqliteFaultVfs().ok());  // in a test's main or SetUpTestSuite
//   FaultInjector::Arm({.op = FaultOp::kSync, .nth = 1, .path_contains = "packs.idx"});
#ifndef PACKSTORE_SERVER_STORE_SQLITE_FAULT_VFS_H_
#define PACKSTORE_SERVER_STORE_SQLITE_FAULT_VFS_H_

#include "absl/status/status.h"

namespace packstore {

// Registers the shim as SQLite's default VFS. Idempotent. INTERNAL if
// SQLite has no default VFS or refuses the registration.
absl::Status InstallSqliteFaultVfs();

}  // namespace packstore

#endif  // PACKSTORE_SERVER_STORE_SQLITE_FAULT_VFS_H_
