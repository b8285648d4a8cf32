// DescriptorPool: the read-only descriptors the region cache keeps open on
// registered pack files, never more than a hard limit.
//
// A descriptor is needed only while a window is being mapped, the file size
// is being refreshed or a pread runs; a mapped window needs none. So an
// idle descriptor stays open for its next use and is closed, least recently
// used first, when opening another one would pass the limit. A closed one
// is reopened by path: the engine keeps the path naming the same file until
// it retires it, and the reopened file's (device, inode) must match the one
// recorded at registration.
//
// Thread-safety: all members may be called concurrently. One mutex guards
// the bookkeeping; open, fstat and close run outside it.
//
// Failures: Acquire returns the open/fstat error, FAILED_PRECONDITION when
// the path now names another file, and RESOURCE_EXHAUSTED when every
// descriptor the limit allows is in use by a call running right now (this
// needs more concurrent readers of distinct packs than the limit).
//
// Internal to server/cache.
#ifndef PACKSTORE_SERVER_CACHE_DESCRIPTOR_POOL_H_
#define PACKSTORE_SERVER_CACHE_DESCRIPTOR_POOL_H_

#include <atomic>
#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/container/node_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/cache/limited_gauge.h"
#include "server/cache/pack_file_state.h"

namespace packstore::cache_internal {

class DescriptorPool {
 public:
  explicit DescriptorPool(uint64_t max_open);
  // Closes every descriptor. REQUIRES: no Acquire without its Release.
  ~DescriptorPool();

  DescriptorPool(const DescriptorPool&) = delete;
  DescriptorPool& operator=(const DescriptorPool&) = delete;

  // Returns an open descriptor on `file`, valid until the matching Release.
  absl::StatusOr<int> Acquire(const PackFileState& file);
  void Release(const PackFileState& file);

  // Closes the file's descriptor and forgets it.
  // REQUIRES: no Acquire of `file` without its Release.
  void Forget(const PackFileState& file);

  const LimitedGauge& open_descriptors() const { return open_; }
  uint64_t opens() const { return opens_.load(std::memory_order_relaxed); }

 private:
  struct Entry {
    int fd = -1;
    int64_t users = 0;
    // Links in the idle list, which holds open descriptors with no users.
    bool idle = false;
    Entry* older = nullptr;
    Entry* newer = nullptr;
  };

  // Closes the least recently used idle descriptor; false if there is none.
  bool CloseIdle();
  void LinkIdleNewest(Entry* entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UnlinkIdle(Entry* entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  LimitedGauge open_;
  std::atomic<uint64_t> opens_{0};

  absl::Mutex mu_;
  // Keyed by PackFileState::id; node-based so that idle links stay valid.
  absl::node_hash_map<uint64_t, Entry> entries_ ABSL_GUARDED_BY(mu_);
  Entry* idle_oldest_ ABSL_GUARDED_BY(mu_) = nullptr;
  Entry* idle_newest_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace packstore::cache_internal

#endif  // PACKSTORE_SERVER_CACHE_DESCRIPTOR_POOL_H_
