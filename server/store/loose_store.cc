// Loose objects; see loose_store.h.
#include "server/store/loose_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <ctime>
#include <memory>

#include "common/str_cat.h"
#include "common/hasher.h"
#include "common/status_util.h"
#include "server/store/pipelined_write.h"

namespace packstore {
namespace {

// Objects are streamed in pieces of this size: large enough that syscall
// and hashing overheads are amortized, small enough to stay in L2.
constexpr size_t kChunk = 1 << 20;
// A large object's file is written back in steps of this size while it is
// written (as packs are).
constexpr uint64_t kWritebackStep = 8 << 20;
// packstore's sandbox files start with this; others are disk-objectstore's.
constexpr std::string_view kSandboxPrefix = "ps-";

// Creates a sandbox file and flocks it; the lock, held until the fd closes,
// marks the file as in use. CleanSandbox may take the lock and unlink the
// file in the instant between our open and flock, so the path is checked to
// still name our file once we hold the lock.
absl::StatusOr<UniqueFd> CreateLockedSandboxFile(const std::string& sandbox_dir,
                                                 std::string* path) {
  for (int attempt = 0;; ++attempt) {
    *path = JoinPath(sandbox_dir, StrCat(kSandboxPrefix, RandomHex(16)));
    PACKSTORE_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(*path, O_WRONLY | O_CREAT | O_EXCL, 0644));
    struct stat by_fd, by_path;
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) == 0 && ::fstat(fd.get(), &by_fd) == 0 &&
        ::stat(path->c_str(), &by_path) == 0 && by_fd.st_ino == by_path.st_ino &&
        by_fd.st_dev == by_path.st_dev) {
      return fd;
    }
    if (attempt == 3) return absl::UnavailableError("cannot create a sandbox file in " + sandbox_dir);
  }
}

}  // namespace

LooseStore::LooseStore(std::string container_dir, int prefix_len, HashType hash_type)
    : loose_dir_(JoinPath(container_dir, "loose")),
      sandbox_dir_(JoinPath(container_dir, "sandbox")),
      prefix_len_(prefix_len),
      hash_type_(hash_type) {}

std::string LooseStore::PathFor(std::string_view key) const {
  if (prefix_len_ == 0) return JoinPath(loose_dir_, key);
  return StrCat(loose_dir_, "/", key.substr(0, prefix_len_), "/", key.substr(prefix_len_));
}

absl::StatusOr<WrittenObject> LooseStore::Write(ObjectSource& source) {
  std::string sandbox_path;
  PACKSTORE_ASSIGN_OR_RETURN(UniqueFd fd, CreateLockedSandboxFile(sandbox_dir_, &sandbox_path));
  bool renamed = false;
  struct RemoveUnlessRenamed {
    const std::string& path;
    const bool& renamed;
    ~RemoveUnlessRenamed() {
      if (!renamed) Unlink(path).IgnoreError();
    }
  } cleanup{sandbox_path, renamed};

  Hasher hasher(hash_type_);
  auto buf = std::make_unique_for_overwrite<char[]>(kChunk);
  uint64_t size = 0;
  PACKSTORE_ASSIGN_OR_RETURN(size_t n, source.Read(buf.get(), kChunk));
  if (n == kChunk) {
    // Large: each chunk is hashed while the previous one is written, and
    // writeback starts as the file grows, so the fsync has little left.
    uint64_t written = 0, writeback_from = 0;
    internal::PipelinedWrite writes(
        [&](std::string_view data) {
          PACKSTORE_RETURN_IF_ERROR(
              Annotate(WriteAll(fd.get(), data), "loose object: write " + sandbox_path));
          written += data.size();
          if (written - writeback_from >= kWritebackStep) {
            // Advice only: errors surface at the fsync.
            ::sync_file_range(fd.get(), static_cast<off_t>(writeback_from),
                              static_cast<off_t>(written - writeback_from), SYNC_FILE_RANGE_WRITE);
            writeback_from = written;
          }
          return absl::OkStatus();
        },
        kChunk);
    PACKSTORE_ASSIGN_OR_RETURN(size, writes.CopyFrom(std::string_view(buf.get(), n), source, hasher));
  } else {
    while (n != 0) {
      hasher.Update(buf.get(), n);
      PACKSTORE_RETURN_IF_ERROR(Annotate(WriteAll(fd.get(), std::string_view(buf.get(), n)),
                                         "loose object: write " + sandbox_path));
      size += n;
      PACKSTORE_ASSIGN_OR_RETURN(n, source.Read(buf.get(), kChunk));
    }
  }
  PACKSTORE_RETURN_IF_ERROR(Annotate(Fsync(fd.get()), "loose object: fsync " + sandbox_path));
  WrittenObject written{hasher.HexDigest(), size};

  std::string dest = PathFor(written.key);
  absl::Status status = Rename(sandbox_path, dest);
  if (absl::IsNotFound(status) && prefix_len_ > 0) {
    // First object with this prefix: make the folder durable before the
    // entry that goes in it.
    std::string prefix_dir = JoinPath(loose_dir_, written.key.substr(0, prefix_len_));
    PACKSTORE_RETURN_IF_ERROR(MakeDir(prefix_dir));
    PACKSTORE_RETURN_IF_ERROR(FsyncDir(loose_dir_));
    status = Rename(sandbox_path, dest);
  }
  PACKSTORE_RETURN_IF_ERROR(status);
  renamed = true;
  std::string dest_dir = prefix_len_ == 0
                             ? loose_dir_
                             : JoinPath(loose_dir_, written.key.substr(0, prefix_len_));
  PACKSTORE_RETURN_IF_ERROR(FsyncDir(dest_dir));
  return written;
}

absl::StatusOr<UniqueFd> LooseStore::Open(std::string_view key) const {
  return OpenFile(PathFor(key), O_RDONLY);
}

bool LooseStore::Exists(std::string_view key) const { return PathExists(PathFor(key)); }

absl::StatusOr<uint64_t> LooseStore::Size(std::string_view key) const {
  return PathSize(PathFor(key));
}

absl::Status LooseStore::Delete(std::string_view key) const {
  absl::Status status = Unlink(PathFor(key));
  if (absl::IsNotFound(status)) return absl::OkStatus();
  return status;
}

absl::Status LooseStore::ForEach(
    const std::function<absl::Status(const std::string&)>& on_object,
    const std::function<void(const std::string&)>& on_stray) const {
  PACKSTORE_ASSIGN_OR_RETURN(std::vector<std::string> top, ListDir(loose_dir_));
  for (const std::string& name : top) {
    if (prefix_len_ == 0) {
      if (ValidateKey(name, hash_type_).ok()) {
        PACKSTORE_RETURN_IF_ERROR(on_object(name));
      } else {
        on_stray(JoinPath(loose_dir_, name));
      }
      continue;
    }
    std::string dir = JoinPath(loose_dir_, name);
    auto entries = ListDir(dir);
    bool prefix_ok = name.size() == static_cast<size_t>(prefix_len_) &&
                     name.find_first_not_of("0123456789abcdef") == std::string::npos;
    if (!entries.ok() || !prefix_ok) {
      on_stray(dir);
      continue;
    }
    for (const std::string& rest : *entries) {
      std::string key = name + rest;
      if (ValidateKey(key, hash_type_).ok()) {
        PACKSTORE_RETURN_IF_ERROR(on_object(key));
      } else {
        on_stray(JoinPath(dir, rest));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> LooseStore::CleanSandbox(int64_t foreign_age_seconds) const {
  PACKSTORE_ASSIGN_OR_RETURN(std::vector<std::string> names, ListDir(sandbox_dir_));
  uint64_t removed = 0;
  int64_t now = static_cast<int64_t>(::time(nullptr));
  for (const std::string& name : names) {
    std::string path = JoinPath(sandbox_dir_, name);
    auto fd = OpenFile(path, O_RDONLY);
    if (!fd.ok()) continue;  // gone meanwhile
    if (::flock(fd->get(), LOCK_EX | LOCK_NB) != 0) continue;  // a writer holds it
    if (!std::string_view(name).starts_with(kSandboxPrefix)) {
      struct stat st;
      if (::fstat(fd->get(), &st) != 0 || now - st.st_mtime < foreign_age_seconds) continue;
    }
    if (Unlink(path).ok()) ++removed;
  }
  return removed;
}

}  // namespace packstore
