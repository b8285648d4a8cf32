// Pieces shared by container.cc and maintenance.cc; not part of the
// engine's interface.
#ifndef PACKSTORE_SERVER_STORE_CONTAINER_INTERNAL_H_
#define PACKSTORE_SERVER_STORE_CONTAINER_INTERNAL_H_

#include <algorithm>
#include <cstring>
#include <string_view>

#include "server/store/container.h"
#include "server/store/object_reader.h"

namespace packstore::internal {

// Objects are streamed in pieces of this size: large enough to amortize
// syscalls, small enough to stay in cache while hashed and compressed.
inline constexpr size_t kChunk = 1 << 20;

// The compression decision for an object whose bytes are known.
bool ShouldCompress(CompressMode mode, std::string_view data);
// The same for an object in a file of `size` bytes, sampled with pread.
absl::StatusOr<bool> ShouldCompressFile(CompressMode mode, int fd, uint64_t size);

// Reads `head` (already taken from `rest`), then the rest of `rest`.
class ChainSource : public ObjectSource {
 public:
  ChainSource(std::string_view head, ObjectSource& rest) : head_(head), rest_(rest) {}
  absl::StatusOr<size_t> Read(char* buf, size_t capacity) override {
    if (head_.empty()) return rest_.Read(buf, capacity);
    size_t n = std::min(capacity, head_.size());
    std::memcpy(buf, head_.data(), n);
    head_.remove_prefix(n);
    return n;
  }

 private:
  std::string_view head_;
  ObjectSource& rest_;
};

// An ObjectReader's content as an ObjectSource.
class ReaderSource : public ObjectSource {
 public:
  explicit ReaderSource(ObjectReader& reader) : reader_(reader) {}
  absl::StatusOr<size_t> Read(char* buf, size_t capacity) override {
    return reader_.Read(buf, capacity);
  }

 private:
  ObjectReader& reader_;
};

}  // namespace packstore::internal

#endif  // PACKSTORE_SERVER_STORE_CONTAINER_INTERNAL_H_
