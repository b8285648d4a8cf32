// Fault injection for the file system calls of the engine and the cache,
// as LevelDB's fault-injection Env does it: a test arms a fault ("fail the
// Nth write to a path containing packs/ with ENOSPC", "make the 3rd write
// short, then fail the retry with EIO") and the call fails as the kernel
// would have failed it, so the engine's own error handling runs.
//
// The hooks sit in server/store/file_io.cc (open, write/pwrite,
// fsync/fdatasync, rename, link, unlink), in the cache's mmap call and in
// the SQLite VFS shim (server/store/sqlite_fault_vfs.h) for packs.idx.
// The injector lives in the cache library because that is the lowest
// server library both the engine and the cache link.
//
// Cost: with nothing armed and no counting, a hook is one relaxed atomic
// load. Production code never arms it.
//
// Thread-safety: every function may be called from any thread; the armed
// fault and the counters are process-wide and guarded by one mutex taken
// only while something is armed or counted. Calls are numbered in the
// order they reach the injector.
//
// How a call fails: a hook returns the errno to fail with (0: go ahead),
// and the caller behaves as if the system call had returned -1 with that
// errno. A short write is a write(2) or pwrite(2) that writes only the
// first half of what it was asked (the caller sees the smaller count and,
// like the kernel's callers, retries the rest); the retry then fails with
// the fault's errno unless that is 0.
//
//   FaultInjector::StartCounting("packs/");
//   ASSERT_TRUE(store->PutPacked({"x"}).ok());
//   uint64_t writes = FaultInjector::Calls(FaultOp::kWrite);
//   for (uint64_t n = 1; n <= writes; ++n) {
//     FaultInjector::Arm({.op = FaultOp::kWrite, .nth = n, .error = ENOSPC,
//                         .path_contains = "packs/"});
//     EXPECT_EQ(store->PutPacked({"y"}).status().code(),
//               absl::StatusCode::kResourceExhausted);
//     FaultInjector::Disarm();
//   }
#ifndef PACKSTORE_SERVER_CACHE_FAULT_INJECTION_H_
#define PACKSTORE_SERVER_CACHE_FAULT_INJECTION_H_

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace packstore {

// The calls a fault can be injected into.
enum class FaultOp : uint8_t {
  kOpen,      // open(2) of a file or directory (also O_TMPFILE), SQLite's xOpen
  kWrite,     // write(2), pwrite(2), SQLite's xWrite
  kSync,      // fsync(2), fdatasync(2) (of files and directories), SQLite's xSync
  kRename,    // rename(2)
  kLink,      // link(2), linkat(2)
  kUnlink,    // unlink(2), SQLite's xDelete
  kTruncate,  // SQLite's xTruncate
  kMmap,      // the region cache's mmap(2)
};
inline constexpr size_t kFaultOpCount = 8;
std::string_view FaultOpName(FaultOp op);

struct FaultSpec {
  FaultOp op = FaultOp::kWrite;
  // The call to fail, 1-based, counted among the calls of `op` that match
  // `path_contains` since Arm.
  uint64_t nth = 1;
  // The errno the call fails with (EIO, ENOSPC, EDQUOT, ...). With
  // short_write, 0 means the short write is the only fault.
  int error = EIO;
  // kWrite only: call `nth` writes half of what it was asked, and the calls
  // after it fail with `error`.
  bool short_write = false;
  // How many matching calls fail from the first failing one on; 0: every
  // one until Disarm (a disk that stays full).
  uint64_t times = 1;
  // Only calls on a path containing this count and fail (empty: all). For
  // calls on a descriptor, the path is what /proc/self/fd says it names;
  // for rename and link, either path.
  std::string path_contains;
};

class FaultInjector {
 public:
  // Arms `spec`, replacing any armed fault, and restarts the call counters
  // (which then count calls matching spec.path_contains).
  static void Arm(const FaultSpec& spec);
  // Counts calls of every op on paths containing `path_contains`, with no
  // fault armed: a dry run tells a test how many calls an operation makes.
  static void StartCounting(std::string path_contains = "");
  // Drops the armed fault and stops counting (the counters keep their
  // values for Calls and Injected).
  static void Disarm();
  // Matching calls of `op` seen since the last Arm or StartCounting.
  static uint64_t Calls(FaultOp op);
  // Faults injected (short writes included) since the last Arm.
  static uint64_t Injected();
  // The path of the call the last fault was injected into ("" if none).
  static std::string LastFaultPath();

  // --- Hooks, for the file layer ---
  // The errno a call of `op` on `path` (and `other_path`, for rename and
  // link) must fail with; 0 to proceed.
  static int Check(FaultOp op, std::string_view path, std::string_view other_path = {}) {
    if (!active_.load(std::memory_order_relaxed)) return 0;
    return CheckSlow(op, -1, path, other_path, nullptr);
  }
  // The same for a call on descriptor `fd`.
  static int CheckFd(FaultOp op, int fd) {
    if (!active_.load(std::memory_order_relaxed)) return 0;
    return CheckSlow(op, fd, {}, {}, nullptr);
  }
  // A write of `*size` bytes to `fd` (or `path`, when fd < 0): the errno to
  // fail with, or 0 to write `*size` bytes, which a short-write fault may
  // have lowered.
  static int CheckWrite(int fd, std::string_view path, size_t* size) {
    if (!active_.load(std::memory_order_relaxed)) return 0;
    return CheckSlow(FaultOp::kWrite, fd, path, {}, size);
  }

 private:
  static int CheckSlow(FaultOp op, int fd, std::string_view path, std::string_view other_path,
                       size_t* write_size);
  static std::atomic<bool> active_;
};

}  // namespace packstore

#endif  // PACKSTORE_SERVER_CACHE_FAULT_INJECTION_H_
