#include "server/cache/region_cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <list>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "tests/cache/pack_files.h"

namespace packstore {
namespace {

using cache_test::DescriptorsUnder;
using cache_test::FirstMismatch;
using cache_test::MappingsUnder;
using cache_test::RealMappings;
using cache_test::ScratchDir;
using cache_test::WritePackBytes;

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * kKiB;

// Small windows keep the files small; the first-miss and admission rules
// are off unless a test is about them, so that every miss maps.
RegionCacheOptions SmallOptions() {
  RegionCacheOptions options;
  options.window_size = 64 * kKiB;
  options.max_mapped_bytes = 64 * kMiB;
  options.max_windows = 256;
  options.max_open_files = 16;
  options.first_miss_pread_max_bytes = 0;
  options.admit_by_frequency = false;
  return options;
}

std::unique_ptr<RegionCache> MakeCache(const RegionCacheOptions& options) {
  absl::StatusOr<std::unique_ptr<RegionCache>> cache = RegionCache::Create(options);
  EXPECT_TRUE(cache.ok()) << cache.status();
  return cache.ok() ? *std::move(cache) : nullptr;
}

class RegionCacheTest : public ::testing::Test {
 protected:
  // Writes a pack of `size` bytes and registers it.
  PackFile AddPack(RegionCache& cache, const std::string& name, uint64_t seed, uint64_t size) {
    WritePackBytes(dir_.File(name), seed, 0, size);
    absl::StatusOr<PackFile> pack = cache.Register(dir_.File(name));
    EXPECT_TRUE(pack.ok()) << pack.status();
    return pack.ok() ? *pack : PackFile();
  }

  // Reads through the cache and checks every byte.
  void ExpectRead(RegionCache& cache, const PackFile& pack, uint64_t seed, uint64_t offset,
                  size_t n) {
    std::string buffer(n, '\0');
    absl::Status status = cache.Read(pack, offset, buffer.data(), n);
    ASSERT_TRUE(status.ok()) << status;
    EXPECT_EQ(FirstMismatch(seed, offset, buffer), -1) << "read at " << offset << " of " << n;
  }

  RealMappings Mappings(const RegionCache& cache) {
    return MappingsUnder(dir_.path(), cache.options().window_size);
  }

  ScratchDir dir_;
};

TEST_F(RegionCacheTest, CreateRejectsBadOptions) {
  RegionCacheOptions options = SmallOptions();
  options.window_size = 96 * kKiB;
  EXPECT_EQ(RegionCache::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  options.window_size = 1024;
  EXPECT_EQ(RegionCache::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  options = SmallOptions();
  options.max_mapped_bytes = options.window_size - 1;
  EXPECT_EQ(RegionCache::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  options = SmallOptions();
  options.max_windows = 0;
  EXPECT_EQ(RegionCache::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  options = SmallOptions();
  options.max_open_files = 0;
  EXPECT_EQ(RegionCache::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(RegionCacheTest, DefaultsAreWithinTheSystemLimits) {
  RegionCacheOptions options;
  EXPECT_EQ(options.window_size, 64 * kMiB);
  EXPECT_EQ(options.max_mapped_bytes, sizeof(void*) >= 8 ? 8192 * kMiB : 512 * kMiB);
  EXPECT_GE(options.max_windows, 1u);
  EXPECT_LE(options.max_windows, 4096u);
  EXPECT_GE(options.max_open_files, 4u);
  EXPECT_LE(options.max_open_files, 4096u);
  EXPECT_TRUE(RegionCache::Create(options).ok());
}

TEST_F(RegionCacheTest, ReadsAcrossWindowBoundaries) {
  auto cache = MakeCache(SmallOptions());
  const uint64_t size = 300 * kKiB + 123;
  PackFile pack = AddPack(*cache, "pack", 7, size);
  ExpectRead(*cache, pack, 7, 0, size);
  ExpectRead(*cache, pack, 7, 64 * kKiB - 10, 20);
  ExpectRead(*cache, pack, 7, 10, 3 * 64 * kKiB);
  ExpectRead(*cache, pack, 7, size - 1, 1);
  ExpectRead(*cache, pack, 7, 5, 0);

  // Pin stops at the window boundary; the caller loops.
  uint64_t offset = 60 * kKiB;
  size_t left = 200 * kKiB;
  std::vector<size_t> pieces;
  while (left > 0) {
    absl::StatusOr<RegionPin> pin = cache->Pin(pack, offset, left);
    ASSERT_TRUE(pin.ok()) << pin.status();
    ASSERT_TRUE(pin->mapped());
    EXPECT_EQ(FirstMismatch(7, offset, pin->bytes()), -1);
    pieces.push_back(pin->bytes().size());
    offset += pin->bytes().size();
    left -= pin->bytes().size();
  }
  EXPECT_EQ(pieces, (std::vector<size_t>{4 * kKiB, 64 * kKiB, 64 * kKiB, 64 * kKiB, 4 * kKiB}));
}

TEST_F(RegionCacheTest, ReadsPastTheEndAreOutOfRange) {
  auto cache = MakeCache(SmallOptions());
  const uint64_t size = 100 * kKiB;
  PackFile pack = AddPack(*cache, "pack", 1, size);
  std::string buffer(64, 'x');
  EXPECT_EQ(cache->Read(pack, size - 10, buffer.data(), 11).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(buffer, std::string(64, 'x')) << "nothing is copied on failure";
  EXPECT_EQ(cache->Read(pack, ~uint64_t{0} - 2, buffer.data(), 8).code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_TRUE(cache->Read(pack, size, buffer.data(), 0).ok());
  EXPECT_EQ(cache->Pin(pack, size - 1, 2).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(cache->Pin(pack, 0, 0).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(RegionCacheTest, RegisterAndHandleErrors) {
  auto cache = MakeCache(SmallOptions());
  EXPECT_EQ(cache->Register(dir_.File("missing")).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(cache->Register(dir_.path()).status().code(), absl::StatusCode::kFailedPrecondition);

  char byte;
  EXPECT_EQ(cache->Read(PackFile(), 0, &byte, 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache->Retire(PackFile()).code(), absl::StatusCode::kInvalidArgument);

  auto other = MakeCache(SmallOptions());
  PackFile foreign = AddPack(*other, "pack", 1, 10);
  EXPECT_EQ(cache->Read(foreign, 0, &byte, 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache->Pin(foreign, 0, 1).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(RegionCacheTest, IdentitiesAreNeverReused) {
  auto cache = MakeCache(SmallOptions());
  PackFile first = AddPack(*cache, "pack", 1, 100 * kKiB);
  ExpectRead(*cache, first, 1, 0, 100 * kKiB);
  absl::StatusOr<PackFile> again = cache->Register(first.path());
  ASSERT_TRUE(again.ok());
  EXPECT_NE(again->id(), first.id());
  ASSERT_TRUE(cache->Retire(*again).ok());

  // A repack writes a new file under the same name: a new identity that
  // reads the new bytes, never the old windows.
  ASSERT_TRUE(cache->Retire(first).ok());
  WritePackBytes(dir_.File("pack.new"), 2, 0, 100 * kKiB);
  ASSERT_EQ(rename(dir_.File("pack.new").c_str(), dir_.File("pack").c_str()), 0);
  absl::StatusOr<PackFile> second = cache->Register(dir_.File("pack"));
  ASSERT_TRUE(second.ok());
  EXPECT_NE(second->id(), first.id());
  EXPECT_NE(second->id(), again->id());
  ExpectRead(*cache, *second, 2, 0, 100 * kKiB);
}

TEST_F(RegionCacheTest, RefusesAFileReplacedUnderItsRegisteredPath) {
  auto cache = MakeCache(SmallOptions());
  PackFile pack = AddPack(*cache, "pack", 1, 100 * kKiB);
  WritePackBytes(dir_.File("other"), 2, 0, 100 * kKiB);
  ASSERT_EQ(rename(dir_.File("other").c_str(), dir_.File("pack").c_str()), 0);
  char byte;
  EXPECT_EQ(cache->Read(pack, 0, &byte, 1).code(), absl::StatusCode::kFailedPrecondition);
}

// Random single-byte reads over 40 windows of two files with room for 8;
// after every read the windows really mapped must be exactly the 8 most
// recently used, per /proc/self/maps.
TEST_F(RegionCacheTest, EvictionOrderIsLeastRecentlyUsed) {
  RegionCacheOptions options = SmallOptions();
  options.max_windows = 8;
  auto cache = MakeCache(options);
  const uint64_t window = options.window_size;
  PackFile packs[2] = {AddPack(*cache, "a", 1, 24 * window), AddPack(*cache, "b", 2, 16 * window)};
  const uint64_t seeds[2] = {1, 2};
  const uint64_t windows_in[2] = {24, 16};

  std::list<std::pair<std::string, uint64_t>> model;  // most recent first
  uint64_t model_evictions = 0;
  std::mt19937_64 random(42);
  for (int step = 0; step < 600; ++step) {
    const int p = static_cast<int>(random() % 2);
    // Mostly a small hot set, so that hits reorder the list too.
    const uint64_t index = random() % 4 == 0 ? random() % windows_in[p] : random() % 5;
    const uint64_t offset = index * window + random() % window;
    ExpectRead(*cache, packs[p], seeds[p], offset, 1);

    const std::pair<std::string, uint64_t> key(packs[p].path(), index);
    model.remove(key);
    model.push_front(key);
    if (model.size() > options.max_windows) {
      model.pop_back();
      ++model_evictions;
    }
    const std::set<std::pair<std::string, uint64_t>> expected(model.begin(), model.end());
    ASSERT_EQ(Mappings(*cache).windows, expected) << "after step " << step;
  }
  EXPECT_EQ(cache->GetStats().evictions, model_evictions);
}

TEST_F(RegionCacheTest, PinnedWindowsSurviveEviction) {
  RegionCacheOptions options = SmallOptions();
  options.max_windows = 4;
  auto cache = MakeCache(options);
  const uint64_t window = options.window_size;
  PackFile a = AddPack(*cache, "a", 1, 4 * window);
  PackFile b = AddPack(*cache, "b", 2, 32 * window);

  absl::StatusOr<RegionPin> first = cache->Pin(a, 0, window);
  absl::StatusOr<RegionPin> second = cache->Pin(a, 2 * window + 5, 100);
  ASSERT_TRUE(first.ok() && second.ok());
  ASSERT_TRUE(first->mapped() && second->mapped());
  for (uint64_t i = 0; i < 32; ++i) ExpectRead(*cache, b, 2, i * window, window);

  RealMappings mapped = Mappings(*cache);
  EXPECT_TRUE(mapped.windows.count({a.path(), 0}));
  EXPECT_TRUE(mapped.windows.count({a.path(), 2}));
  EXPECT_LE(mapped.windows.size(), 4u);
  EXPECT_EQ(FirstMismatch(1, 0, first->bytes()), -1);
  EXPECT_EQ(FirstMismatch(1, 2 * window + 5, second->bytes()), -1);
  RegionCacheStats stats = cache->GetStats();
  EXPECT_EQ(stats.pinned_windows, 2u);
  EXPECT_GE(stats.evictions, 28u);

  first->Release();
  second->Release();
  for (uint64_t i = 0; i < 4; ++i) ExpectRead(*cache, b, 2, i * window, 1);
  mapped = Mappings(*cache);
  EXPECT_FALSE(mapped.windows.count({a.path(), 0}));
  EXPECT_FALSE(mapped.windows.count({a.path(), 2}));
}

TEST_F(RegionCacheTest, FallsBackToPreadWhenEverythingIsPinned) {
  RegionCacheOptions options = SmallOptions();
  options.max_windows = 2;
  auto cache = MakeCache(options);
  const uint64_t window = options.window_size;
  PackFile pack = AddPack(*cache, "pack", 3, 8 * window);
  absl::StatusOr<RegionPin> p0 = cache->Pin(pack, 0, 1);
  absl::StatusOr<RegionPin> p1 = cache->Pin(pack, window, 1);
  ASSERT_TRUE(p0.ok() && p1.ok() && p0->mapped() && p1->mapped());

  ExpectRead(*cache, pack, 3, 5 * window - 100, 2 * window);
  absl::StatusOr<RegionPin> p2 = cache->Pin(pack, 6 * window, 10);
  ASSERT_TRUE(p2.ok());
  EXPECT_FALSE(p2->mapped());
  EXPECT_TRUE(p2->bytes().empty());

  RegionCacheStats stats = cache->GetStats();
  EXPECT_EQ(stats.pread_fallbacks, 3u);  // the read touched three windows
  EXPECT_EQ(stats.no_room, 4u);
  EXPECT_EQ(stats.unmapped_pins, 1u);
  EXPECT_EQ(stats.windows, 2u);
  EXPECT_EQ(stats.windows_peak, 2u);
  EXPECT_EQ(Mappings(*cache).windows.size(), 2u);
}

TEST_F(RegionCacheTest, MappedBytesLimitAlsoFallsBack) {
  RegionCacheOptions options = SmallOptions();
  options.max_mapped_bytes = 2 * options.window_size;
  auto cache = MakeCache(options);
  const uint64_t window = options.window_size;
  PackFile pack = AddPack(*cache, "pack", 3, 8 * window);
  absl::StatusOr<RegionPin> p0 = cache->Pin(pack, 0, 1);
  absl::StatusOr<RegionPin> p1 = cache->Pin(pack, window, 1);
  ASSERT_TRUE(p0.ok() && p1.ok() && p0->mapped() && p1->mapped());
  ExpectRead(*cache, pack, 3, 4 * window, window);
  RegionCacheStats stats = cache->GetStats();
  EXPECT_EQ(stats.pread_fallbacks, 1u);
  EXPECT_EQ(stats.no_room, 1u);
  EXPECT_EQ(stats.mapped_bytes_peak, 2 * window);
  EXPECT_EQ(Mappings(*cache).bytes, 2 * window);
}

TEST_F(RegionCacheTest, FirstSmallMissIsServedByPread) {
  RegionCacheOptions options = SmallOptions();
  options.first_miss_pread_max_bytes = 4 * kKiB;
  auto cache = MakeCache(options);
  const uint64_t window = options.window_size;
  PackFile pack = AddPack(*cache, "pack", 4, 8 * window);

  ExpectRead(*cache, pack, 4, 100, 1 * kKiB);
  RegionCacheStats stats = cache->GetStats();
  EXPECT_EQ(stats.first_miss_preads, 1u);
  EXPECT_EQ(stats.pread_fallbacks, 1u);
  EXPECT_EQ(stats.mmap_calls, 0u);
  EXPECT_EQ(Mappings(*cache).windows.size(), 0u);

  ExpectRead(*cache, pack, 4, 5000, 1 * kKiB);  // second miss: mapped
  ExpectRead(*cache, pack, 4, 9000, 1 * kKiB);  // hit
  stats = cache->GetStats();
  EXPECT_EQ(stats.mmap_calls, 1u);
  EXPECT_EQ(stats.hits, 1u);
  EXPECT_EQ(Mappings(*cache).windows.size(), 1u);

  ExpectRead(*cache, pack, 4, 3 * window, 8 * kKiB);  // larger than the rule: mapped at once
  EXPECT_EQ(cache->GetStats().mmap_calls, 2u);
  absl::StatusOr<RegionPin> pin = cache->Pin(pack, 5 * window, 10);  // Pin always maps
  ASSERT_TRUE(pin.ok() && pin->mapped());
  EXPECT_EQ(cache->GetStats().mmap_calls, 3u);
}

// With the admission rule a window that would evict another is mapped only
// once it has been looked up more than twice as often as the least recently
// used window.
TEST_F(RegionCacheTest, AdmitsAWindowUsedMoreOftenThanItsVictim) {
  RegionCacheOptions options = SmallOptions();
  options.max_windows = 2;
  options.admit_by_frequency = true;
  auto cache = MakeCache(options);
  const uint64_t window = options.window_size;
  PackFile pack = AddPack(*cache, "pack", 5, 4 * window);
  for (int i = 0; i < 3; ++i) {
    ExpectRead(*cache, pack, 5, 0, 1);
    ExpectRead(*cache, pack, 5, window, 1);
  }
  // Window 0, the least recently used, was looked up 3 times: window 2 is
  // refused for its first 6 lookups.
  absl::StatusOr<RegionPin> pin = cache->Pin(pack, 2 * window, 1);
  ASSERT_TRUE(pin.ok());
  EXPECT_FALSE(pin->mapped());
  for (int i = 0; i < 5; ++i) ExpectRead(*cache, pack, 5, 2 * window + i, 1);
  RegionCacheStats stats = cache->GetStats();
  EXPECT_EQ(stats.not_admitted, 6u);
  EXPECT_EQ(stats.pread_fallbacks, 5u);
  EXPECT_EQ(stats.unmapped_pins, 1u);
  EXPECT_EQ(stats.evictions, 0u);
  const std::set<std::pair<std::string, uint64_t>> hot = {{pack.path(), 0}, {pack.path(), 1}};
  EXPECT_EQ(Mappings(*cache).windows, hot);

  // The seventh replaces window 0.
  ExpectRead(*cache, pack, 5, 2 * window + 7, 1);
  stats = cache->GetStats();
  EXPECT_EQ(stats.not_admitted, 6u);
  EXPECT_EQ(stats.evictions, 1u);
  const std::set<std::pair<std::string, uint64_t>> now = {{pack.path(), 1}, {pack.path(), 2}};
  EXPECT_EQ(Mappings(*cache).windows, now);
}

TEST_F(RegionCacheTest, ReadsSeeTheFileGrow) {
  RegionCacheOptions options = SmallOptions();
  options.window_size = 4 * kMiB;
  auto cache = MakeCache(options);
  const std::string path = dir_.File("active");
  PackFile pack = AddPack(*cache, "active", 5, 100 * kKiB);
  ExpectRead(*cache, pack, 5, 0, 100 * kKiB);
  absl::StatusOr<RegionPin> tail = cache->Pin(pack, 90 * kKiB, 10 * kKiB);
  ASSERT_TRUE(tail.ok() && tail->mapped());
  EXPECT_EQ(Mappings(*cache).bytes, RegionCache::kTailMappingGranularity);

  // Within the tail mapping: the same window reads the new bytes.
  WritePackBytes(path, 5, 100 * kKiB, 900 * kKiB);
  ExpectRead(*cache, pack, 5, 50 * kKiB, 850 * kKiB);
  EXPECT_EQ(cache->GetStats().mmap_calls, 1u);

  // Past it: a longer mapping replaces the window; the pinned one stays.
  WritePackBytes(path, 5, 900 * kKiB, 3 * kMiB);
  ExpectRead(*cache, pack, 5, 2 * kMiB, kMiB);
  EXPECT_EQ(cache->GetStats().mmap_calls, 2u);
  EXPECT_EQ(Mappings(*cache).bytes, 4 * kMiB);
  EXPECT_EQ(FirstMismatch(5, 90 * kKiB, tail->bytes()), -1);
  tail->Release();
  EXPECT_EQ(Mappings(*cache).bytes, 3 * kMiB);
  EXPECT_EQ(cache->GetStats().mapped_bytes, 3 * kMiB);

  char byte;
  EXPECT_EQ(cache->Read(pack, 3 * kMiB, &byte, 1).code(), absl::StatusCode::kOutOfRange);
  // Growth into the next window, seen through Pin too.
  WritePackBytes(path, 5, 3 * kMiB, 5 * kMiB);
  absl::StatusOr<RegionPin> next = cache->Pin(pack, 4 * kMiB + 1, kMiB - 1);
  ASSERT_TRUE(next.ok() && next->mapped());
  EXPECT_EQ(FirstMismatch(5, 4 * kMiB + 1, next->bytes()), -1);
}

TEST_F(RegionCacheTest, RetireDropsWindowsOnceUnpinned) {
  auto cache = MakeCache(SmallOptions());
  const uint64_t window = cache->options().window_size;
  PackFile pack = AddPack(*cache, "old", 6, 4 * window);
  PackFile other = AddPack(*cache, "other", 7, 2 * window);
  ExpectRead(*cache, pack, 6, 0, 3 * window);
  ExpectRead(*cache, other, 7, 0, 2 * window);
  absl::StatusOr<RegionPin> pin = cache->Pin(pack, window + 7, 100);
  ASSERT_TRUE(pin.ok() && pin->mapped());

  ASSERT_TRUE(cache->Retire(pack).ok());
  ASSERT_EQ(unlink(pack.path().c_str()), 0);
  EXPECT_EQ(FirstMismatch(6, window + 7, pin->bytes()), -1);
  std::set<std::pair<std::string, uint64_t>> expected = {
      {pack.path(), 1}, {other.path(), 0}, {other.path(), 1}};
  EXPECT_EQ(Mappings(*cache).windows, expected);

  char byte;
  EXPECT_EQ(cache->Read(pack, 0, &byte, 1).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(cache->Pin(pack, 0, 1).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(cache->Retire(pack).ok());

  pin->Release();
  expected.erase({pack.path(), 1});
  EXPECT_EQ(Mappings(*cache).windows, expected);
  EXPECT_EQ(DescriptorsUnder(dir_.path()), 1);  // only the other pack's
  RegionCacheStats stats = cache->GetStats();
  EXPECT_EQ(stats.registered_files, 1u);
  EXPECT_EQ(stats.windows, 2u);
  EXPECT_EQ(stats.pinned_windows, 0u);
}

TEST_F(RegionCacheTest, MorePacksThanDescriptors) {
  RegionCacheOptions options = SmallOptions();
  options.max_open_files = 2;
  options.max_windows = 3;
  options.first_miss_pread_max_bytes = 2 * kKiB;
  auto cache = MakeCache(options);
  const uint64_t window = options.window_size;
  std::vector<PackFile> packs;
  for (int i = 0; i < 12; ++i) {
    packs.push_back(AddPack(*cache, "pack" + std::to_string(i), 100 + i, 3 * window));
  }
  EXPECT_EQ(DescriptorsUnder(dir_.path()), 0) << "registering opens nothing";
  std::mt19937_64 random(7);
  for (int step = 0; step < 400; ++step) {
    const size_t p = random() % packs.size();
    const size_t n = 1 + random() % (random() % 2 ? 2 * kKiB : window);
    const uint64_t offset = random() % (3 * window - n);
    ExpectRead(*cache, packs[p], 100 + p, offset, n);
    ASSERT_LE(DescriptorsUnder(dir_.path()), 2) << "after step " << step;
  }
  RegionCacheStats stats = cache->GetStats();
  EXPECT_LE(stats.open_files_peak, 2u);
  EXPECT_GT(stats.descriptor_opens, 12u);
  EXPECT_GT(stats.first_miss_preads, 0u);
}

TEST_F(RegionCacheTest, UnmapIdleDropsWindowsUnusedSinceTheLastCall) {
  auto cache = MakeCache(SmallOptions());
  const uint64_t window = cache->options().window_size;
  PackFile pack = AddPack(*cache, "pack", 10, 4 * window);
  for (uint64_t i = 0; i < 4; ++i) ExpectRead(*cache, pack, 10, i * window, 1);
  EXPECT_EQ(cache->UnmapIdle(), 0u);

  ExpectRead(*cache, pack, 10, window, 1);
  absl::StatusOr<RegionPin> pin = cache->Pin(pack, 2 * window, 1);
  ASSERT_TRUE(pin.ok() && pin->mapped());
  EXPECT_EQ(cache->UnmapIdle(), 2u);  // windows 0 and 3
  const std::set<std::pair<std::string, uint64_t>> used = {{pack.path(), 1}, {pack.path(), 2}};
  EXPECT_EQ(Mappings(*cache).windows, used);

  EXPECT_EQ(cache->UnmapIdle(), 1u);  // window 1; window 2 is pinned
  pin->Release();
  EXPECT_EQ(cache->UnmapIdle(), 0u);  // window 2 was used since: released after the mark
  EXPECT_EQ(cache->UnmapIdle(), 1u);
  EXPECT_EQ(Mappings(*cache).bytes, 0u);
  RegionCacheStats stats = cache->GetStats();
  EXPECT_EQ(stats.idle_unmaps, 4u);
  EXPECT_EQ(stats.evictions, 0u);
  EXPECT_EQ(stats.mapped_bytes, 0u);
}

TEST_F(RegionCacheTest, PinMovesAndReleasesOnce) {
  auto cache = MakeCache(SmallOptions());
  PackFile pack = AddPack(*cache, "pack", 8, 100 * kKiB);
  absl::StatusOr<RegionPin> pin = cache->Pin(pack, 10, 10);
  ASSERT_TRUE(pin.ok());
  RegionPin moved(std::move(*pin));
  EXPECT_FALSE(pin->mapped());
  ASSERT_TRUE(moved.mapped());
  RegionPin assigned;
  assigned = std::move(moved);
  EXPECT_EQ(FirstMismatch(8, 10, assigned.bytes()), -1);
  EXPECT_EQ(cache->GetStats().pinned_windows, 1u);
  assigned.Release();
  assigned.Release();
  EXPECT_EQ(cache->GetStats().pinned_windows, 0u);
  EXPECT_EQ(cache->GetStats().pinned_windows_peak, 1u);
}

TEST_F(RegionCacheTest, StatisticsMatchTheRealMappings) {
  RegionCacheOptions options = SmallOptions();
  options.max_windows = 3;
  auto cache = MakeCache(options);
  const uint64_t window = options.window_size;
  PackFile pack = AddPack(*cache, "pack", 9, 5 * window + 10);
  ExpectRead(*cache, pack, 9, 0, 1);
  ExpectRead(*cache, pack, 9, 1, 1);
  ExpectRead(*cache, pack, 9, 5 * window, 10);
  RegionCacheStats stats = cache->GetStats();
  EXPECT_EQ(stats.hits, 1u);
  EXPECT_EQ(stats.misses, 2u);
  EXPECT_EQ(stats.mmap_calls, 2u);
  EXPECT_EQ(stats.windows, 2u);
  EXPECT_EQ(stats.mapped_bytes, window + window);  // the tail window maps a whole small window
  EXPECT_EQ(stats.mapped_bytes, Mappings(*cache).bytes);
  EXPECT_EQ(stats.open_files, 1u);
  EXPECT_EQ(stats.registered_files, 1u);
  EXPECT_EQ(stats.window_size, window);
  EXPECT_EQ(stats.windows_limit, 3u);

  for (uint64_t i = 0; i < 5; ++i) ExpectRead(*cache, pack, 9, i * window, 1);
  stats = cache->GetStats();
  EXPECT_EQ(stats.windows_peak, 3u);
  EXPECT_EQ(stats.evictions, stats.munmap_calls);
  EXPECT_EQ(stats.mmap_calls - stats.munmap_calls, 3u);
  EXPECT_EQ(stats.mapped_bytes, Mappings(*cache).bytes);
  EXPECT_EQ(stats.mmap_failures + stats.munmap_failures, 0u);
}

TEST_F(RegionCacheTest, DestroyingTheCacheUnmapsAndClosesEverything) {
  auto cache = MakeCache(SmallOptions());
  PackFile a = AddPack(*cache, "a", 1, 300 * kKiB);
  PackFile b = AddPack(*cache, "b", 2, 300 * kKiB);
  ExpectRead(*cache, a, 1, 0, 300 * kKiB);
  ExpectRead(*cache, b, 2, 0, 300 * kKiB);
  EXPECT_GT(Mappings(*cache).bytes, 0u);
  EXPECT_EQ(DescriptorsUnder(dir_.path()), 2);
  const uint64_t window = cache->options().window_size;
  cache.reset();
  EXPECT_EQ(MappingsUnder(dir_.path(), window).bytes, 0u);
  EXPECT_EQ(DescriptorsUnder(dir_.path()), 0);
}

}  // namespace
}  // namespace packstore
