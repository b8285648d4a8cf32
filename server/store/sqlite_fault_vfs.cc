// SQLite VFS shim over the default VFS; see sqlite_fault_vfs.h.
#include "server/store/sqlite_fault_vfs.h"

#include <sqlite3.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <string>

#include "server/cache/fault_injection.h"

namespace packstore {
namespace {

// Our file: the shim's header, then the real VFS's file in the same
// allocation (SQLite allocates szOsFile bytes per open file).
struct ShimFile {
  sqlite3_file base;
  sqlite3_file* real;
  char path[512];  // for the injector's path filter; truncated if longer
};

sqlite3_vfs* RealVfs(sqlite3_vfs* vfs) { return static_cast<sqlite3_vfs*>(vfs->pAppData); }
sqlite3_file* Real(sqlite3_file* file) { return reinterpret_cast<ShimFile*>(file)->real; }
const char* PathOf(sqlite3_file* file) { return reinterpret_cast<ShimFile*>(file)->path; }

// A full disk or quota is SQLITE_FULL whichever call meets it (the engine
// maps it to RESOURCE_EXHAUSTED); anything else is the call's own error.
int ErrorFor(int err, int otherwise) {
  return err == ENOSPC || err == EDQUOT ? SQLITE_FULL : otherwise;
}
int WriteError(int err) { return ErrorFor(err, SQLITE_IOERR_WRITE); }

int ShimClose(sqlite3_file* f) {
  sqlite3_file* real = Real(f);
  int rc = real->pMethods ? real->pMethods->xClose(real) : SQLITE_OK;
  f->pMethods = nullptr;
  return rc;
}
int ShimRead(sqlite3_file* f, void* buf, int amount, sqlite3_int64 offset) {
  return Real(f)->pMethods->xRead(Real(f), buf, amount, offset);
}
int ShimWrite(sqlite3_file* f, const void* buf, int amount, sqlite3_int64 offset) {
  size_t size = static_cast<size_t>(amount);
  if (int err = FaultInjector::CheckWrite(-1, PathOf(f), &size)) return WriteError(err);
  sqlite3_file* real = Real(f);
  const int first = static_cast<int>(size);
  int rc = real->pMethods->xWrite(real, buf, first, offset);
  if (rc != SQLITE_OK || first == amount) return rc;
  // Short: the rest is a second write, which the fault may fail.
  size_t rest = static_cast<size_t>(amount - first);
  if (int err = FaultInjector::CheckWrite(-1, PathOf(f), &rest)) return WriteError(err);
  return real->pMethods->xWrite(real, static_cast<const char*>(buf) + first, amount - first,
                                offset + first);
}
int ShimTruncate(sqlite3_file* f, sqlite3_int64 size) {
  if (int err = FaultInjector::Check(FaultOp::kTruncate, PathOf(f))) {
    return ErrorFor(err, SQLITE_IOERR_TRUNCATE);
  }
  return Real(f)->pMethods->xTruncate(Real(f), size);
}
int ShimSync(sqlite3_file* f, int flags) {
  if (int err = FaultInjector::Check(FaultOp::kSync, PathOf(f))) {
    return ErrorFor(err, SQLITE_IOERR_FSYNC);
  }
  return Real(f)->pMethods->xSync(Real(f), flags);
}
int ShimFileSize(sqlite3_file* f, sqlite3_int64* size) {
  return Real(f)->pMethods->xFileSize(Real(f), size);
}
int ShimLock(sqlite3_file* f, int level) { return Real(f)->pMethods->xLock(Real(f), level); }
int ShimUnlock(sqlite3_file* f, int level) { return Real(f)->pMethods->xUnlock(Real(f), level); }
int ShimCheckReservedLock(sqlite3_file* f, int* out) {
  return Real(f)->pMethods->xCheckReservedLock(Real(f), out);
}
int ShimFileControl(sqlite3_file* f, int op, void* arg) {
  return Real(f)->pMethods->xFileControl(Real(f), op, arg);
}
int ShimSectorSize(sqlite3_file* f) { return Real(f)->pMethods->xSectorSize(Real(f)); }
int ShimDeviceCharacteristics(sqlite3_file* f) {
  return Real(f)->pMethods->xDeviceCharacteristics(Real(f));
}
int ShimShmMap(sqlite3_file* f, int page, int page_size, int extend, void volatile** out) {
  return Real(f)->pMethods->xShmMap(Real(f), page, page_size, extend, out);
}
int ShimShmLock(sqlite3_file* f, int offset, int n, int flags) {
  return Real(f)->pMethods->xShmLock(Real(f), offset, n, flags);
}
void ShimShmBarrier(sqlite3_file* f) { Real(f)->pMethods->xShmBarrier(Real(f)); }
int ShimShmUnmap(sqlite3_file* f, int delete_flag) {
  return Real(f)->pMethods->xShmUnmap(Real(f), delete_flag);
}
int ShimFetch(sqlite3_file* f, sqlite3_int64 offset, int amount, void** out) {
  return Real(f)->pMethods->xFetch(Real(f), offset, amount, out);
}
int ShimUnfetch(sqlite3_file* f, sqlite3_int64 offset, void* p) {
  return Real(f)->pMethods->xUnfetch(Real(f), offset, p);
}

// One method table per iVersion of the real file's: SQLite checks
// iVersion before calling the later methods, so ours must not claim more
// than the real file has.
sqlite3_io_methods MethodsFor(int version) {
  sqlite3_io_methods m{};
  m.iVersion = version;
  m.xClose = ShimClose;
  m.xRead = ShimRead;
  m.xWrite = ShimWrite;
  m.xTruncate = ShimTruncate;
  m.xSync = ShimSync;
  m.xFileSize = ShimFileSize;
  m.xLock = ShimLock;
  m.xUnlock = ShimUnlock;
  m.xCheckReservedLock = ShimCheckReservedLock;
  m.xFileControl = ShimFileControl;
  m.xSectorSize = ShimSectorSize;
  m.xDeviceCharacteristics = ShimDeviceCharacteristics;
  if (version >= 2) {
    m.xShmMap = ShimShmMap;
    m.xShmLock = ShimShmLock;
    m.xShmBarrier = ShimShmBarrier;
    m.xShmUnmap = ShimShmUnmap;
  }
  if (version >= 3) {
    m.xFetch = ShimFetch;
    m.xUnfetch = ShimUnfetch;
  }
  return m;
}
const sqlite3_io_methods kMethods[3] = {MethodsFor(1), MethodsFor(2), MethodsFor(3)};

int ShimOpen(sqlite3_vfs* vfs, const char* name, sqlite3_file* f, int flags,
             int* out_flags) {
  auto* shim = reinterpret_cast<ShimFile*>(f);
  shim->base.pMethods = nullptr;
  shim->real = reinterpret_cast<sqlite3_file*>(shim + 1);
  shim->path[0] = '\0';
  if (name != nullptr) {
    size_t n = std::min(std::strlen(name), sizeof(shim->path) - 1);
    std::memcpy(shim->path, name, n);
    shim->path[n] = '\0';
  }
  if (int err = FaultInjector::Check(FaultOp::kOpen, shim->path)) {
    return ErrorFor(err, SQLITE_CANTOPEN);
  }
  int rc = RealVfs(vfs)->xOpen(RealVfs(vfs), name, shim->real, flags, out_flags);
  if (shim->real->pMethods != nullptr) {
    int version = shim->real->pMethods->iVersion;
    shim->base.pMethods = &kMethods[std::min(std::max(version, 1), 3) - 1];
  }
  return rc;
}
int ShimDelete(sqlite3_vfs* vfs, const char* name, int sync_dir) {
  if (int err = FaultInjector::Check(FaultOp::kUnlink, name != nullptr ? name : "")) {
    return ErrorFor(err, SQLITE_IOERR_DELETE);
  }
  return RealVfs(vfs)->xDelete(RealVfs(vfs), name, sync_dir);
}
int ShimAccess(sqlite3_vfs* vfs, const char* name, int flags, int* out) {
  return RealVfs(vfs)->xAccess(RealVfs(vfs), name, flags, out);
}
int ShimFullPathname(sqlite3_vfs* vfs, const char* name, int n, char* out) {
  return RealVfs(vfs)->xFullPathname(RealVfs(vfs), name, n, out);
}
void* ShimDlOpen(sqlite3_vfs* vfs, const char* name) {
  return RealVfs(vfs)->xDlOpen(RealVfs(vfs), name);
}
void ShimDlError(sqlite3_vfs* vfs, int n, char* out) { RealVfs(vfs)->xDlError(RealVfs(vfs), n, out); }
void (*ShimDlSym(sqlite3_vfs* vfs, void* handle, const char* symbol))(void) {
  return RealVfs(vfs)->xDlSym(RealVfs(vfs), handle, symbol);
}
void ShimDlClose(sqlite3_vfs* vfs, void* handle) { RealVfs(vfs)->xDlClose(RealVfs(vfs), handle); }
int ShimRandomness(sqlite3_vfs* vfs, int n, char* out) {
  return RealVfs(vfs)->xRandomness(RealVfs(vfs), n, out);
}
int ShimSleep(sqlite3_vfs* vfs, int microseconds) {
  return RealVfs(vfs)->xSleep(RealVfs(vfs), microseconds);
}
int ShimCurrentTime(sqlite3_vfs* vfs, double* out) {
  return RealVfs(vfs)->xCurrentTime(RealVfs(vfs), out);
}
int ShimGetLastError(sqlite3_vfs* vfs, int n, char* out) {
  return RealVfs(vfs)->xGetLastError(RealVfs(vfs), n, out);
}
int ShimCurrentTimeInt64(sqlite3_vfs* vfs, sqlite3_int64* out) {
  return RealVfs(vfs)->xCurrentTimeInt64(RealVfs(vfs), out);
}

}  // namespace

absl::Status InstallSqliteFaultVfs() {
  static std::once_flag once;
  static absl::Status installed;
  std::call_once(once, [] {
    sqlite3_vfs* real = sqlite3_vfs_find(nullptr);
    if (real == nullptr) {
      installed = absl::InternalError("SQLite has no default VFS to wrap");
      return;
    }
    static sqlite3_vfs shim{};
    // Version 2 is all the engine's SQLite needs: the system-call
    // overrides of version 3 are the unix VFS's own business.
    shim.iVersion = 2;
    shim.szOsFile = static_cast<int>(sizeof(ShimFile)) + real->szOsFile;
    shim.mxPathname = real->mxPathname;
    shim.zName = "packstore-faults";
    shim.pAppData = real;
    shim.xOpen = ShimOpen;
    shim.xDelete = ShimDelete;
    shim.xAccess = ShimAccess;
    shim.xFullPathname = ShimFullPathname;
    shim.xDlOpen = ShimDlOpen;
    shim.xDlError = ShimDlError;
    shim.xDlSym = ShimDlSym;
    shim.xDlClose = ShimDlClose;
    shim.xRandomness = ShimRandomness;
    shim.xSleep = ShimSleep;
    shim.xCurrentTime = ShimCurrentTime;
    shim.xGetLastError = ShimGetLastError;
    shim.xCurrentTimeInt64 = ShimCurrentTimeInt64;
    if (int rc = sqlite3_vfs_register(&shim, /*makeDflt=*/1); rc != SQLITE_OK) {
      installed = absl::InternalError(std::string("cannot register the SQLite fault VFS: ") +
                                      sqlite3_errstr(rc));
    }
  });
  return installed;
}

}  // namespace packstore
