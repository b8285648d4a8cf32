// BackupStore: see backup.h for the method and why it is consistent.
#include "client/cli/backup.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>

#include "client/cli/backup_destination.h"
#include "client/cli/backup_files.h"
#include "client/cli/folder_store.h"
#include "common/status_util.h"
#include "common/str_cat.h"

namespace packstore::cli {
namespace {

constexpr std::string_view kReadAdvice =
    ": backup reads the store's files directly, beside the daemon. Run it as packstored's user "
    "or root, or as a member of a group allowed to read the store folder";

absl::Status CheckReadable(const std::string& dir) {
  struct Need {
    std::string path;
    int mode;
  };
  const Need needs[] = {{dir, R_OK | X_OK},
                        {JoinPath(dir, "config.json"), R_OK},
                        {JoinPath(dir, "packs.idx"), R_OK},
                        {JoinPath(dir, "loose"), R_OK | X_OK},
                        {JoinPath(dir, "packs"), R_OK | X_OK}};
  for (const Need& need : needs) {
    if (::access(need.path.c_str(), need.mode) != 0) {
      absl::Status error = ErrnoStatus(errno, StrCat("cannot read ", need.path));
      if (!absl::IsPermissionDenied(error)) return error;
      return absl::PermissionDeniedError(StrCat(error.message(), kReadAdvice));
    }
  }
  return absl::OkStatus();
}

// Each pack the backup holds one descriptor for, and more than the usual
// 1024 packs may exist.
void RaiseFileLimit() {
  struct rlimit limit;
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &limit);
  }
}

// Copies one store into a partial backup folder; see backup.h.
class Copier {
 public:
  Copier(std::string source, std::string target, const BackupProgress& progress)
      : source_(std::move(source)), target_(std::move(target)), progress_(progress) {}

  absl::Status Prepare() {
    PACKSTORE_RETURN_IF_ERROR(MakeDir(target_));
    for (const char* sub : {"loose", "packs", "sandbox", "duplicates"}) {
      PACKSTORE_RETURN_IF_ERROR(MakeDir(JoinPath(target_, sub)));
    }
    return CopyWholeFile(JoinPath(source_, "config.json"), JoinPath(target_, "config.json"), {});
  }

  // Steps 1 to 4. Returns false (and why) when a pack changed under it.
  absl::StatusOr<bool> Attempt(int busy_timeout_ms, std::string* why) {
    PACKSTORE_RETURN_IF_ERROR(CopyLoose());
    PACKSTORE_ASSIGN_OR_RETURN(auto held, HoldPackFiles(JoinPath(source_, "packs")));
    std::string index = JoinPath(target_, "packs.idx");
    for (const char* suffix : {"", "-journal", "-wal", "-shm"}) {
      absl::Status removed = Unlink(index + suffix);
      if (!removed.ok() && !absl::IsNotFound(removed)) return removed;
    }
    PACKSTORE_ASSIGN_OR_RETURN(
        snapshot_, SnapshotIndex(JoinPath(source_, "packs.idx"), index, busy_timeout_ms));
    return CopyPacks(held, why);
  }

  absl::Status SyncFolders() {
    for (const std::string& dir : synced_dirs_) PACKSTORE_RETURN_IF_ERROR(FsyncDir(dir));
    for (const char* sub : {"loose", "packs", "sandbox", "duplicates", ""}) {
      PACKSTORE_RETURN_IF_ERROR(FsyncDir(JoinPath(target_, sub)));
    }
    return absl::OkStatus();
  }

  uint64_t loose_objects() const { return loose_objects_; }
  uint64_t packs() const { return copied_.size(); }
  uint64_t pack_bytes() const {
    uint64_t total = 0;
    for (const auto& [id, copy] : copied_) total += copy.length;
    return total;
  }
  uint64_t index_rows() const { return snapshot_.rows; }

 private:
  struct CopiedPack {
    dev_t device;
    ino_t inode;
    uint64_t length;
  };

  absl::Status CopyLoose() {
    std::string loose = JoinPath(source_, "loose");
    PACKSTORE_ASSIGN_OR_RETURN(std::vector<std::string> names, ListDir(loose));
    std::sort(names.begin(), names.end());
    for (const std::string& name : names) {
      std::string path = JoinPath(loose, name);
      struct stat st;
      if (::lstat(path.c_str(), &st) != 0) {
        if (errno == ENOENT) continue;
        return ErrnoStatus(errno, StrCat("stat ", path));
      }
      std::string into = JoinPath(JoinPath(target_, "loose"), name);
      if (S_ISREG(st.st_mode)) {
        PACKSTORE_RETURN_IF_ERROR(CopyLooseFile(path, into));
        continue;
      }
      if (!S_ISDIR(st.st_mode)) continue;
      absl::StatusOr<std::vector<std::string>> entries = ListDir(path);
      if (!entries.ok()) return entries.status();
      PACKSTORE_RETURN_IF_ERROR(MakeDir(into));
      synced_dirs_.insert(into);
      for (const std::string& entry : *entries) {
        PACKSTORE_RETURN_IF_ERROR(CopyLooseFile(JoinPath(path, entry), JoinPath(into, entry)));
      }
    }
    return absl::OkStatus();
  }

  // Loose objects never change, so one copied before need not be again.
  absl::Status CopyLooseFile(const std::string& from, const std::string& to) {
    if (PathExists(to)) return absl::OkStatus();
    std::string staged = JoinPath(JoinPath(target_, "sandbox"), StrCat("backup-", RandomHex(8)));
    absl::Status copied = CopyWholeFile(from, staged, {});
    // Gone meanwhile: packed, then cleaned; the index snapshot, taken
    // later, has it. Not a file: not an object either.
    if (absl::IsNotFound(copied) || absl::IsInvalidArgument(copied)) return absl::OkStatus();
    PACKSTORE_RETURN_IF_ERROR(copied);
    PACKSTORE_RETURN_IF_ERROR(Rename(staged, to));
    ++loose_objects_;
    if (progress_.files) progress_.files(Progress{"backup loose", loose_objects_, 0});
    return absl::OkStatus();
  }

  absl::StatusOr<bool> CopyPacks(std::map<int64_t, HeldPack>& held, std::string* why) {
    std::string packs = JoinPath(source_, "packs");
    // First check every pack, then copy: a retry comes before the bulk of
    // the bytes.
    std::map<int64_t, UniqueFd> sources;
    uint64_t total = 0;
    for (const auto& [id, end] : snapshot_.pack_ends) {
      auto it = held.find(id);
      if (it == held.end()) {
        *why = StrCat("pack ", id, " appeared after the packs were listed");
        return false;
      }
      absl::StatusOr<UniqueFd> fd = OpenFile(JoinPath(packs, std::to_string(id)), O_RDONLY);
      if (absl::IsNotFound(fd.status())) {
        *why = StrCat("pack ", id, " was removed (a repack?)");
        return false;
      }
      if (!fd.ok()) return fd.status();
      struct stat st;
      if (::fstat(fd->get(), &st) != 0) return ErrnoStatus(errno, StrCat("stat pack ", id));
      if (st.st_dev != it->second.device || st.st_ino != it->second.inode) {
        *why = StrCat("pack ", id, " was replaced (a repack?)");
        return false;
      }
      auto done = copied_.find(id);
      bool reusable = done != copied_.end() && done->second.inode == st.st_ino &&
                      done->second.device == st.st_dev;
      total += end - (reusable ? std::min(end, done->second.length) : 0);
      sources[id] = std::move(*fd);
    }
    uint64_t copied_bytes = 0;
    for (const auto& [id, end] : snapshot_.pack_ends) {
      PACKSTORE_RETURN_IF_ERROR(CopyPack(id, sources[id], end, total, copied_bytes));
    }
    // Packs copied by an earlier attempt that this snapshot does not use.
    for (auto it = copied_.begin(); it != copied_.end();) {
      if (snapshot_.pack_ends.contains(it->first)) {
        ++it;
        continue;
      }
      PACKSTORE_RETURN_IF_ERROR(
          Unlink(JoinPath(JoinPath(target_, "packs"), std::to_string(it->first))));
      it = copied_.erase(it);
    }
    return true;
  }

  // Copies pack `id` up to `end`; a copy made earlier from the same file
  // only needs the bytes after it (packs only grow).
  absl::Status CopyPack(int64_t id, const UniqueFd& src, uint64_t end, uint64_t total,
                        uint64_t& copied_bytes) {
    struct stat st;
    if (::fstat(src.get(), &st) != 0) return ErrnoStatus(errno, StrCat("stat pack ", id));
    std::string path = JoinPath(JoinPath(target_, "packs"), std::to_string(id));
    auto done = copied_.find(id);
    uint64_t from = 0;
    if (done != copied_.end() && done->second.inode == st.st_ino &&
        done->second.device == st.st_dev) {
      from = std::min(end, done->second.length);
    } else {
      absl::Status removed = Unlink(path);
      if (!removed.ok() && !absl::IsNotFound(removed)) return removed;
    }
    // Rows past the end of the file are copied as far as the file goes;
    // the validation reports them.
    end = std::min(end, static_cast<uint64_t>(st.st_size));
    PACKSTORE_ASSIGN_OR_RETURN(UniqueFd dst, OpenFile(path, O_WRONLY | O_CREAT, 0644));
    if (::ftruncate(dst.get(), static_cast<off_t>(std::max(from, end))) != 0) {
      return ErrnoStatus(errno, StrCat("truncate ", path));
    }
    PACKSTORE_RETURN_IF_ERROR(CopyRange(src.get(), dst.get(), from, end, [&](uint64_t n) {
      copied_bytes += n;
      if (progress_.bytes) progress_.bytes(Progress{"backup packs", copied_bytes, total});
    }));
    if (::ftruncate(dst.get(), static_cast<off_t>(end)) != 0) {
      return ErrnoStatus(errno, StrCat("truncate ", path));
    }
    PACKSTORE_RETURN_IF_ERROR(Fsync(dst.get()));
    PACKSTORE_RETURN_IF_ERROR(dst.Close());
    copied_[id] = CopiedPack{st.st_dev, st.st_ino, end};
    return absl::OkStatus();
  }

  const std::string source_;
  const std::string target_;
  const BackupProgress& progress_;
  IndexSnapshot snapshot_;
  std::map<int64_t, CopiedPack> copied_;
  std::set<std::string> synced_dirs_;
  uint64_t loose_objects_ = 0;
};

absl::StatusOr<std::string> StoreFolder(Store& store) {
  PACKSTORE_ASSIGN_OR_RETURN(StoreInfo info, store.Info());
  if (store.kind() == Store::Kind::kDaemon &&
      (info.container_dir.empty() || info.container_dir[0] != '/')) {
    return absl::FailedPreconditionError(
        StrCat("packstored reports its store folder as \"", info.container_dir,
               "\", a path relative to its own working folder: start it with an absolute --store "
               "path, or back up the folder with packstore --store DIR backup"));
  }
  return info.container_dir;
}

}  // namespace

absl::StatusOr<BackupReport> BackupStore(Store& store, const BackupRequest& request,
                                         const BackupProgress& progress) {
  if (request.keep < 1) return absl::InvalidArgumentError("--keep must be at least 1");
  BackupReport report;
  PACKSTORE_ASSIGN_OR_RETURN(report.source, StoreFolder(store));
  PACKSTORE_RETURN_IF_ERROR(CheckReadable(report.source));
  PACKSTORE_ASSIGN_OR_RETURN(BackupDestination dest, BackupDestination::Open(request.dest));
  RaiseFileLimit();
  std::string name = dest.NewName();
  report.path = dest.FinalPath(name);

  Copier copier(report.source, dest.PartialPath(name), progress);
  absl::Status copied = copier.Prepare();
  std::string why;
  while (copied.ok()) {
    ++report.attempts;
    absl::StatusOr<bool> consistent = copier.Attempt(request.busy_timeout_ms, &why);
    if (!consistent.ok()) {
      copied = consistent.status();
    } else if (*consistent) {
      break;
    } else if (report.attempts >= request.max_attempts) {
      copied =
          absl::AbortedError(StrCat("the store kept changing under the backup (", why, ", ",
                                    report.attempts, " attempts): try again when no repack runs"));
    }
  }
  if (copied.ok()) copied = copier.SyncFolders();
  if (copied.ok()) copied = dest.Publish(name);
  if (!copied.ok()) {
    std::error_code ignored;
    std::filesystem::remove_all(dest.PartialPath(name), ignored);
    if (absl::IsPermissionDenied(copied) &&
        std::string(copied.message()).find(report.source) != std::string::npos) {
      return absl::PermissionDeniedError(StrCat(copied.message(), kReadAdvice));
    }
    return copied;
  }
  report.loose_objects = copier.loose_objects();
  report.packs = copier.packs();
  report.pack_bytes = copier.pack_bytes();
  report.index_rows = copier.index_rows();

  if (request.validate) {
    PACKSTORE_ASSIGN_OR_RETURN(std::unique_ptr<FolderStore> backup,
                               FolderStore::Open(report.path, FolderStore::Access::kShared));
    PACKSTORE_ASSIGN_OR_RETURN(report.validation, backup->Validate(progress.validate));
    if (!report.validation->issues.empty()) return report;
  }
  PACKSTORE_RETURN_IF_ERROR(dest.Link(name));
  report.linked = true;
  PACKSTORE_ASSIGN_OR_RETURN(report.removed, dest.Prune(name, request.keep));
  return report;
}

}  // namespace packstore::cli
