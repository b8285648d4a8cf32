// Region cache benchmark: random reads from packs totalling 2 GiB through
// RegionCache (Read, and Pin + copy) against plain pread of the same
// offsets, measured in the same run, with 1 and 2 threads; then the same
// under a mapped-bytes budget a quarter of the data, with the admission
// rule and with plain LRU; and the one-off costs behind the first-miss rule.
//
//   region_cache_bench [seconds per case, default 1]
//
// Pack files go to a fresh directory under the system temp directory
// (TMPDIR) and are removed at exit. They are written and synced first, so
// the timed reads come from the page cache with no writeback running.
//
// Debian's Abseil is built with Mutex deadlock detection on, which adds a
// global lock-order graph lookup to every Lock. The daemon turns it off at
// start-up, and so does this benchmark, after one row measured with it on.

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "server/cache/region_cache.h"

namespace packstore {
namespace {

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * kKiB;
constexpr int kPacks = 8;
constexpr uint64_t kPackSize = 256 * kMiB;  // 8 x 256 MiB = 2 GiB

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "region_cache_bench: %s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(1);
}

std::vector<std::string> WritePacks(const std::string& dir) {
  std::vector<std::string> paths;
  std::vector<uint64_t> block(kMiB / 8);
  std::mt19937_64 random(1);
  for (uint64_t& word : block) word = random();
  for (int p = 0; p < kPacks; ++p) {
    paths.push_back(dir + "/pack-" + std::to_string(p));
    int fd = open(paths.back().c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) Die("create " + paths.back());
    for (uint64_t at = 0; at < kPackSize; at += kMiB) {
      block[at / kMiB % block.size()] ^= at + static_cast<uint64_t>(p);
      if (pwrite(fd, block.data(), kMiB, static_cast<off_t>(at)) != static_cast<ssize_t>(kMiB)) {
        Die("write " + paths.back());
      }
    }
    if (fdatasync(fd) != 0) Die("fdatasync " + paths.back());
    close(fd);
  }
  return paths;
}

struct Op {
  int pack;
  uint64_t offset;
};

std::vector<Op> RandomOps(uint64_t seed, size_t count, size_t n) {
  std::mt19937_64 random(seed);
  std::vector<Op> ops(count);
  for (Op& op : ops) {
    op.pack = static_cast<int>(random() % kPacks);
    op.offset = random() % (kPackSize - n);
  }
  return ops;
}

enum class Path { kPread, kCacheRead, kCachePin, kMappedFloor };

struct Result {
  double ns_per_op = 0;
  double mb_per_s = 0;
};

// Every window of the packs, pinned: the floor is a memcpy from these with
// no cache call at all.
struct PinnedPacks {
  std::vector<RegionPin> pins;  // pack * windows per pack + window
  uint64_t window_size = 0;
  uint64_t windows_per_pack = 0;
};

// Runs `threads` threads doing random reads of `n` bytes for `seconds`.
Result Run(Path path, int threads, size_t n, double seconds, RegionCache* cache,
           const std::vector<PackFile>& packs, const std::vector<int>& fds,
           const PinnedPacks* pinned = nullptr) {
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> total_ops{0};
  std::atomic<uint64_t> sink{0};
  std::vector<std::thread> workers;
  const Clock::time_point start = Clock::now();
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      const std::vector<Op> ops = RandomOps(100 + t, 1 << 16, n);
      std::vector<char> buffer(n);
      uint64_t done = 0;
      uint64_t local_sink = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        for (int i = 0; i < 256; ++i, ++done) {
          const Op& op = ops[done % ops.size()];
          if (path == Path::kPread) {
            if (pread(fds[op.pack], buffer.data(), n, static_cast<off_t>(op.offset)) !=
                static_cast<ssize_t>(n)) {
              Die("pread");
            }
          } else if (path == Path::kMappedFloor) {
            const uint64_t index = op.offset / pinned->window_size;
            const uint64_t in_window = op.offset % pinned->window_size;
            const size_t first = std::min<uint64_t>(n, pinned->window_size - in_window);
            const RegionPin* pin = &pinned->pins[op.pack * pinned->windows_per_pack + index];
            std::memcpy(buffer.data(), pin->bytes().data() + in_window, first);
            if (first < n) std::memcpy(buffer.data() + first, (pin + 1)->bytes().data(), n - first);
          } else if (path == Path::kCacheRead) {
            absl::Status status = cache->Read(packs[op.pack], op.offset, buffer.data(), n);
            if (!status.ok()) Die(status.ToString());
          } else {
            uint64_t offset = op.offset;
            size_t left = n;
            while (left > 0) {
              absl::StatusOr<RegionPin> pin = cache->Pin(packs[op.pack], offset, left);
              if (!pin.ok()) Die(pin.status().ToString());
              if (!pin->mapped()) {
                absl::Status status =
                    cache->Read(packs[op.pack], offset, buffer.data() + (n - left), left);
                if (!status.ok()) Die(status.ToString());
                break;
              }
              std::memcpy(buffer.data() + (n - left), pin->bytes().data(), pin->bytes().size());
              offset += pin->bytes().size();
              left -= pin->bytes().size();
            }
          }
          local_sink += static_cast<unsigned char>(buffer[n / 2]);
        }
        if (t == 0 && Seconds(Clock::now() - start) >= seconds) stop.store(true);
      }
      total_ops.fetch_add(done);
      sink.fetch_add(local_sink);
    });
  }
  for (std::thread& worker : workers) worker.join();
  const double elapsed = Seconds(Clock::now() - start);
  Result result;
  result.ns_per_op = elapsed * 1e9 / static_cast<double>(total_ops.load());
  result.mb_per_s = static_cast<double>(total_ops.load()) * static_cast<double>(n) / elapsed / 1e6;
  return result;
}

std::unique_ptr<RegionCache> MakeCache(const RegionCacheOptions& options,
                                       const std::vector<std::string>& paths,
                                       std::vector<PackFile>* packs) {
  absl::StatusOr<std::unique_ptr<RegionCache>> cache = RegionCache::Create(options);
  if (!cache.ok()) Die(cache.status().ToString());
  packs->clear();
  for (const std::string& path : paths) {
    absl::StatusOr<PackFile> pack = (*cache)->Register(path);
    if (!pack.ok()) Die(pack.status().ToString());
    packs->push_back(*pack);
  }
  return *std::move(cache);
}

// Maps every window and faults in every page once, so that the timed reads
// measure hits rather than the first touch of each page. Returns the pins.
PinnedPacks WarmUp(RegionCache& cache, const std::vector<PackFile>& packs) {
  PinnedPacks pinned;
  pinned.window_size = cache.options().window_size;
  pinned.windows_per_pack = kPackSize / pinned.window_size;
  for (const PackFile& pack : packs) {
    for (uint64_t at = 0; at < kPackSize; at += pinned.window_size) {
      absl::StatusOr<RegionPin> pin = cache.Pin(pack, at, pinned.window_size);
      if (!pin.ok() || !pin->mapped()) Die("warm-up pin");
      volatile char touch = 0;
      for (size_t i = 0; i < pin->bytes().size(); i += 4096) touch = touch + pin->bytes()[i];
      pinned.pins.push_back(*std::move(pin));
    }
  }
  return pinned;
}

void PrintStats(const char* name, const RegionCache& cache) {
  RegionCacheStats s = cache.GetStats();
  std::printf(
      "  %-26s peak mapped %5llu MiB of %5llu MiB limit, peak windows %llu of %llu, "
      "hits %llu, misses %llu, evictions %llu, mmap %llu, pread fallbacks %llu "
      "(first-miss %llu, not admitted %llu, no room %llu)\n",
      name, (unsigned long long)(s.mapped_bytes_peak / kMiB),
      (unsigned long long)(s.mapped_bytes_limit / kMiB), (unsigned long long)s.windows_peak,
      (unsigned long long)s.windows_limit, (unsigned long long)s.hits, (unsigned long long)s.misses,
      (unsigned long long)s.evictions, (unsigned long long)s.mmap_calls,
      (unsigned long long)s.pread_fallbacks, (unsigned long long)s.first_miss_preads,
      (unsigned long long)s.not_admitted, (unsigned long long)s.no_room);
}

// One-off read of n bytes in a window not mapped before: pread against
// mmap of a whole 64 MiB window + copy (first touch) + munmap.
void OneOffCosts(const std::vector<int>& fds) {
  constexpr uint64_t kWindow = 64 * kMiB;
  std::printf("\nOne-off read in an unmapped 64 MiB window (page cache warm), mean of samples:\n");
  std::printf("  %8s  %10s  %22s  %s\n", "size", "pread us", "mmap+copy+munmap us", "ratio");
  std::mt19937_64 random(5);
  std::vector<char> buffer(kMiB);
  for (size_t n : {1 * kKiB, 64 * kKiB, 256 * kKiB, 1 * kMiB}) {
    const int samples = n >= kMiB ? 200 : 1000;
    double pread_s = 0;
    double map_s = 0;
    for (int i = 0; i < samples; ++i) {
      const int fd = fds[random() % fds.size()];
      const uint64_t window_start = (random() % (kPackSize / kWindow)) * kWindow;
      const uint64_t in_window = (random() % (kWindow - n)) & ~uint64_t{4095};
      Clock::time_point a = Clock::now();
      if (pread(fd, buffer.data(), n, static_cast<off_t>(window_start + in_window)) !=
          static_cast<ssize_t>(n)) {
        Die("pread");
      }
      Clock::time_point b = Clock::now();
      void* base =
          mmap(nullptr, kWindow, PROT_READ, MAP_SHARED, fd, static_cast<off_t>(window_start));
      if (base == MAP_FAILED) Die("mmap");
      std::memcpy(buffer.data(), static_cast<char*>(base) + in_window, n);
      munmap(base, kWindow);
      Clock::time_point c = Clock::now();
      pread_s += Seconds(b - a);
      map_s += Seconds(c - b);
    }
    std::printf("  %6zu KiB  %10.1f  %22.1f  %5.2f\n", n / kKiB, pread_s / samples * 1e6,
                map_s / samples * 1e6, map_s / pread_s);
  }
}

int Main(int argc, char** argv) {
  const double seconds = argc > 1 ? std::atof(argv[1]) : 1.0;
  std::string pattern = (std::filesystem::temp_directory_path() / "region_cache_bench_XXXXXX");
  if (mkdtemp(pattern.data()) == nullptr) Die("mkdtemp");
  const std::string dir = pattern;

  std::printf("Writing %d packs of %llu MiB ...\n", kPacks, (unsigned long long)(kPackSize / kMiB));
  const std::vector<std::string> paths = WritePacks(dir);
  std::vector<int> fds;
  for (const std::string& path : paths) {
    fds.push_back(open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fds.back() < 0) Die("open " + path);
  }

  RegionCacheOptions defaults;
  std::vector<PackFile> full_packs;
  std::unique_ptr<RegionCache> full = MakeCache(defaults, paths, &full_packs);
  PinnedPacks pinned = WarmUp(*full, full_packs);

  RegionCacheOptions quarter = defaults;
  quarter.max_mapped_bytes = kPacks * kPackSize / 4;
  std::vector<PackFile> quarter_packs;
  std::unique_ptr<RegionCache> limited = MakeCache(quarter, paths, &quarter_packs);
  RegionCacheOptions lru = quarter;
  lru.admit_by_frequency = false;
  std::vector<PackFile> lru_packs;
  std::unique_ptr<RegionCache> limited_lru = MakeCache(lru, paths, &lru_packs);

  std::printf(
      "\nRandom reads over 2 GiB in %d packs, %.1f s per case; 'x pread' = pread time / case "
      "time, same size and threads, this run.\n",
      kPacks, seconds);
  std::printf("%-53s %7s %10s %10s %9s\n", "case", "threads", "ns/op", "MB/s", "x pread");
  {
    const Result base = Run(Path::kPread, 1, kKiB, seconds, nullptr, {}, fds);
    const Result r = Run(Path::kCacheRead, 1, kKiB, seconds, full.get(), full_packs, fds);
    std::printf("%4llu KiB %-44s %7d %10.0f %10.0f %9s\n", 1ULL, "pread", 1, base.ns_per_op,
                base.mb_per_s, "1.00");
    std::printf("%4llu KiB %-44s %7d %10.0f %10.0f %9.2f\n", 1ULL,
                "cache Read, 8 GiB, deadlock detection on", 1, r.ns_per_op, r.mb_per_s,
                base.ns_per_op / r.ns_per_op);
  }
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  std::printf("-- absl::Mutex deadlock detection off from here on, as in the daemon --\n");
  for (size_t n : {1 * kKiB, 64 * kKiB}) {
    for (int threads : {1, 2}) {
      const Result base = Run(Path::kPread, threads, n, seconds, nullptr, {}, fds);
      struct Case {
        const char* name;
        Path path;
        RegionCache* cache;
        const std::vector<PackFile>* packs;
      };
      const Case cases[] = {
          {"cache Read, 8 GiB budget (all hits)", Path::kCacheRead, full.get(), &full_packs},
          {"cache Pin + copy, 8 GiB budget (all hits)", Path::kCachePin, full.get(), &full_packs},
          {"cache Read, 512 MiB budget", Path::kCacheRead, limited.get(), &quarter_packs},
          {"cache Read, 512 MiB budget, plain LRU", Path::kCacheRead, limited_lru.get(),
           &lru_packs},
      };
      std::printf("%4zu KiB %-44s %7d %10.0f %10.0f %9s\n", n / kKiB, "pread", threads,
                  base.ns_per_op, base.mb_per_s, "1.00");
      const Result floor = Run(Path::kMappedFloor, threads, n, seconds, nullptr, {}, fds, &pinned);
      std::printf("%4zu KiB %-44s %7d %10.0f %10.0f %9.2f\n", n / kKiB,
                  "floor: memcpy from mapped, no cache", threads, floor.ns_per_op, floor.mb_per_s,
                  base.ns_per_op / floor.ns_per_op);
      for (const Case& c : cases) {
        const Result r = Run(c.path, threads, n, seconds, c.cache, *c.packs, fds);
        std::printf("%4zu KiB %-44s %7d %10.0f %10.0f %9.2f\n", n / kKiB, c.name, threads,
                    r.ns_per_op, r.mb_per_s, base.ns_per_op / r.ns_per_op);
      }
    }
  }
  std::printf("\nCache statistics after the runs:\n");
  PrintStats("8 GiB budget", *full);
  PrintStats("512 MiB budget", *limited);
  PrintStats("512 MiB budget, plain LRU", *limited_lru);

  OneOffCosts(fds);

  pinned.pins.clear();
  full.reset();
  limited.reset();
  limited_lru.reset();
  for (int fd : fds) close(fd);
  std::filesystem::remove_all(dir);
  return 0;
}

}  // namespace
}  // namespace packstore

int main(int argc, char** argv) { return packstore::Main(argc, argv); }
