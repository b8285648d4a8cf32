// WindowTable: the region cache's mapped windows, found by (file id, window
// index), with their pin counts and one least-recently-used order over all
// unpinned windows.
//
// The table is split into shards by key hash, each with its own mutex, hash
// map and list of unpinned windows ordered by the stamp they got when their
// last pin was released. Stamps come from one counter shared by all shards,
// so the oldest stamp across the shards' list heads is the least recently
// used window of the whole table: eviction is exact LRU at O(shards), and
// hits on windows of different shards take different locks. Every step
// under a shard mutex makes no system call and is O(1), but for RemoveFile
// and RemoveAll (a scan) and aging (halving a shard's 1 KiB of counts once
// per aging period).
//
// Each shard also keeps an approximate, aging count of lookups per window
// key (TinyLFU's frequency sketch: a small saturating counter per hashed
// key, all halved every aging period), for the cache's admission rule: a
// window that would evict another is mapped only if it was looked up more
// often than its victim. Under random reads over more packs than the
// budget, plain LRU would unmap and map a window at nearly every miss, each
// costing many preads; with the rule the mapped set stays and the misses
// are preads.
//
// The table never maps or unmaps. A window that leaves it (evicted,
// replaced by a longer mapping, or dropped with its file) is handed back to
// the caller to unmap once no lock is held, or, when still pinned, by the
// Unpin that releases its last pin.
//
// Thread-safety: all members may be called concurrently. Nothing here
// fails: a miss, or no window to evict, is an answer, not an error.
// Internal to server/cache.
#ifndef PACKSTORE_SERVER_CACHE_WINDOW_TABLE_H_
#define PACKSTORE_SERVER_CACHE_WINDOW_TABLE_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "server/cache/limited_gauge.h"

namespace packstore::cache_internal {

// One mapping of [index * window_size, index * window_size + mapped_length)
// of a pack file. The const members never change; the others are guarded
// by the mutex of the shard the window's key belongs to.
struct Window {
  Window(uint64_t file_id, uint64_t index, char* base, uint64_t mapped_length, uint64_t valid)
      : file_id(file_id), index(index), base(base), mapped_length(mapped_length), valid(valid) {}

  const uint64_t file_id;
  const uint64_t index;
  char* const base;
  const uint64_t mapped_length;

  // Bytes from `base` the file is known to hold; reading them cannot fault
  // past the end of the file. Grows with the file up to mapped_length.
  uint64_t valid;
  int64_t pins = 0;
  // False once the window has left the table; its last Unpin then says so.
  bool in_table = false;
  // Release stamp and links in its shard's list while unpinned in the table.
  uint64_t released_at = 0;
  Window* older = nullptr;
  Window* newer = nullptr;
};

class WindowTable {
 public:
  // `pinned` counts windows with at least one pin; it must outlive the
  // table. `capacity`: about how many windows the limits let the cache map,
  // which sets the aging period.
  WindowTable(LimitedGauge* pinned, uint64_t capacity);
  // REQUIRES: the table is empty (RemoveAll was called).
  ~WindowTable() = default;

  WindowTable(const WindowTable&) = delete;
  WindowTable& operator=(const WindowTable&) = delete;

  // Pins and returns the window (file_id, index) if the table has one that
  // holds at least `needed` bytes, after extending its valid bytes to
  // `file_bytes` (what the file is now known to hold from the window's
  // start) as far as its mapping reaches. Returns null on a miss. Counts
  // the hit or the miss, and the lookup in the key's frequency, which it
  // stores in *frequency (1 for a key not looked up lately).
  Window* PinIfPresent(uint64_t file_id, uint64_t index, uint64_t needed, uint64_t file_bytes,
                       uint32_t* frequency);

  // The lookup frequency of the window TakeLeastRecentlyUsed would take
  // now; -1 when every window is pinned.
  int64_t LeastRecentlyUsedFrequency();

  // Puts `fresh`, a window just mapped and not yet in the table, into it
  // with one pin and returns it. If another call mapped the same window
  // meanwhile and that one holds `needed` bytes, pins and returns that one
  // and appends `fresh` to *unmap. A window that `fresh` replaces leaves the
  // table: appended to *unmap if unpinned.
  Window* InsertPinned(Window* fresh, uint64_t needed, uint64_t file_bytes,
                       std::vector<Window*>* unmap);

  // Drops one pin. Returns true when the window has left the table and that
  // was its last pin: the caller must unmap it.
  bool Unpin(Window* window);

  // Takes the least recently used unpinned window out of the table and
  // returns it for unmapping; null when every window is pinned.
  Window* TakeLeastRecentlyUsed();

  // A stamp later than every release so far: windows released from now on
  // get this one or later.
  uint64_t NextStamp() const { return next_stamp_.load(std::memory_order_relaxed); }

  // Takes every unpinned window last released before `stamp` out of the
  // table, appending them to *unmap.
  void TakeReleasedBefore(uint64_t stamp, std::vector<Window*>* unmap);

  // Takes every window of `file_id` (or every window) out of the table; the
  // unpinned ones are appended to *unmap, the pinned ones come back from
  // their last Unpin.
  void RemoveFile(uint64_t file_id, std::vector<Window*>* unmap);
  void RemoveAll(std::vector<Window*>* unmap);

  struct Counts {
    uint64_t hits = 0;
    uint64_t misses = 0;
  };
  Counts counts() const;

 private:
  // Sixteen: hits from a few dozen threads mostly take different locks, and
  // choosing a victim compares only sixteen list heads.
  static constexpr int kShards = 16;
  static constexpr uint64_t kNoStamp = ~uint64_t{0};
  // Per shard; 16K keys in all, far more than the windows the default
  // limits map, so that collisions rarely inflate a count.
  static constexpr int kFrequencySlots = 1024;
  // One byte per count.
  static constexpr uint8_t kMaxFrequency = 255;
  // Each shard adds its lookups to the shared aging clock in batches, so
  // that a lookup writes no cache line shared by all shards.
  static constexpr uint64_t kLookupBatch = 64;

  struct alignas(64) Shard {
    mutable absl::Mutex mu;
    absl::flat_hash_map<std::pair<uint64_t, uint64_t>, Window*> windows ABSL_GUARDED_BY(mu);
    // Unpinned windows in the table, oldest release first.
    Window* oldest ABSL_GUARDED_BY(mu) = nullptr;
    Window* newest ABSL_GUARDED_BY(mu) = nullptr;
    // oldest->released_at, or kNoStamp; written under mu, read without it
    // by eviction to choose a shard.
    std::atomic<uint64_t> oldest_stamp{kNoStamp};
    uint64_t hits ABSL_GUARDED_BY(mu) = 0;
    uint64_t misses ABSL_GUARDED_BY(mu) = 0;
    std::array<uint8_t, kFrequencySlots> frequency ABSL_GUARDED_BY(mu) = {};
    // Lookups not yet added to lookups_reported_, and the aging period the
    // counts were last brought up to.
    uint64_t lookups_unreported ABSL_GUARDED_BY(mu) = 0;
    uint64_t aged_to ABSL_GUARDED_BY(mu) = 0;
  };

  static uint64_t KeyHash(uint64_t file_id, uint64_t index);
  Shard& ShardFor(uint64_t hash) { return shards_[hash % kShards]; }
  static uint8_t& FrequencySlot(Shard& shard, uint64_t hash)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu) {
    return shard.frequency[(hash / kShards) % kFrequencySlots];
  }
  // The shard whose least recently used window is the oldest of all, and
  // that window's stamp; null when every window is pinned.
  Shard* OldestShard(uint64_t* stamp);
  // Halves the shard's counts once for every aging period that ended since
  // they were last aged; all shards thus age together, as one sketch.
  void AgeLocked(Shard& shard) ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  // Counts one lookup of the key and returns its frequency.
  uint32_t CountLookup(Shard& shard, uint64_t hash) ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  void PinLocked(Shard& shard, Window* window) ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  void LinkNewest(Shard& shard, Window* window) ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  void Unlink(Shard& shard, Window* window) ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  // Takes `window` out of the table; appends it to *unmap if unpinned.
  void RemoveLocked(Shard& shard, Window* window, std::vector<Window*>* unmap)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);

  LimitedGauge* const pinned_;
  // Lookups between two halvings of the counts: 32 per window the cache can
  // hold, at least 4096. TinyLFU's ten per entry suits caches whose misses
  // all cost the same; here a replaced window costs hundreds of preads, so
  // counts remember longer, long enough that windows read about equally
  // often keep about equal counts and random reads over more than the
  // budget rarely replace one (bench/region_cache_bench, 512 MiB budget).
  const uint64_t aging_period_;
  std::atomic<uint64_t> lookups_reported_{0};
  std::atomic<uint64_t> next_stamp_{1};
  std::array<Shard, kShards> shards_;
};

}  // namespace packstore::cache_internal

#endif  // PACKSTORE_SERVER_CACHE_WINDOW_TABLE_H_
