// Writes a large object's chunks on a second thread while the caller reads
// and hashes the next one, so the object costs about max(hash, write)
// instead of their sum. Two buffers of `chunk` bytes take turns. Used for
// large objects stored as they are, in packs and loose.
//
//   PipelinedWrite writes([&](std::string_view data) { return Write(data); }, kChunk);
//   PACKSTORE_ASSIGN_OR_RETURN(uint64_t size, writes.CopyFrom(head, source, hasher));
//
// Thread-safety: one caller thread; `write` runs on the writing thread, one
// call at a time, in the order of the bytes. One CopyFrom per object.
#ifndef PACKSTORE_SERVER_STORE_PIPELINED_WRITE_H_
#define PACKSTORE_SERVER_STORE_PIPELINED_WRITE_H_

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string_view>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/hasher.h"
#include "server/store/object_source.h"

namespace packstore::internal {

class PipelinedWrite {
 public:
  using WriteFn = std::function<absl::Status(std::string_view data)>;
  PipelinedWrite(WriteFn write, size_t chunk);
  ~PipelinedWrite() { Finish().IgnoreError(); }
  PipelinedWrite(const PipelinedWrite&) = delete;
  PipelinedWrite& operator=(const PipelinedWrite&) = delete;

  // Writes `head` (bytes already read from `source`, at most `chunk`),
  // then the rest of `source` chunk by chunk, each hashed into `hasher`
  // while the previous one is written, and waits for the last write.
  // Returns the bytes written; the first error of `source` or of the
  // writes.
  absl::StatusOr<uint64_t> CopyFrom(std::string_view head, ObjectSource& source, Hasher& hasher);

 private:
  // The buffer to fill next (`chunk` bytes); waits until its previous
  // write is done. The first write error, if any, instead.
  absl::StatusOr<char*> NextBuffer();
  // Queues the `n` bytes just put into NextBuffer() for writing.
  void Submit(size_t n);
  // Waits for every queued write; returns the first error.
  absl::Status Finish();
  void Run();

  const WriteFn write_;
  const size_t chunk_;
  std::unique_ptr<char[]> buffers_[2];
  std::mutex mu_;
  std::condition_variable cv_;
  size_t pending_size_[2] = {0, 0};  // bytes queued in each buffer
  int next_ = 0;
  bool done_ = false;
  absl::Status status_;
  std::thread thread_;
};

}  // namespace packstore::internal

#endif  // PACKSTORE_SERVER_STORE_PIPELINED_WRITE_H_
