#include "server/cache/region_cache.h"

#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/cache/descriptor_pool.h"
#include "server/cache/fault_injection.h"
#include "server/cache/limited_gauge.h"
#include "server/cache/mutex_lock.h"
#include "server/cache/pack_file_state.h"
#include "server/cache/window_table.h"

namespace packstore {

using cache_internal::DescriptorPool;
using cache_internal::LimitedGauge;
using cache_internal::MutexLock;
using cache_internal::PackFileState;
using cache_internal::WaitOn;
using cache_internal::Window;
using cache_internal::WindowTable;

uint64_t DefaultMaxMappedBytes() {
  return sizeof(void*) >= 8 ? uint64_t{8} << 30 : uint64_t{512} << 20;
}

uint64_t DefaultMaxWindows() {
  // The kernel's default when the file cannot be read.
  uint64_t max_map_count = 65530;
  std::ifstream in("/proc/sys/vm/max_map_count");
  in >> max_map_count;
  return std::clamp<uint64_t>(max_map_count / 8, 1, 4096);
}

uint64_t DefaultMaxOpenFiles() {
  // Linux's usual soft limit when it cannot be read.
  uint64_t soft = 1024;
  struct rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    soft = limit.rlim_cur == RLIM_INFINITY ? uint64_t{1} << 20 : limit.rlim_cur;
  }
  return std::clamp<uint64_t>(soft / 4, 4, 4096);
}

namespace {

// Ids are process-wide so that no two registrations share one, whichever
// cache they belong to.
std::atomic<uint64_t> next_file_id{1};

// One Read or Pin call on a file, counted so that Retire can wait for it.
class CallScope {
 public:
  explicit CallScope(PackFileState& file) : file_(file) {
    file_.calls_in_flight.fetch_add(1, std::memory_order_seq_cst);
    admitted_ = !file_.retired.load(std::memory_order_seq_cst);
  }
  ~CallScope() {
    if (file_.calls_in_flight.fetch_sub(1, std::memory_order_seq_cst) == 1 &&
        file_.retired.load(std::memory_order_seq_cst)) {
      MutexLock lock(&file_.retire_mu);
      file_.retire_cv.SignalAll();
    }
  }
  CallScope(const CallScope&) = delete;
  CallScope& operator=(const CallScope&) = delete;

  bool admitted() const { return admitted_; }

 private:
  PackFileState& file_;
  bool admitted_;
};

uint64_t RoundUp(uint64_t value, uint64_t multiple) {
  return (value + multiple - 1) / multiple * multiple;
}

absl::Status RetiredError(const PackFileState& file) {
  return absl::FailedPreconditionError(
      absl::StrCat("pack file #", file.id, " (", file.path, ") is retired"));
}

}  // namespace

class RegionCache::Impl {
 public:
  explicit Impl(const RegionCacheOptions& options)
      : options_(options),
        shift_(__builtin_ctzll(options.window_size)),
        tail_granularity_(std::min(options.window_size, kTailMappingGranularity)),
        mapped_bytes_(options.max_mapped_bytes),
        windows_(options.max_windows),
        table_(&pinned_,
               std::min(options.max_windows, options.max_mapped_bytes / options.window_size)),
        descriptors_(options.max_open_files) {}

  ~Impl() {
    std::vector<Window*> unmap;
    table_.RemoveAll(&unmap);
    for (Window* window : unmap) Unmap(window);
  }

  const RegionCacheOptions& options() const { return options_; }

  absl::StatusOr<std::shared_ptr<PackFileState>> Register(std::string path) {
    struct stat st;
    if (stat(path.c_str(), &st) != 0) {
      return absl::ErrnoToStatus(errno, absl::StrCat("stat pack file ", path));
    }
    if (!S_ISREG(st.st_mode)) {
      return absl::FailedPreconditionError(absl::StrCat(path, " is not a regular file"));
    }
    auto file = std::make_shared<PackFileState>(
        this, next_file_id.fetch_add(1, std::memory_order_relaxed), std::move(path), st.st_dev,
        st.st_ino, static_cast<uint64_t>(st.st_size));
    MutexLock lock(&registry_mu_);
    registry_.emplace(file->id, file);
    return file;
  }

  absl::Status Retire(PackFileState& file) {
    if (file.retired.exchange(true, std::memory_order_seq_cst)) return absl::OkStatus();
    {
      MutexLock lock(&file.retire_mu);
      while (file.calls_in_flight.load(std::memory_order_seq_cst) != 0) {
        WaitOn(&file.retire_cv, &file.retire_mu);
      }
    }
    std::vector<Window*> unmap;
    table_.RemoveFile(file.id, &unmap);
    for (Window* window : unmap) Unmap(window);
    descriptors_.Forget(file);
    MutexLock lock(&registry_mu_);
    registry_.erase(file.id);
    return absl::OkStatus();
  }

  absl::Status Read(PackFileState& file, uint64_t offset, char* dst, size_t n) {
    CallScope call(file);
    if (!call.admitted()) return RetiredError(file);
    if (absl::Status status = EnsureReadable(file, offset, n); !status.ok()) return status;
    const bool small = n <= options_.first_miss_pread_max_bytes;
    while (n > 0) {
      const uint64_t index = offset >> shift_;
      const uint64_t in_window = offset - (index << shift_);
      const size_t chunk = std::min<uint64_t>(n, options_.window_size - in_window);
      uint32_t frequency = 0;
      Window* window = table_.PinIfPresent(file.id, index, in_window + chunk,
                                           FileBytesFrom(file, index), &frequency);
      if (window == nullptr) {
        if (small && frequency <= 1) {
          first_miss_preads_.fetch_add(1, std::memory_order_relaxed);
        } else {
          absl::StatusOr<Window*> mapped = MapWindow(file, index, in_window + chunk, frequency);
          if (!mapped.ok()) return mapped.status();
          window = *mapped;
        }
      }
      if (window != nullptr) {
        std::memcpy(dst, window->base + in_window, chunk);
        Unpin(window);
      } else {
        pread_fallbacks_.fetch_add(1, std::memory_order_relaxed);
        if (absl::Status status = PreadFully(file, offset, dst, chunk); !status.ok()) {
          return status;
        }
      }
      offset += chunk;
      dst += chunk;
      n -= chunk;
    }
    return absl::OkStatus();
  }

  // Returns the pinned window and the view, or a null window when none can
  // be mapped now.
  absl::StatusOr<std::pair<Window*, std::string_view>> Pin(PackFileState& file, uint64_t offset,
                                                           size_t n) {
    CallScope call(file);
    if (!call.admitted()) return RetiredError(file);
    if (absl::Status status = EnsureReadable(file, offset, n); !status.ok()) return status;
    const uint64_t index = offset >> shift_;
    const uint64_t in_window = offset - (index << shift_);
    const size_t chunk = std::min<uint64_t>(n, options_.window_size - in_window);
    uint32_t frequency = 0;
    Window* window = table_.PinIfPresent(file.id, index, in_window + chunk,
                                         FileBytesFrom(file, index), &frequency);
    if (window == nullptr) {
      absl::StatusOr<Window*> mapped = MapWindow(file, index, in_window + chunk, frequency);
      if (!mapped.ok()) return mapped.status();
      window = *mapped;
    }
    if (window == nullptr) {
      unmapped_pins_.fetch_add(1, std::memory_order_relaxed);
      return std::make_pair(nullptr, std::string_view());
    }
    return std::make_pair(window, std::string_view(window->base + in_window, chunk));
  }

  void Unpin(Window* window) {
    if (table_.Unpin(window)) Unmap(window);
  }

  uint64_t UnmapIdle() {
    const uint64_t mark = idle_mark_.exchange(table_.NextStamp(), std::memory_order_relaxed);
    std::vector<Window*> unmap;
    table_.TakeReleasedBefore(mark, &unmap);
    for (Window* window : unmap) Unmap(window);
    idle_unmaps_.fetch_add(unmap.size(), std::memory_order_relaxed);
    return unmap.size();
  }

  RegionCacheStats GetStats() const {
    RegionCacheStats stats;
    WindowTable::Counts counts = table_.counts();
    stats.hits = counts.hits;
    stats.misses = counts.misses;
    stats.evictions = evictions_.load(std::memory_order_relaxed);
    stats.idle_unmaps = idle_unmaps_.load(std::memory_order_relaxed);
    stats.mmap_calls = mmap_calls_.load(std::memory_order_relaxed);
    stats.mmap_failures = mmap_failures_.load(std::memory_order_relaxed);
    stats.munmap_calls = munmap_calls_.load(std::memory_order_relaxed);
    stats.munmap_failures = munmap_failures_.load(std::memory_order_relaxed);
    stats.pread_fallbacks = pread_fallbacks_.load(std::memory_order_relaxed);
    stats.first_miss_preads = first_miss_preads_.load(std::memory_order_relaxed);
    stats.not_admitted = not_admitted_.load(std::memory_order_relaxed);
    stats.no_room = no_room_.load(std::memory_order_relaxed);
    stats.unmapped_pins = unmapped_pins_.load(std::memory_order_relaxed);
    stats.descriptor_opens = descriptors_.opens();
    stats.mapped_bytes = mapped_bytes_.value();
    stats.mapped_bytes_peak = mapped_bytes_.peak();
    stats.mapped_bytes_limit = mapped_bytes_.limit();
    stats.windows = windows_.value();
    stats.windows_peak = windows_.peak();
    stats.windows_limit = windows_.limit();
    stats.pinned_windows = pinned_.value();
    stats.pinned_windows_peak = pinned_.peak();
    stats.open_files = descriptors_.open_descriptors().value();
    stats.open_files_peak = descriptors_.open_descriptors().peak();
    stats.open_files_limit = descriptors_.open_descriptors().limit();
    {
      MutexLock lock(&registry_mu_);
      stats.registered_files = registry_.size();
    }
    stats.window_size = options_.window_size;
    return stats;
  }

 private:
  // A descriptor held for one system call sequence.
  class Descriptor {
   public:
    Descriptor(DescriptorPool& pool, const PackFileState& file) : pool_(pool), file_(file) {
      fd_ = pool_.Acquire(file_);
    }
    ~Descriptor() {
      if (fd_.ok()) pool_.Release(file_);
    }
    Descriptor(const Descriptor&) = delete;
    Descriptor& operator=(const Descriptor&) = delete;

    const absl::StatusOr<int>& fd() const { return fd_; }

   private:
    DescriptorPool& pool_;
    const PackFileState& file_;
    absl::StatusOr<int> fd_;
  };

  // Bytes the file is known to hold from the start of window `index`.
  uint64_t FileBytesFrom(const PackFileState& file, uint64_t index) const {
    const uint64_t start = index << shift_;
    const uint64_t size = file.known_size.load(std::memory_order_acquire);
    return size > start ? size - start : 0;
  }

  // OK when the file holds [offset, offset + n), statting it again if the
  // size seen last is too small.
  absl::Status EnsureReadable(PackFileState& file, uint64_t offset, size_t n) {
    const uint64_t end = offset + n;
    if (end < offset) {
      return absl::OutOfRangeError(absl::StrCat("read of ", n, " bytes at offset ", offset,
                                                " overflows in pack file ", file.path));
    }
    if (end <= file.known_size.load(std::memory_order_acquire)) return absl::OkStatus();
    {
      Descriptor descriptor(descriptors_, file);
      if (!descriptor.fd().ok()) return descriptor.fd().status();
      struct stat st;
      if (fstat(*descriptor.fd(), &st) != 0) {
        return absl::ErrnoToStatus(errno, absl::StrCat("fstat pack file ", file.path));
      }
      file.ObserveSize(static_cast<uint64_t>(st.st_size));
    }
    const uint64_t size = file.known_size.load(std::memory_order_acquire);
    if (end > size) {
      return absl::OutOfRangeError(absl::StrCat(
          "read of [", offset, ", ", end, ") past the end of ", file.path, " (", size, " bytes)"));
    }
    return absl::OkStatus();
  }

  absl::Status PreadFully(const PackFileState& file, uint64_t offset, char* dst, size_t n) {
    Descriptor descriptor(descriptors_, file);
    if (!descriptor.fd().ok()) return descriptor.fd().status();
    while (n > 0) {
      ssize_t got = pread(*descriptor.fd(), dst, n, static_cast<off_t>(offset));
      if (got < 0) {
        if (errno == EINTR) continue;
        return absl::ErrnoToStatus(errno, absl::StrCat("pread pack file ", file.path));
      }
      if (got == 0) {
        return absl::DataLossError(absl::StrCat("pack file ", file.path, " ends at ", offset,
                                                ", below the size it had before"));
      }
      offset += static_cast<uint64_t>(got);
      dst += got;
      n -= static_cast<size_t>(got);
    }
    return absl::OkStatus();
  }

  // Reserves a window of `length` bytes for a key looked up `frequency`
  // times lately, unmapping least recently used windows as long as that
  // makes room and the admission rule allows it. False when it cannot.
  bool Reserve(uint64_t length, uint32_t frequency) {
    // Windows at the ends of files are smaller than a full one, so making
    // room may take several evictions; the bound stops a thread whose freed
    // room keeps going to other threads.
    constexpr int kMaxEvictions = 64;
    // Replacing a window costs an mmap, a munmap and then a page fault for
    // every 64 KiB first read in the new window (8-25 us each on the 2-core
    // VM of bench/region_cache_bench): hundreds of preads for a window read
    // at random. So a window replaces another only when looked up more than
    // twice as often lately; uniform random reads over more than the budget
    // then leave the mapped set nearly still instead of churning it.
    constexpr int64_t kAdmissionFactor = 2;
    for (int evicted = 0;; ++evicted) {
      if (windows_.TryAdd(1)) {
        if (mapped_bytes_.TryAdd(length)) return true;
        windows_.Sub(1);
      }
      if (evicted == 0 && options_.admit_by_frequency &&
          static_cast<int64_t>(frequency) <=
              kAdmissionFactor * table_.LeastRecentlyUsedFrequency()) {
        not_admitted_.fetch_add(1, std::memory_order_relaxed);
        return false;
      }
      Window* victim = evicted < kMaxEvictions ? table_.TakeLeastRecentlyUsed() : nullptr;
      if (victim == nullptr) {
        no_room_.fetch_add(1, std::memory_order_relaxed);
        return false;
      }
      evictions_.fetch_add(1, std::memory_order_relaxed);
      Unmap(victim);
    }
  }

  // Maps window `index` of `file` and returns it pinned; null when the
  // limits leave no room, the admission rule refuses it or mmap fails.
  // `needed`: bytes from the window's start the caller will read, which the
  // file is known to hold; `frequency`: the key's, from PinIfPresent.
  absl::StatusOr<Window*> MapWindow(const PackFileState& file, uint64_t index, uint64_t needed,
                                    uint32_t frequency) {
    const uint64_t valid = std::min(options_.window_size, FileBytesFrom(file, index));
    const uint64_t length = std::min(options_.window_size, RoundUp(valid, tail_granularity_));
    if (!Reserve(length, frequency)) return nullptr;
    void* base = MAP_FAILED;
    {
      Descriptor descriptor(descriptors_, file);
      if (!descriptor.fd().ok()) {
        Unreserve(length);
        return descriptor.fd().status();
      }
      mmap_calls_.fetch_add(1, std::memory_order_relaxed);
      // An injected failure takes the path of a real one: MAP_FAILED.
      if (FaultInjector::Check(FaultOp::kMmap, file.path) == 0) {
        base = mmap(nullptr, length, PROT_READ, MAP_SHARED, *descriptor.fd(),
                    static_cast<off_t>(index << shift_));
      }
    }
    if (base == MAP_FAILED) {
      mmap_failures_.fetch_add(1, std::memory_order_relaxed);
      Unreserve(length);
      return nullptr;
    }
    auto* fresh = new Window(file.id, index, static_cast<char*>(base), length, valid);
    std::vector<Window*> unmap;
    Window* window = table_.InsertPinned(fresh, needed, FileBytesFrom(file, index), &unmap);
    for (Window* old : unmap) Unmap(old);
    return window;
  }

  void Unreserve(uint64_t length) {
    mapped_bytes_.Sub(length);
    windows_.Sub(1);
  }

  // Unmaps a window that has left the table with no pin, and frees it.
  void Unmap(Window* window) {
    munmap_calls_.fetch_add(1, std::memory_order_relaxed);
    if (munmap(window->base, window->mapped_length) == 0) {
      Unreserve(window->mapped_length);
    } else {
      // Only ENOMEM is possible here, when unmapping would split a mapping
      // the kernel merged with neighbours past vm.max_map_count. The bytes
      // stay mapped, so they stay counted: the limits remain true.
      munmap_failures_.fetch_add(1, std::memory_order_relaxed);
    }
    delete window;
  }

  const RegionCacheOptions options_;
  const int shift_;
  const uint64_t tail_granularity_;

  LimitedGauge mapped_bytes_;
  LimitedGauge windows_;
  LimitedGauge pinned_;
  WindowTable table_;
  DescriptorPool descriptors_;

  std::atomic<uint64_t> evictions_{0};
  std::atomic<uint64_t> idle_unmaps_{0};
  // NextStamp() at the previous UnmapIdle call.
  std::atomic<uint64_t> idle_mark_{0};
  std::atomic<uint64_t> mmap_calls_{0};
  std::atomic<uint64_t> mmap_failures_{0};
  std::atomic<uint64_t> munmap_calls_{0};
  std::atomic<uint64_t> munmap_failures_{0};
  std::atomic<uint64_t> pread_fallbacks_{0};
  std::atomic<uint64_t> first_miss_preads_{0};
  std::atomic<uint64_t> not_admitted_{0};
  std::atomic<uint64_t> no_room_{0};
  std::atomic<uint64_t> unmapped_pins_{0};

  // Every registered, unretired file, so that retirement and destruction
  // find them; reads go through the caller's handle instead.
  mutable absl::Mutex registry_mu_;
  absl::flat_hash_map<uint64_t, std::shared_ptr<PackFileState>> registry_
      ABSL_GUARDED_BY(registry_mu_);
};

uint64_t PackFile::id() const { return state_ != nullptr ? state_->id : 0; }

const std::string& PackFile::path() const {
  static const std::string* const kNoPath = new std::string();
  return state_ != nullptr ? state_->path : *kNoPath;
}

PackFile::PackFile(std::shared_ptr<cache_internal::PackFileState> state)
    : state_(std::move(state)) {}

RegionPin::RegionPin(RegionPin&& other) noexcept
    : cache_(std::exchange(other.cache_, nullptr)),
      window_(std::exchange(other.window_, nullptr)),
      bytes_(std::exchange(other.bytes_, std::string_view())) {}

RegionPin& RegionPin::operator=(RegionPin&& other) noexcept {
  if (this != &other) {
    Release();
    cache_ = std::exchange(other.cache_, nullptr);
    window_ = std::exchange(other.window_, nullptr);
    bytes_ = std::exchange(other.bytes_, std::string_view());
  }
  return *this;
}

RegionPin::~RegionPin() { Release(); }

void RegionPin::Release() {
  if (window_ == nullptr) return;
  cache_->Unpin(window_);
  cache_ = nullptr;
  window_ = nullptr;
  bytes_ = std::string_view();
}

absl::StatusOr<std::unique_ptr<RegionCache>> RegionCache::Create(
    const RegionCacheOptions& options) {
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  const uint64_t window = options.window_size;
  if (window < page || (window & (window - 1)) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "window_size ", window, " must be a power of two of at least the page size ", page));
  }
  if (options.max_mapped_bytes < window) {
    return absl::InvalidArgumentError(absl::StrCat("max_mapped_bytes ", options.max_mapped_bytes,
                                                   " cannot hold one window of ", window));
  }
  if (options.max_windows == 0 || options.max_open_files == 0) {
    return absl::InvalidArgumentError("max_windows and max_open_files must be at least 1");
  }
  return std::unique_ptr<RegionCache>(new RegionCache(std::make_unique<Impl>(options)));
}

RegionCache::RegionCache(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

RegionCache::~RegionCache() = default;

namespace {

absl::StatusOr<PackFileState*> Resolve(const std::shared_ptr<PackFileState>& state,
                                       const void* owner) {
  if (state == nullptr || state->owner != owner) {
    return absl::InvalidArgumentError("pack file handle was not registered with this cache");
  }
  return state.get();
}

}  // namespace

absl::StatusOr<PackFile> RegionCache::Register(std::string path) {
  absl::StatusOr<std::shared_ptr<PackFileState>> state = impl_->Register(std::move(path));
  if (!state.ok()) return state.status();
  return PackFile(*std::move(state));
}

absl::Status RegionCache::Retire(const PackFile& file) {
  absl::StatusOr<PackFileState*> state = Resolve(file.state_, impl_.get());
  if (!state.ok()) return state.status();
  return impl_->Retire(**state);
}

absl::Status RegionCache::Read(const PackFile& file, uint64_t offset, char* dst, size_t n) {
  absl::StatusOr<PackFileState*> state = Resolve(file.state_, impl_.get());
  if (!state.ok()) return state.status();
  return impl_->Read(**state, offset, dst, n);
}

absl::StatusOr<RegionPin> RegionCache::Pin(const PackFile& file, uint64_t offset, size_t n) {
  absl::StatusOr<PackFileState*> state = Resolve(file.state_, impl_.get());
  if (!state.ok()) return state.status();
  if (n == 0) return absl::InvalidArgumentError("Pin of 0 bytes");
  absl::StatusOr<std::pair<Window*, std::string_view>> pinned = impl_->Pin(**state, offset, n);
  if (!pinned.ok()) return pinned.status();
  if (pinned->first == nullptr) return RegionPin();
  return RegionPin(this, pinned->first, pinned->second);
}

uint64_t RegionCache::UnmapIdle() { return impl_->UnmapIdle(); }

RegionCacheStats RegionCache::GetStats() const { return impl_->GetStats(); }

const RegionCacheOptions& RegionCache::options() const { return impl_->options(); }

void RegionCache::Unpin(cache_internal::Window* window) { impl_->Unpin(window); }

}  // namespace packstore
