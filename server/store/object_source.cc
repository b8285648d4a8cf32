// Chunked object sources; see object_source.h.
#include "server/store/object_source.h"

#include <algorithm>
#include <cstring>

#include "server/store/file_io.h"

namespace packstore {

absl::StatusOr<size_t> StringSource::Read(char* buf, size_t capacity) {
  size_t n = std::min(capacity, data_.size());
  std::memcpy(buf, data_.data(), n);
  data_.remove_prefix(n);
  return n;
}

absl::StatusOr<size_t> FdSource::Read(char* buf, size_t capacity) {
  return ReadUpTo(fd_, buf, capacity);
}

}  // namespace packstore
