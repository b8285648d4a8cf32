#include "server/service/pipe_source.h"

#include <algorithm>
#include <cstring>
#include <utility>

namespace packstore::service {

bool PipeSource::Push(std::string chunk) {
  std::lock_guard lock(mu_);
  queued_ += chunk.size();
  if (!chunk.empty()) chunks_.push_back(std::move(chunk));
  cv_.notify_one();
  if (queued_ < high_water_) return true;
  paused_ = true;
  return false;
}

void PipeSource::Close() {
  std::lock_guard lock(mu_);
  closed_ = true;
  paused_ = false;  // the producer has nothing more to read
  cv_.notify_one();
}

void PipeSource::Abort(absl::Status status) {
  std::lock_guard lock(mu_);
  if (abort_.ok()) abort_ = std::move(status);
  paused_ = false;
  cv_.notify_one();
}

absl::StatusOr<size_t> PipeSource::Read(char* buf, size_t capacity) {
  bool resume = false;
  size_t copied = 0;
  {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [this] { return !abort_.ok() || !chunks_.empty() || closed_; });
    if (!abort_.ok()) return abort_;
    while (copied < capacity && !chunks_.empty()) {
      const std::string& front = chunks_.front();
      const size_t n = std::min(capacity - copied, front.size() - front_offset_);
      std::memcpy(buf + copied, front.data() + front_offset_, n);
      copied += n;
      front_offset_ += n;
      if (front_offset_ == front.size()) {
        chunks_.pop_front();
        front_offset_ = 0;
      }
    }
    queued_ -= copied;
    if (paused_ && queued_ <= high_water_ / 2) {
      paused_ = false;
      resume = true;
    }
  }
  if (resume) resume_();
  return copied;
}

}  // namespace packstore::service
