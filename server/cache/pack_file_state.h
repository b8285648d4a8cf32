// PackFileState: what the region cache knows about one registered pack file.
//
// Shared by the PackFile handles the engine holds and by the cache's own
// registry; the descriptor and the windows of the file live in the
// DescriptorPool and the WindowTable, keyed by `id`.
//
// Thread-safety: the const members never change and the others are
// atomics; retire_mu and retire_cv only let Retire sleep until the calls in
// flight end. Nothing here fails. Internal to server/cache.
#ifndef PACKSTORE_SERVER_CACHE_PACK_FILE_STATE_H_
#define PACKSTORE_SERVER_CACHE_PACK_FILE_STATE_H_

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <utility>

#include "absl/synchronization/mutex.h"

namespace packstore::cache_internal {

struct PackFileState {
  PackFileState(const void* owner, uint64_t id, std::string path, dev_t device, ino_t inode,
                uint64_t size)
      : owner(owner),
        id(id),
        path(std::move(path)),
        device(device),
        inode(inode),
        known_size(size) {}

  PackFileState(const PackFileState&) = delete;
  PackFileState& operator=(const PackFileState&) = delete;

  // Raises known_size to `size` unless it is already larger: files only grow.
  void ObserveSize(uint64_t size) {
    uint64_t current = known_size.load(std::memory_order_relaxed);
    while (size > current &&
           !known_size.compare_exchange_weak(current, size, std::memory_order_release,
                                             std::memory_order_relaxed)) {
    }
  }

  // The cache that registered the file; a handle from another cache is refused.
  const void* const owner;
  // Never reused within the process, even for the same path.
  const uint64_t id;
  const std::string path;
  // Identity at registration; a reopened descriptor must match it.
  const dev_t device;
  const ino_t inode;

  // Size at the last stat. Bytes below it are readable for as long as the
  // file exists because nothing truncates a pack; a read past it stats again.
  std::atomic<uint64_t> known_size;

  // Read and Pin calls running on this file. With `retired` it forms a
  // Dekker pair (both sequentially consistent): a call increments and then
  // checks `retired`; Retire sets `retired` and then waits for zero. So no
  // call that got past its check is still running when Retire returns.
  std::atomic<int64_t> calls_in_flight{0};
  std::atomic<bool> retired{false};
  absl::Mutex retire_mu;
  absl::CondVar retire_cv;
};

}  // namespace packstore::cache_internal

#endif  // PACKSTORE_SERVER_CACHE_PACK_FILE_STATE_H_
