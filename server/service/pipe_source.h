// An ObjectSource fed by a gRPC stream: the reactor pushes the chunks it
// receives, a thread of the upload's own pulls them into the engine
// (Container::PutLoose). Bounded: once `high_water` bytes wait, Push says
// to stop reading, and `resume` runs once the consumer has drained them
// below half of it.
#ifndef PACKSTORE_SERVER_SERVICE_PIPE_SOURCE_H_
#define PACKSTORE_SERVER_SERVICE_PIPE_SOURCE_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "server/store/object_source.h"

namespace packstore::service {

class PipeSource : public ObjectSource {
 public:
  PipeSource(uint64_t high_water, std::function<void()> resume)
      : high_water_(high_water), resume_(std::move(resume)) {}

  // Producer side. Push returns false when the producer must pause until
  // `resume` runs.
  bool Push(std::string chunk);
  void Close();                      // the object is complete
  void Abort(absl::Status status);  // Read fails with `status`

  // Consumer side: blocks until data, the end or an abort.
  absl::StatusOr<size_t> Read(char* buf, size_t capacity) override;

 private:
  const uint64_t high_water_;
  const std::function<void()> resume_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::string> chunks_;
  size_t front_offset_ = 0;
  uint64_t queued_ = 0;
  bool paused_ = false;
  bool closed_ = false;
  absl::Status abort_;
};

}  // namespace packstore::service

#endif  // PACKSTORE_SERVER_SERVICE_PIPE_SOURCE_H_
