#include "server/cache/descriptor_pool.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/cache/mutex_lock.h"

namespace packstore::cache_internal {

DescriptorPool::DescriptorPool(uint64_t max_open) : open_(max_open) {}

DescriptorPool::~DescriptorPool() {
  MutexLock lock(&mu_);
  for (auto& [id, entry] : entries_) {
    if (entry.fd >= 0) {
      close(entry.fd);
      open_.Sub(1);
    }
  }
}

absl::StatusOr<int> DescriptorPool::Acquire(const PackFileState& file) {
  {
    MutexLock lock(&mu_);
    auto it = entries_.find(file.id);
    if (it != entries_.end() && it->second.fd >= 0) {
      Entry& entry = it->second;
      if (entry.users++ == 0) UnlinkIdle(&entry);
      return entry.fd;
    }
  }

  while (!open_.TryAdd(1)) {
    if (!CloseIdle()) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "all ", open_.limit(), " pack file descriptors are in use; cannot open ", file.path));
    }
  }
  int fd = open(file.path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    open_.Sub(1);
    return absl::ErrnoToStatus(err, absl::StrCat("open pack file ", file.path));
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int err = errno;
    close(fd);
    open_.Sub(1);
    return absl::ErrnoToStatus(err, absl::StrCat("fstat pack file ", file.path));
  }
  if (st.st_dev != file.device || st.st_ino != file.inode) {
    close(fd);
    open_.Sub(1);
    return absl::FailedPreconditionError(absl::StrCat(
        "pack file ", file.path, " was replaced by another file while registered as #", file.id));
  }
  opens_.fetch_add(1, std::memory_order_relaxed);

  int duplicate = -1;
  {
    MutexLock lock(&mu_);
    Entry& entry = entries_[file.id];
    if (entry.fd >= 0) {
      // Another call opened it meanwhile; share theirs.
      duplicate = fd;
      fd = entry.fd;
    } else {
      entry.fd = fd;
    }
    if (entry.users++ == 0 && entry.idle) UnlinkIdle(&entry);
  }
  if (duplicate >= 0) {
    close(duplicate);
    open_.Sub(1);
  }
  return fd;
}

void DescriptorPool::Release(const PackFileState& file) {
  MutexLock lock(&mu_);
  Entry& entry = entries_.at(file.id);
  if (--entry.users == 0) LinkIdleNewest(&entry);
}

void DescriptorPool::Forget(const PackFileState& file) {
  int fd = -1;
  {
    MutexLock lock(&mu_);
    auto it = entries_.find(file.id);
    if (it == entries_.end()) return;
    if (it->second.idle) UnlinkIdle(&it->second);
    fd = it->second.fd;
    entries_.erase(it);
  }
  if (fd >= 0) {
    close(fd);
    open_.Sub(1);
  }
}

bool DescriptorPool::CloseIdle() {
  int fd = -1;
  {
    MutexLock lock(&mu_);
    Entry* victim = idle_oldest_;
    if (victim == nullptr) return false;
    UnlinkIdle(victim);
    fd = victim->fd;
    victim->fd = -1;
  }
  close(fd);
  open_.Sub(1);
  return true;
}

void DescriptorPool::LinkIdleNewest(Entry* entry) {
  entry->idle = true;
  entry->older = idle_newest_;
  entry->newer = nullptr;
  if (idle_newest_ != nullptr) {
    idle_newest_->newer = entry;
  } else {
    idle_oldest_ = entry;
  }
  idle_newest_ = entry;
}

void DescriptorPool::UnlinkIdle(Entry* entry) {
  if (!entry->idle) return;
  (entry->older != nullptr ? entry->older->newer : idle_oldest_) = entry->newer;
  (entry->newer != nullptr ? entry->newer->older : idle_newest_) = entry->older;
  entry->idle = false;
  entry->older = nullptr;
  entry->newer = nullptr;
}

}  // namespace packstore::cache_internal
