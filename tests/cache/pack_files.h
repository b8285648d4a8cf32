// Test helpers for the region cache: pack files whose every byte is a
// function of (seed, offset), and what the process really has mapped and
// open according to /proc/self/maps and /proc/self/fd.
#ifndef PACKSTORE_TESTS_CACHE_PACK_FILES_H_
#define PACKSTORE_TESTS_CACHE_PACK_FILES_H_

#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <utility>

namespace packstore::cache_test {

// Every byte of a pack written with `seed` is a function of (seed, offset).
// Returns the offset of the first byte of `bytes` (read from `offset`) that
// is not what the pack holds there, or -1 when all match.
int64_t FirstMismatch(uint64_t seed, uint64_t offset, std::string_view bytes);

// Writes bytes [from, to) of the pack with `seed` at those offsets of the
// file at `path`, creating it if needed. Aborts the test on I/O errors.
void WritePackBytes(const std::string& path, uint64_t seed, uint64_t from, uint64_t to);

// A fresh directory under the test temp dir; removed with its files.
class ScratchDir {
 public:
  ScratchDir();
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const std::string& path() const { return path_; }
  std::string File(std::string_view name) const { return path_ + "/" + std::string(name); }

 private:
  std::string path_;
};

// What /proc/self/maps says is mapped from files under `dir` (including
// files unlinked since).
struct RealMappings {
  uint64_t bytes = 0;
  uint64_t vmas = 0;
  // (file path without " (deleted)", window index) of every window touched
  // by a mapping, given the window size; the kernel may merge neighbours.
  std::set<std::pair<std::string, uint64_t>> windows;
};
RealMappings MappingsUnder(const std::string& dir, uint64_t window_size);

// Read-only descriptors of the process on files under `dir`: the cache's,
// not those of a test writing packs.
int DescriptorsUnder(const std::string& dir);

}  // namespace packstore::cache_test

#endif  // PACKSTORE_TESTS_CACHE_PACK_FILES_H_
