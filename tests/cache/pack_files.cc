#include "tests/cache/pack_files.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace packstore::cache_test {
namespace {

uint64_t Word(uint64_t seed, uint64_t word_index) {
  uint64_t x = seed * 0x9e3779b97f4a7c15ULL + word_index;
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

void RemoveTree(const std::string& path) {
  DIR* dir = opendir(path.c_str());
  if (dir == nullptr) return;
  while (dirent* entry = readdir(dir)) {
    std::string name = entry->d_name;
    if (name == "." || name == "..") continue;
    unlink((path + "/" + name).c_str());
  }
  closedir(dir);
  rmdir(path.c_str());
}

// Fills out[0, n) with the pack content from `offset`: byte k of the file
// is byte k % 8 (least significant first) of Word(seed, k / 8). Whole words
// are copied at once, which keeps sanitizer builds fast.
void Generate(uint64_t seed, uint64_t offset, char* out, size_t n) {
  size_t done = 0;
  while (done < n) {
    const uint64_t at = offset + done;
    const uint64_t word = Word(seed, at / 8);
    char bytes[8];
    for (int b = 0; b < 8; ++b) bytes[b] = static_cast<char>(word >> (8 * b));
    const size_t skip = at % 8;
    const size_t take = std::min<size_t>(8 - skip, n - done);
    std::memcpy(out + done, bytes + skip, take);
    done += take;
  }
}

}  // namespace

int64_t FirstMismatch(uint64_t seed, uint64_t offset, std::string_view bytes) {
  std::string expected(bytes.size(), '\0');
  Generate(seed, offset, expected.data(), expected.size());
  if (bytes == expected) return -1;
  for (size_t i = 0;; ++i) {
    if (bytes[i] != expected[i]) return static_cast<int64_t>(offset + i);
  }
}

void WritePackBytes(const std::string& path, uint64_t seed, uint64_t from, uint64_t to) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0) << path << ": " << std::strerror(errno);
  std::vector<char> buffer;
  constexpr uint64_t kChunk = uint64_t{1} << 20;
  for (uint64_t at = from; at < to; at += kChunk) {
    const uint64_t end = std::min(to, at + kChunk);
    buffer.resize(end - at);
    Generate(seed, at, buffer.data(), buffer.size());
    ASSERT_EQ(pwrite(fd, buffer.data(), buffer.size(), static_cast<off_t>(at)),
              static_cast<ssize_t>(buffer.size()))
        << path;
  }
  close(fd);
}

ScratchDir::ScratchDir() {
  std::string pattern = ::testing::TempDir() + "region_cache_XXXXXX";
  std::vector<char> buffer(pattern.begin(), pattern.end());
  buffer.push_back('\0');
  if (mkdtemp(buffer.data()) == nullptr) std::abort();
  path_ = buffer.data();
}

ScratchDir::~ScratchDir() { RemoveTree(path_); }

RealMappings MappingsUnder(const std::string& dir, uint64_t window_size) {
  RealMappings result;
  std::ifstream maps("/proc/self/maps");
  std::string line;
  const std::string prefix = dir + "/";
  while (std::getline(maps, line)) {
    uint64_t start = 0, end = 0, offset = 0;
    int path_at = 0;
    if (std::sscanf(line.c_str(), "%" SCNx64 "-%" SCNx64 " %*s %" SCNx64 " %*s %*s %n", &start,
                    &end, &offset, &path_at) < 3 ||
        path_at == 0) {
      continue;
    }
    std::string path = line.substr(static_cast<size_t>(path_at));
    if (path.compare(0, prefix.size(), prefix) != 0) continue;
    constexpr std::string_view kDeleted = " (deleted)";
    if (path.size() > kDeleted.size() &&
        path.compare(path.size() - kDeleted.size(), kDeleted.size(), kDeleted) == 0) {
      path.resize(path.size() - kDeleted.size());
    }
    result.bytes += end - start;
    ++result.vmas;
    for (uint64_t at = offset; at < offset + (end - start);
         at = (at / window_size + 1) * window_size) {
      result.windows.emplace(path, at / window_size);
    }
  }
  return result;
}

int DescriptorsUnder(const std::string& dir) {
  DIR* fds = opendir("/proc/self/fd");
  if (fds == nullptr) return -1;
  int count = 0;
  const std::string prefix = dir + "/";
  while (dirent* entry = readdir(fds)) {
    char target[4096];
    std::string link = std::string("/proc/self/fd/") + entry->d_name;
    ssize_t length = readlink(link.c_str(), target, sizeof(target) - 1);
    if (length <= 0) continue;
    if (std::string_view(target, static_cast<size_t>(length)).substr(0, prefix.size()) != prefix) {
      continue;
    }
    // The flags line of fdinfo holds the open flags in octal.
    std::ifstream info(std::string("/proc/self/fdinfo/") + entry->d_name);
    std::string key;
    unsigned flags = 0;
    while (info >> key) {
      if (key == "flags:") {
        info >> std::oct >> flags;
        break;
      }
    }
    if ((flags & O_ACCMODE) == O_RDONLY) ++count;
  }
  closedir(fds);
  return count;
}

}  // namespace packstore::cache_test
