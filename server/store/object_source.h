// ObjectSource: where the bytes of an object being written come from, read
// in chunks so that objects of any size are stored in constant memory.
//
// Thread-safety: a source is read by one thread at a time.
//
//   StringSource src(data);          // bytes known up front
//   FdSource src(fd);                // a file or pipe, read to its end
#ifndef PACKSTORE_SERVER_STORE_OBJECT_SOURCE_H_
#define PACKSTORE_SERVER_STORE_OBJECT_SOURCE_H_

#include <cstddef>
#include <string_view>

#include "absl/status/statusor.h"

namespace packstore {

class ObjectSource {
 public:
  virtual ~ObjectSource() = default;
  // Copies up to `capacity` next bytes into `buf`; returns 0 only at the end
  // of the object. An error aborts the write that reads it (nothing is
  // stored).
  virtual absl::StatusOr<size_t> Read(char* buf, size_t capacity) = 0;
};

// Reads from bytes in memory (not copied: they must outlive the source).
class StringSource : public ObjectSource {
 public:
  explicit StringSource(std::string_view data) : data_(data) {}
  absl::StatusOr<size_t> Read(char* buf, size_t capacity) override;

 private:
  std::string_view data_;
};

// Reads a file descriptor (not owned) from its current position to its end.
class FdSource : public ObjectSource {
 public:
  explicit FdSource(int fd) : fd_(fd) {}
  absl::StatusOr<size_t> Read(char* buf, size_t capacity) override;

 private:
  int fd_;
};

}  // namespace packstore

#endif  // PACKSTORE_SERVER_STORE_OBJECT_SOURCE_H_
