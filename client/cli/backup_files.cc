// The file operations of a backup: see backup_files.h.
#include "client/cli/backup_files.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <thread>

#include "common/status_util.h"
#include "common/str_cat.h"

namespace packstore::cli {
namespace {

constexpr uint64_t kKernelCopyStep = uint64_t{64} << 20;
constexpr size_t kCopyBuffer = size_t{1} << 20;

// Cleared for good once the kernel refuses copy_file_range between these
// file systems.
std::atomic<bool> kernel_copy{true};

absl::Status SqliteError(sqlite3* db, int rc, std::string_view what) {
  std::string message = StrCat(what, ": ", db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
  if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) return absl::UnavailableError(message);
  if (rc == SQLITE_CANTOPEN || rc == SQLITE_PERM || rc == SQLITE_READONLY) {
    return absl::PermissionDeniedError(message);
  }
  return absl::InternalError(message);
}

struct SqliteCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
using Database = std::unique_ptr<sqlite3, SqliteCloser>;

absl::StatusOr<Database> OpenDatabase(const std::string& path, int flags) {
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  Database db(raw);
  if (rc != SQLITE_OK) return SqliteError(raw, rc, StrCat("open ", path));
  return db;
}

absl::Status ReadPackEnds(sqlite3* db, IndexSnapshot& snapshot) {
  sqlite3_stmt* raw = nullptr;
  int rc = sqlite3_prepare_v2(
      db, "SELECT pack_id, MAX(\"offset\" + length), COUNT(*) FROM db_object GROUP BY pack_id", -1,
      &raw, nullptr);
  if (rc != SQLITE_OK) return SqliteError(db, rc, "read the index snapshot");
  std::unique_ptr<sqlite3_stmt, int (*)(sqlite3_stmt*)> stmt(raw, sqlite3_finalize);
  while ((rc = sqlite3_step(stmt.get())) == SQLITE_ROW) {
    snapshot.pack_ends[sqlite3_column_int64(stmt.get(), 0)] =
        static_cast<uint64_t>(sqlite3_column_int64(stmt.get(), 1));
    snapshot.rows += static_cast<uint64_t>(sqlite3_column_int64(stmt.get(), 2));
  }
  if (rc != SQLITE_DONE) return SqliteError(db, rc, "read the index snapshot");
  return absl::OkStatus();
}

}  // namespace

absl::Status CopyRange(int src, int dst, uint64_t from, uint64_t to, const BytesFn& on_bytes) {
  std::unique_ptr<char[]> buffer;
  uint64_t at = from;
  while (at < to) {
    if (kernel_copy.load(std::memory_order_relaxed)) {
      loff_t in = static_cast<loff_t>(at), out = static_cast<loff_t>(at);
      ssize_t n = ::copy_file_range(src, &in, dst, &out, std::min(to - at, kKernelCopyStep), 0);
      if (n > 0) {
        at += static_cast<uint64_t>(n);
        if (on_bytes) on_bytes(static_cast<uint64_t>(n));
        continue;
      }
      if (n == 0)
        return absl::DataLossError(StrCat("the file ended at ", at, " of ", to, " bytes"));
      if (errno == EINTR) continue;
      if (errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP &&
          errno != EPERM) {
        return ErrnoStatus(errno, "copy_file_range");
      }
      kernel_copy.store(false, std::memory_order_relaxed);
    }
    if (!buffer) buffer = std::make_unique_for_overwrite<char[]>(kCopyBuffer);
    size_t want = static_cast<size_t>(std::min<uint64_t>(to - at, kCopyBuffer));
    PACKSTORE_ASSIGN_OR_RETURN(size_t n, PreadUpTo(src, buffer.get(), want, at));
    if (n == 0) return absl::DataLossError(StrCat("the file ended at ", at, " of ", to, " bytes"));
    PACKSTORE_RETURN_IF_ERROR(PwriteAll(dst, std::string_view(buffer.get(), n), at));
    at += n;
    if (on_bytes) on_bytes(n);
  }
  return absl::OkStatus();
}

absl::Status CopyWholeFile(const std::string& from, const std::string& to,
                           const BytesFn& on_bytes) {
  PACKSTORE_ASSIGN_OR_RETURN(UniqueFd src, OpenFile(from, O_RDONLY));
  struct stat st;
  if (::fstat(src.get(), &st) != 0) return ErrnoStatus(errno, StrCat("stat ", from));
  if (!S_ISREG(st.st_mode)) return absl::InvalidArgumentError(StrCat(from, " is not a file"));
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  PACKSTORE_ASSIGN_OR_RETURN(UniqueFd dst, OpenFile(to, O_WRONLY | O_CREAT | O_EXCL, 0644));
  absl::Status copied = CopyRange(src.get(), dst.get(), 0, size, on_bytes);
  if (!copied.ok()) return Annotate(copied, StrCat("copy ", from));
  PACKSTORE_RETURN_IF_ERROR(Fsync(dst.get()));
  return dst.Close();
}

std::optional<int64_t> ParsePackId(const std::string& name) {
  if (name.empty() || name.size() > 18) return std::nullopt;
  if (name.size() > 1 && name[0] == '0') return std::nullopt;
  int64_t id = 0;
  for (char c : name) {
    if (c < '0' || c > '9') return std::nullopt;
    id = id * 10 + (c - '0');
  }
  return id;
}

absl::StatusOr<std::map<int64_t, HeldPack>> HoldPackFiles(const std::string& packs_dir) {
  PACKSTORE_ASSIGN_OR_RETURN(std::vector<std::string> names, ListDir(packs_dir));
  std::map<int64_t, HeldPack> held;
  for (const std::string& name : names) {
    std::optional<int64_t> id = ParsePackId(name);
    if (!id) continue;
    absl::StatusOr<UniqueFd> fd = OpenFile(JoinPath(packs_dir, name), O_RDONLY);
    if (absl::IsNotFound(fd.status())) continue;  // removed by a repack meanwhile
    if (!fd.ok()) return fd.status();
    struct stat st;
    if (::fstat(fd->get(), &st) != 0) return ErrnoStatus(errno, StrCat("stat pack ", name));
    held[*id] = HeldPack{std::move(*fd), st.st_dev, st.st_ino};
  }
  return held;
}

absl::StatusOr<IndexSnapshot> SnapshotIndex(const std::string& source, const std::string& dest,
                                            int busy_timeout_ms) {
  PACKSTORE_ASSIGN_OR_RETURN(Database src, OpenDatabase(source, SQLITE_OPEN_READONLY));
  sqlite3_busy_timeout(src.get(), busy_timeout_ms);
  PACKSTORE_ASSIGN_OR_RETURN(Database dst,
                             OpenDatabase(dest, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE));
  sqlite3_backup* backup = sqlite3_backup_init(dst.get(), "main", src.get(), "main");
  if (backup == nullptr) {
    return SqliteError(dst.get(), sqlite3_errcode(dst.get()), StrCat("back up ", source));
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(busy_timeout_ms);
  int rc;
  // One step for every page: the whole copy reads one snapshot.
  while ((rc = sqlite3_backup_step(backup, -1)) == SQLITE_BUSY || rc == SQLITE_LOCKED) {
    if (std::chrono::steady_clock::now() > deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  int finished = sqlite3_backup_finish(backup);
  if (rc != SQLITE_DONE) {
    return SqliteError(nullptr, rc, StrCat("back up ", source, " (busy past the timeout?)"));
  }
  if (finished != SQLITE_OK) return SqliteError(dst.get(), finished, StrCat("back up ", source));
  IndexSnapshot snapshot;
  PACKSTORE_RETURN_IF_ERROR(ReadPackEnds(dst.get(), snapshot));
  dst.reset();
  src.reset();
  PACKSTORE_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(dest, O_RDONLY));
  PACKSTORE_RETURN_IF_ERROR(Fsync(fd.get()));
  PACKSTORE_ASSIGN_OR_RETURN(snapshot.bytes, FileSize(fd.get()));
  return snapshot;
}

}  // namespace packstore::cli
