#include "server/cache/window_table.h"

#include <algorithm>

#include "server/cache/mutex_lock.h"

namespace packstore::cache_internal {
namespace {

// splitmix64's finalizer: spreads consecutive window indexes of one file
// over all shards.
uint64_t Mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

}  // namespace

WindowTable::WindowTable(LimitedGauge* pinned, uint64_t capacity)
    : pinned_(pinned), aging_period_(std::max<uint64_t>(4096, 32 * capacity)) {}

uint64_t WindowTable::KeyHash(uint64_t file_id, uint64_t index) {
  return Mix(file_id * 0x9e3779b97f4a7c15ULL + index);
}

void WindowTable::AgeLocked(Shard& shard) {
  const uint64_t period = lookups_reported_.load(std::memory_order_relaxed) / aging_period_;
  if (period == shard.aged_to) return;
  // Eight halvings empty any count.
  const uint64_t halvings = std::min<uint64_t>(period - shard.aged_to, 8);
  for (uint8_t& count : shard.frequency) count >>= halvings;
  shard.aged_to = period;
}

uint32_t WindowTable::CountLookup(Shard& shard, uint64_t hash) {
  AgeLocked(shard);
  if (++shard.lookups_unreported == kLookupBatch) {
    shard.lookups_unreported = 0;
    lookups_reported_.fetch_add(kLookupBatch, std::memory_order_relaxed);
  }
  uint8_t& count = FrequencySlot(shard, hash);
  if (count < kMaxFrequency) ++count;
  return count;
}

Window* WindowTable::PinIfPresent(uint64_t file_id, uint64_t index, uint64_t needed,
                                  uint64_t file_bytes, uint32_t* frequency) {
  const uint64_t hash = KeyHash(file_id, index);
  Shard& shard = ShardFor(hash);
  MutexLock lock(&shard.mu);
  *frequency = CountLookup(shard, hash);
  auto it = shard.windows.find(std::make_pair(file_id, index));
  if (it == shard.windows.end()) {
    ++shard.misses;
    return nullptr;
  }
  Window* window = it->second;
  if (window->valid < needed) {
    // The file grew since the window was mapped; the mapping may reach the
    // new bytes already.
    window->valid = std::max(window->valid, std::min(window->mapped_length, file_bytes));
    if (window->valid < needed) {
      ++shard.misses;
      return nullptr;
    }
  }
  ++shard.hits;
  PinLocked(shard, window);
  return window;
}

Window* WindowTable::InsertPinned(Window* fresh, uint64_t needed, uint64_t file_bytes,
                                  std::vector<Window*>* unmap) {
  Shard& shard = ShardFor(KeyHash(fresh->file_id, fresh->index));
  MutexLock lock(&shard.mu);
  auto [it, inserted] =
      shard.windows.try_emplace(std::make_pair(fresh->file_id, fresh->index), fresh);
  if (!inserted) {
    Window* existing = it->second;
    existing->valid = std::max(existing->valid, std::min(existing->mapped_length, file_bytes));
    if (existing->valid >= needed) {
      PinLocked(shard, existing);
      unmap->push_back(fresh);
      return existing;
    }
    RemoveLocked(shard, existing, unmap);
    shard.windows.emplace(std::make_pair(fresh->file_id, fresh->index), fresh);
  }
  fresh->in_table = true;
  PinLocked(shard, fresh);
  return fresh;
}

bool WindowTable::Unpin(Window* window) {
  Shard& shard = ShardFor(KeyHash(window->file_id, window->index));
  MutexLock lock(&shard.mu);
  if (--window->pins > 0) return false;
  pinned_->Sub(1);
  if (!window->in_table) return true;
  LinkNewest(shard, window);
  return false;
}

Window* WindowTable::TakeLeastRecentlyUsed() {
  // The chosen shard's head can change between reading the stamps and
  // taking its lock; then choose again, a bounded number of times, so that
  // a stream of concurrent releases cannot keep eviction looping.
  constexpr int kAttempts = 2 * kShards;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    uint64_t best_stamp = kNoStamp;
    Shard* best = OldestShard(&best_stamp);
    if (best == nullptr) return nullptr;
    MutexLock lock(&best->mu);
    Window* victim = best->oldest;
    if (victim == nullptr) continue;
    if (victim->released_at != best_stamp && attempt + 1 < kAttempts) continue;
    best->windows.erase(std::make_pair(victim->file_id, victim->index));
    victim->in_table = false;
    Unlink(*best, victim);
    return victim;
  }
  return nullptr;
}

int64_t WindowTable::LeastRecentlyUsedFrequency() {
  uint64_t best_stamp = kNoStamp;
  Shard* best = OldestShard(&best_stamp);
  if (best == nullptr) return -1;
  MutexLock lock(&best->mu);
  if (best->oldest == nullptr) return -1;
  AgeLocked(*best);
  return FrequencySlot(*best, KeyHash(best->oldest->file_id, best->oldest->index));
}

void WindowTable::TakeReleasedBefore(uint64_t stamp, std::vector<Window*>* unmap) {
  for (Shard& shard : shards_) {
    MutexLock lock(&shard.mu);
    while (shard.oldest != nullptr && shard.oldest->released_at < stamp) {
      RemoveLocked(shard, shard.oldest, unmap);
    }
  }
}

void WindowTable::RemoveFile(uint64_t file_id, std::vector<Window*>* unmap) {
  for (Shard& shard : shards_) {
    MutexLock lock(&shard.mu);
    // Erasing leaves the other iterators of a flat_hash_map valid.
    for (auto it = shard.windows.begin(); it != shard.windows.end();) {
      Window* window = (it++)->second;
      if (window->file_id == file_id) RemoveLocked(shard, window, unmap);
    }
  }
}

void WindowTable::RemoveAll(std::vector<Window*>* unmap) {
  for (Shard& shard : shards_) {
    MutexLock lock(&shard.mu);
    for (auto it = shard.windows.begin(); it != shard.windows.end();) {
      RemoveLocked(shard, (it++)->second, unmap);
    }
  }
}

WindowTable::Shard* WindowTable::OldestShard(uint64_t* stamp) {
  Shard* oldest = nullptr;
  *stamp = kNoStamp;
  for (Shard& shard : shards_) {
    const uint64_t candidate = shard.oldest_stamp.load(std::memory_order_acquire);
    if (candidate < *stamp) {
      *stamp = candidate;
      oldest = &shard;
    }
  }
  return oldest;
}

WindowTable::Counts WindowTable::counts() const {
  Counts counts;
  for (const Shard& shard : shards_) {
    MutexLock lock(&shard.mu);
    counts.hits += shard.hits;
    counts.misses += shard.misses;
  }
  return counts;
}

void WindowTable::PinLocked(Shard& shard, Window* window) {
  if (window->pins++ > 0) return;
  pinned_->Add(1);
  // An unpinned window in the table is in its shard's list; a fresh one is
  // in no list yet.
  if (window->released_at != 0) Unlink(shard, window);
}

void WindowTable::LinkNewest(Shard& shard, Window* window) {
  window->released_at = next_stamp_.fetch_add(1, std::memory_order_relaxed);
  window->older = shard.newest;
  window->newer = nullptr;
  if (shard.newest != nullptr) {
    shard.newest->newer = window;
  } else {
    shard.oldest = window;
    shard.oldest_stamp.store(window->released_at, std::memory_order_release);
  }
  shard.newest = window;
}

void WindowTable::Unlink(Shard& shard, Window* window) {
  if (window->older != nullptr) {
    window->older->newer = window->newer;
  } else {
    shard.oldest = window->newer;
    shard.oldest_stamp.store(shard.oldest != nullptr ? shard.oldest->released_at : kNoStamp,
                             std::memory_order_release);
  }
  if (window->newer != nullptr) {
    window->newer->older = window->older;
  } else {
    shard.newest = window->older;
  }
  window->older = nullptr;
  window->newer = nullptr;
  window->released_at = 0;
}

void WindowTable::RemoveLocked(Shard& shard, Window* window, std::vector<Window*>* unmap) {
  shard.windows.erase(std::make_pair(window->file_id, window->index));
  window->in_table = false;
  if (window->pins == 0) {
    Unlink(shard, window);
    unmap->push_back(window);
  }
}

}  // namespace packstore::cache_internal
