// Pack files; see pack_files.h.
#include "server/store/pack_files.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>

#include "common/str_cat.h"
#include "common/status_util.h"

namespace packstore {

std::optional<int64_t> ParsePackName(std::string_view name) {
  if (name == "-1") return -1;
  if (name.empty() || name.size() > 18 || (name.size() > 1 && name[0] == '0')) return std::nullopt;
  int64_t id = 0;
  auto [end, ec] = std::from_chars(name.data(), name.data() + name.size(), id);
  if (ec != std::errc() || end != name.data() + name.size() || id < 0) return std::nullopt;
  return id;
}

std::string PackFileTable::PathFor(int64_t id) const { return JoinPath(dir_, std::to_string(id)); }

namespace {

// A pack read through the region cache; retired from it once the last
// reader lets go.
class CachedPack : public StoredFile {
 public:
  CachedPack(RegionCache* cache, PackFile registration)
      : cache_(cache), registration_(std::move(registration)) {}
  ~CachedPack() override { cache_->Retire(registration_).IgnoreError(); }
  absl::Status ReadAt(uint64_t offset, char* dst, size_t n) const override {
    absl::Status status = cache_->Read(registration_, offset, dst, n);
    if (absl::IsOutOfRange(status)) {
      // The index points past the end of the file: the store is damaged,
      // not the request.
      return absl::DataLossError(StrCat("pack file ", Name(), " ends before byte ", offset + n,
                                        ", which the index points at: run Validate"));
    }
    return status;
  }
  // The path names the registered file until PackFileTable::Remove, which
  // the caller's shared hold of layout_mu() keeps out.
  absl::StatusOr<UniqueFd> OpenDescriptor() const override {
    absl::StatusOr<UniqueFd> fd = OpenFile(registration_.path(), O_RDONLY);
    if (absl::IsNotFound(fd.status())) {
      return absl::DataLossError(StrCat("pack file ", Name(), " is missing but the index points at it"));
    }
    return fd;
  }

 private:
  // "packs/N", as messages name packs (the full path is the store's
  // business, not a client's).
  std::string Name() const {
    const std::string& path = registration_.path();
    return StrCat("packs/", path.substr(path.rfind('/') + 1));
  }

  RegionCache* const cache_;
  const PackFile registration_;
};

absl::Status MissingPack(int64_t id) {
  return absl::DataLossError(
      StrCat("pack file packs/", id, " is missing but the index points at it"));
}

}  // namespace

absl::StatusOr<std::shared_ptr<const StoredFile>> PackFileTable::Get(int64_t id) {
  if (cache_ == nullptr) {
    auto fd = OpenFile(PathFor(id), O_RDONLY);
    if (absl::IsNotFound(fd.status())) return MissingPack(id);
    if (!fd.ok()) return fd.status();
    return std::make_shared<FdStoredFile>(std::move(*fd));
  }
  absl::MutexLock lock(&files_mu_);
  auto it = files_.find(id);
  if (it != files_.end()) return it->second;
  auto registration = cache_->Register(PathFor(id));
  if (absl::IsNotFound(registration.status())) return MissingPack(id);
  if (!registration.ok()) return registration.status();
  auto file = std::make_shared<CachedPack>(cache_, std::move(*registration));
  files_.emplace(id, file);
  return file;
}

absl::Status PackFileTable::Remove(int64_t id) {
  std::shared_ptr<const StoredFile> forgotten;  // released after the locks
  absl::MutexLock layout(&layout_mu_);
  {
    absl::MutexLock lock(&files_mu_);
    auto it = files_.find(id);
    if (it != files_.end()) {
      forgotten = std::move(it->second);
      files_.erase(it);
    }
  }
  absl::Status status = Unlink(PathFor(id));
  if (absl::IsNotFound(status)) return absl::OkStatus();
  return status;
}

absl::StatusOr<PackListing> PackFileTable::List() const {
  PACKSTORE_ASSIGN_OR_RETURN(std::vector<std::string> names, ListDir(dir_));
  PackListing listing;
  for (std::string& name : names) {
    if (auto id = ParsePackName(name)) {
      listing.ids.push_back(*id);
    } else if (std::string_view(name).ends_with(".lock") &&
               ParsePackName(std::string_view(name).substr(0, name.size() - 5))) {
      listing.locks.push_back(std::move(name));
    } else {
      listing.strays.push_back(std::move(name));
    }
  }
  std::sort(listing.ids.begin(), listing.ids.end());
  return listing;
}

PackWriter::PackWriter(std::string packs_dir, int64_t pack_size_target)
    : dir_(std::move(packs_dir)), target_(pack_size_target) {}

PackWriter::~PackWriter() { Abandon(); }

void PackWriter::Reset() {
  Abandon();
  next_candidate_ = 0;
}

absl::Status PackWriter::OpenPack(int64_t id, bool must_be_new) {
  std::string lock_path = JoinPath(dir_, StrCat(id, ".lock"));
  // Created with its content in one step: recovery keeps an empty lock (that
  // is disk-objectstore's), so a writer killed between creating the file
  // and writing it would otherwise lock this pack for good.
  absl::Status lock = CreateFileAtomically(dir_, lock_path, StrCat("packstore ", ::getpid(), "\n"));
  if (absl::IsAlreadyExists(lock) &&
      std::find(stale_locks_.begin(), stale_locks_.end(), lock_path) != stale_locks_.end()) {
    return absl::UnavailableError(StrCat("pack ", id, " keeps a lock this writer failed to remove (",
                                         lock_path, "); retrying its removal"));
  }
  if (absl::IsAlreadyExists(lock)) {
    return absl::UnavailableError(StrCat(
        "pack ", id, " is locked by another process (packs/", id,
        ".lock exists); if no other packer is running, remove that file"));
  }
  PACKSTORE_RETURN_IF_ERROR(Annotate(lock, StrCat("lock pack ", id)));
  held_locks_.push_back(lock_path);

  int flags = O_WRONLY | O_CREAT | (must_be_new ? O_EXCL : 0);
  std::string path = JoinPath(dir_, std::to_string(id));
  bool existed = PathExists(path);
  PACKSTORE_ASSIGN_OR_RETURN(current_fd_, OpenFile(path, flags, 0644));
  PACKSTORE_ASSIGN_OR_RETURN(current_size_, FileSize(current_fd_.get()));
  writeback_from_ = current_size_;
  current_id_ = id;
  created_file_ = created_file_ || !existed;
  return absl::OkStatus();
}

absl::Status PackWriter::ClosePack() {
  PACKSTORE_RETURN_IF_ERROR(Flush());
  if (current_fd_.valid()) unsynced_.emplace_back(current_id_, std::move(current_fd_));
  current_id_ = -1;
  return absl::OkStatus();
}

absl::StatusOr<PackWriter::Position> PackWriter::BeginObject() {
  if (current_id_ >= 0 && !fresh_only_ && current_size_ >= static_cast<uint64_t>(target_)) {
    PACKSTORE_RETURN_IF_ERROR(ClosePack());
    ++next_candidate_;
  }
  if (current_id_ < 0) {
    std::vector<std::string> stale = std::move(stale_locks_);
    stale_locks_.clear();
    for (const std::string& lock : stale) ReleaseLock(lock);
    // The lowest id whose file does not exist or is below the target, and
    // that no write or sync failed on.
    int64_t id = next_candidate_;
    while (true) {
      if (failed_.contains(id)) {
        ++id;
        continue;
      }
      auto size = PathSize(JoinPath(dir_, std::to_string(id)));
      if (absl::IsNotFound(size.status())) break;
      if (!size.ok()) return size.status();
      if (!fresh_only_ && *size < static_cast<uint64_t>(target_)) break;
      ++id;
    }
    next_candidate_ = id;
    PACKSTORE_RETURN_IF_ERROR(OpenPack(id, fresh_only_));
  }
  touched_.insert(current_id_);
  object_start_ = current_size_;
  return Position{current_id_, current_size_};
}

absl::Status PackWriter::Write(std::string_view data) {
  if (data.size() <= kBufferedWriteMax) {
    if (pending_.empty()) pending_at_ = current_size_;
    pending_.append(data);
    current_size_ += data.size();
    return pending_.size() >= kFlushAt ? Flush() : absl::OkStatus();
  }
  PACKSTORE_RETURN_IF_ERROR(Flush());
  PACKSTORE_RETURN_IF_ERROR(WriteAt(data, current_size_));
  current_size_ += data.size();
  return absl::OkStatus();
}

absl::Status PackWriter::Flush() {
  if (pending_.empty()) return absl::OkStatus();
  absl::Status status = WriteAt(pending_, pending_at_);
  pending_.clear();
  return status;
}

absl::Status PackWriter::WriteAt(std::string_view data, uint64_t offset) {
  absl::Status status = PwriteAll(current_fd_.get(), data, offset);
  if (!status.ok()) {
    // Whatever part was written is a hole now, and the pack is not
    // appended to again (see "Failures" in pack_files.h).
    failed_.insert(current_id_);
    auto size = FileSize(current_fd_.get());
    if (size.ok()) current_size_ = *size;
    return Annotate(status, StrCat("append to packs/", current_id_));
  }
  const uint64_t end = offset + data.size();
  if (end - writeback_from_ >= kWritebackStep) {
    // Start writing back what is already appended, so that the fdatasync
    // before the commit has little left to do. Advice only: errors surface
    // at the fdatasync.
    ::sync_file_range(current_fd_.get(), static_cast<off_t>(writeback_from_),
                      static_cast<off_t>(end - writeback_from_), SYNC_FILE_RANGE_WRITE);
    writeback_from_ = end;
  }
  return absl::OkStatus();
}

uint64_t PackWriter::EndObject() { return current_size_ - object_start_; }

absl::Status PackWriter::Commit() {
  absl::Status status = Flush();
  auto sync = [&](int64_t id, const UniqueFd& fd) {
    if (!status.ok()) return;
    status = Fdatasync(fd.get());
    if (status.ok()) return;
    failed_.insert(id);
    status = Annotate(status, StrCat("sync packs/", id));
  };
  for (const auto& [id, fd] : unsynced_) sync(id, fd);
  if (current_fd_.valid()) sync(current_id_, current_fd_);
  if (status.ok() && created_file_) status = FsyncDir(dir_);
  if (status.ok()) Abandon();
  return status;
}

void PackWriter::ReleaseLock(const std::string& path) {
  absl::Status status = Unlink(path);
  if (!status.ok() && !absl::IsNotFound(status)) stale_locks_.push_back(path);
}

void PackWriter::Abandon() {
  pending_.clear();
  unsynced_.clear();
  current_fd_ = UniqueFd();
  current_id_ = -1;
  created_file_ = false;
  fresh_only_ = false;
  touched_.clear();
  for (const std::string& lock : held_locks_) ReleaseLock(lock);
  held_locks_.clear();
}

}  // namespace packstore
