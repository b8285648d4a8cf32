// RegionCache: how the daemon reads pack files. Bytes are copied (Read) or
// viewed in place (Pin) out of memory-mapped windows of the files, under
// hard limits on mapped bytes, windows and open descriptors.
//
//   absl::StatusOr<std::unique_ptr<RegionCache>> cache =
//       RegionCache::Create(RegionCacheOptions{});
//   absl::StatusOr<PackFile> pack = (*cache)->Register(pack_path);
//
//   // Copy an object out.
//   std::string bytes(length, '\0');
//   absl::Status status = (*cache)->Read(*pack, offset, bytes.data(), length);
//
//   // Or decompress it in place, one window at a time.
//   while (length > 0) {
//     absl::StatusOr<RegionPin> pin = (*cache)->Pin(*pack, offset, length);
//     if (!pin.ok()) return pin.status();
//     if (!pin->mapped()) break;  // limits reached: Read the rest instead
//     decoder.Feed(pin->bytes());
//     offset += pin->bytes().size();
//     length -= pin->bytes().size();
//   }
//
//   // Once the index no longer points into the pack, before unlinking it.
//   status = (*cache)->Retire(*pack);
//
// Windows. A file is mapped in windows of window_size bytes (a power of two,
// page-aligned) keyed by (file identity, window index). The identity is
// assigned by Register and never reused in the process, so a repacked pack
// is a new file even when it keeps its number. A read that crosses a window
// boundary continues in the next window; Pin stops at the boundary and the
// caller loops.
//
// Pins. A window stays mapped while pinned: by a RegionPin, and by Read
// while it copies. Unpinned windows are kept in least-recently-used order
// (exact, across all shards) and the oldest is unmapped when a new window
// would pass a limit. UnmapIdle, called on a timer, unmaps the ones nobody
// used since its previous call.
//
// Limits. Mapped bytes, windows and open descriptors never exceed their
// limits, counted as the process really holds them: room is reserved
// before mmap/open and given back after munmap/close. When a window cannot
// be mapped because every mapped window is pinned (or mmap fails), Read
// copies that part with pread and Pin returns an unmapped RegionPin: no
// failure, no waiting.
//
// Which misses map. Mapping costs far more than one pread (see
// RegionCacheOptions), so two rules keep windows for data read again:
// a small Read whose window was not looked up lately is copied with pread
// (first_miss_pread_max_bytes), and a window that would evict another is
// mapped only if it was looked up more often lately than that victim
// (admit_by_frequency). A miss they decline is served like a full cache.
//
// Growth. A pack being appended to may be read while it grows: a read past
// the size seen last stats the file again. The last window of a file maps
// up to the next MiB past its end (kTailMappingGranularity), so appends
// within that are read through the same mapping; past it, a longer mapping
// replaces the window (readers of the old one keep it until they unpin).
// Nothing may truncate a registered file: bytes below a size once seen are
// read without further checks.
//
// Retirement. Retire drops a file's windows (each as soon as it is
// unpinned) and closes its descriptor. Calls on the file that are running
// when Retire starts complete first; later calls fail. Until Retire the
// cache may close an idle descriptor (max_open_files) and reopen the file
// by path, so retire before unlinking: a reopen that finds no file, or
// another one (device and inode differ), fails instead of reading it.
//
// Thread-safety: a RegionCache is safe for concurrent use by any number of
// threads without external locking. A hit takes the lock of one of sixteen
// shards to pin and again to unpin, and writes three shared counters: the
// file's count of calls in flight, the LRU release stamp and the pinned
// window gauge. Exact LRU order across shards and an exact pinned peak need
// the last two; contended, each costs a cache-line transfer, well below the
// 0.5 us a random 1 KiB copy out of a mapping took in the benchmark. No
// lock is held across mmap, munmap, pread, open or a copy that may fault.
// A RegionPin belongs to one thread at a time; PackFile handles may be
// copied and used freely.
//
// Failures (every call returns a Status, none throws):
//   Register: the stat error (NOT_FOUND for a missing file, ...),
//     FAILED_PRECONDITION when the path is not a regular file.
//   Read, Pin: INVALID_ARGUMENT for a handle from no or another cache, or
//     (Pin) n == 0; FAILED_PRECONDITION once the file is retired or when
//     its path names another file than the registered one; OUT_OF_RANGE
//     when the file is shorter than offset + n (nothing is copied); the
//     open/fstat/pread error; DATA_LOSS when pread meets the end of the file
//     below a size already seen; RESOURCE_EXHAUSTED when a descriptor is
//     needed and all max_open_files are in use by calls running right now.
//   Retire: INVALID_ARGUMENT for a handle from no or another cache.
//   Create: INVALID_ARGUMENT for options out of range. UnmapIdle, GetStats
//     and RegionPin do not fail.
#ifndef PACKSTORE_SERVER_CACHE_REGION_CACHE_H_
#define PACKSTORE_SERVER_CACHE_REGION_CACHE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace packstore {

namespace cache_internal {
struct PackFileState;
struct Window;
}  // namespace cache_internal

// Default limits; see RegionCacheOptions for the reasoning.
uint64_t DefaultMaxMappedBytes();
uint64_t DefaultMaxWindows();
uint64_t DefaultMaxOpenFiles();

struct RegionCacheOptions {
  // Bytes per window: a power of two, at least the page size. 64 MiB: one
  // mmap serves every object in 64 MiB of pack, a 4 GiB pack is 64 windows,
  // and the default budget holds 128. Smaller windows cost more mmap calls
  // and mappings for the same bytes; larger ones evict more at once.
  uint64_t window_size = uint64_t{64} << 20;

  // Most bytes mapped at once (address space; the data itself lives in the
  // kernel's page cache either way). 8 GiB on 64-bit hosts: a sliver of a
  // 128 TiB address space, whose page tables take at most 16 MiB when every
  // page is touched (8 bytes per 4 KiB page). 512 MiB on 32-bit hosts, a
  // sixth of their address space. Raise it when the packs read often are
  // larger, which the peak statistics show.
  uint64_t max_mapped_bytes = DefaultMaxMappedBytes();

  // Most windows mapped at once; each is one mapping (VMA) or less when the
  // kernel merges neighbours. Default: vm.max_map_count / 8, at most 4096,
  // because the process also maps libraries, thread stacks and allocator
  // arenas, and every mmap fails with ENOMEM once the count is reached.
  uint64_t max_windows = DefaultMaxWindows();

  // Most pack file descriptors open at once. Default: a quarter of the
  // soft RLIMIT_NOFILE at the time the options are built, between 4 and
  // 4096, leaving the rest to connections, SQLite and loose files. A
  // descriptor is needed only while a window is being mapped, the size
  // refreshed or a pread runs (idle ones stay open until the limit needs
  // them), so this bounds concurrent readers of distinct packs, not packs.
  uint64_t max_open_files = DefaultMaxOpenFiles();

  // A Read of at most this many bytes whose window is not mapped and was
  // not looked up lately (since its lookup count last aged to zero) is
  // copied with pread; the window is mapped at its next miss. A one-off
  // read in an unmapped 64 MiB window, pread against mmap + first touch +
  // munmap, measured by bench/region_cache_bench on a 2-core VM with the
  // page cache warm, over seven runs: 1 KiB 1.6-2.3 us vs 16-34 us, 64 KiB
  // 6-10 vs 20-41 us, 256 KiB 20-27 vs 29-65 us, 1 MiB 75-93 vs 68-81 us.
  // So a read up to 256 KiB that touches a window once does not pay for
  // mapping it. 0 maps at every miss.
  uint64_t first_miss_pread_max_bytes = uint64_t{256} << 10;

  // When mapping a window needs another unmapped, map it only if it was
  // looked up more than twice as often lately as the least recently used
  // window, the one it would evict (TinyLFU's admission rule, with a margin
  // because replacing a window costs hundreds of preads); otherwise Read
  // copies with pread and Pin returns an unmapped RegionPin. It matters
  // only when the packs read often do not fit the limits. Random 1 KiB
  // reads over 2 GiB with a 512 MiB budget, one thread, same run
  // (bench/region_cache_bench): pread 1.2 us, this rule 1.3 us, plain LRU
  // 20-28 us, as it maps, faults in and unmaps a window at almost every miss.
  // false: plain LRU, every miss maps.
  bool admit_by_frequency = true;
};

// A plain snapshot for the daemon's status call. Fields are read one by one
// while the cache runs, so they need not add up exactly.
struct RegionCacheStats {
  // Counters since the cache was created. A hit or a miss is one window
  // looked up by Read or Pin; a Read crossing windows looks up several.
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t evictions = 0;    // unpinned windows unmapped to make room
  uint64_t idle_unmaps = 0;  // unpinned windows unmapped by UnmapIdle
  uint64_t mmap_calls = 0;
  uint64_t mmap_failures = 0;
  uint64_t munmap_calls = 0;
  uint64_t munmap_failures = 0;
  // Read parts (one per window) copied with pread rather than from a
  // window, for any of the reasons counted next or a failed mmap.
  uint64_t pread_fallbacks = 0;
  uint64_t first_miss_preads = 0;  // by the first-miss rule
  uint64_t not_admitted = 0;       // misses not mapped by the admission rule (Read or Pin)
  uint64_t no_room = 0;            // misses not mapped: every mapped window pinned
  uint64_t unmapped_pins = 0;      // Pin calls answered with an unmapped RegionPin
  uint64_t descriptor_opens = 0;   // opens and reopens of pack files

  // Gauges: now, highest so far, and the limit they stay under.
  uint64_t mapped_bytes = 0;
  uint64_t mapped_bytes_peak = 0;
  uint64_t mapped_bytes_limit = 0;
  uint64_t windows = 0;
  uint64_t windows_peak = 0;
  uint64_t windows_limit = 0;
  uint64_t pinned_windows = 0;
  uint64_t pinned_windows_peak = 0;
  uint64_t open_files = 0;
  uint64_t open_files_peak = 0;
  uint64_t open_files_limit = 0;

  uint64_t registered_files = 0;
  uint64_t window_size = 0;
};

// A pack file registered with a RegionCache. Copies name the same
// registration; a default-constructed PackFile names none.
class PackFile {
 public:
  PackFile() = default;

  // Never reused in the process; 0 for a default-constructed PackFile.
  uint64_t id() const;
  // The path it was registered under; empty for a default-constructed one.
  const std::string& path() const;

 private:
  friend class RegionCache;
  explicit PackFile(std::shared_ptr<cache_internal::PackFileState> state);

  std::shared_ptr<cache_internal::PackFileState> state_;
};

class RegionCache;

// Keeps one window mapped and exposes bytes inside it. Move-only; releases
// its pin when destroyed or on Release.
class [[nodiscard]] RegionPin {
 public:
  RegionPin() = default;
  RegionPin(RegionPin&& other) noexcept;
  RegionPin& operator=(RegionPin&& other) noexcept;
  RegionPin(const RegionPin&) = delete;
  RegionPin& operator=(const RegionPin&) = delete;
  ~RegionPin();

  // False when no window could be mapped within the limits: read the range
  // with RegionCache::Read, which copies it with pread.
  bool mapped() const { return window_ != nullptr; }
  // The pinned bytes, empty unless mapped(). Valid until Release.
  std::string_view bytes() const { return bytes_; }
  void Release();

 private:
  friend class RegionCache;
  RegionPin(RegionCache* cache, cache_internal::Window* window, std::string_view bytes)
      : cache_(cache), window_(window), bytes_(bytes) {}

  RegionCache* cache_ = nullptr;
  cache_internal::Window* window_ = nullptr;
  std::string_view bytes_;
};

class RegionCache {
 public:
  // The last window of a file maps this far past the file's end (rounded
  // up, capped at window_size); see "Growth" above.
  static constexpr uint64_t kTailMappingGranularity = uint64_t{1} << 20;

  // INVALID_ARGUMENT when window_size is not a power of two of at least a
  // page, max_mapped_bytes cannot hold one window, or a limit is 0.
  static absl::StatusOr<std::unique_ptr<RegionCache>> Create(const RegionCacheOptions& options);

  // Unmaps every window and closes every descriptor.
  // REQUIRES: no RegionPin is held and no call is running.
  ~RegionCache();

  RegionCache(const RegionCache&) = delete;
  RegionCache& operator=(const RegionCache&) = delete;

  // Registers the file at `path` and returns its identity. Opens nothing
  // yet; the file is opened by path when first needed. The caller keeps
  // `path` naming this file until it calls Retire.
  absl::StatusOr<PackFile> Register(std::string path);

  // Ends `file`'s registration: waits for the Read and Pin calls on it that
  // are already running, then drops its windows (pinned ones at their last
  // release) and closes its descriptor. Retiring twice is harmless.
  absl::Status Retire(const PackFile& file);

  // Copies bytes [offset, offset + n) of `file` into dst[0, n).
  absl::Status Read(const PackFile& file, uint64_t offset, char* dst, size_t n);

  // Pins the window holding `offset` and returns a view of the bytes from
  // `offset` up to offset + n or the end of that window, whichever comes
  // first; or an unmapped RegionPin when no window can be mapped now.
  // OUT_OF_RANGE when the file is shorter than offset + n.
  absl::StatusOr<RegionPin> Pin(const PackFile& file, uint64_t offset, size_t n);

  // Unmaps the unpinned windows that nobody used since the previous call
  // and returns how many (the first call unmaps none). The daemon calls it
  // on a timer, so that windows of packs no longer read do not stay mapped
  // for as long as the limits allow. Does not fail.
  uint64_t UnmapIdle();

  RegionCacheStats GetStats() const;
  const RegionCacheOptions& options() const;

 private:
  class Impl;
  friend class RegionPin;

  explicit RegionCache(std::unique_ptr<Impl> impl);
  void Unpin(cache_internal::Window* window);

  std::unique_ptr<Impl> impl_;
};

}  // namespace packstore

#endif  // PACKSTORE_SERVER_CACHE_REGION_CACHE_H_
