#include "server/store/pipelined_write.h"

#include <cstring>
#include <utility>

#include "common/status_util.h"

namespace packstore::internal {

PipelinedWrite::PipelinedWrite(WriteFn write, size_t chunk)
    : write_(std::move(write)), chunk_(chunk) {
  for (auto& buffer : buffers_) buffer = std::make_unique_for_overwrite<char[]>(chunk);
  thread_ = std::thread([this] { Run(); });
}

absl::StatusOr<uint64_t> PipelinedWrite::CopyFrom(std::string_view head, ObjectSource& source,
                                                   Hasher& hasher) {
  uint64_t size = 0;
  absl::StatusOr<char*> chunk = NextBuffer();
  if (!chunk.ok()) return chunk.status();
  std::memcpy(*chunk, head.data(), head.size());
  size_t n = head.size();
  while (n != 0) {
    Submit(n);
    hasher.Update(*chunk, n);
    size += n;
    chunk = NextBuffer();
    if (!chunk.ok()) return chunk.status();
    absl::StatusOr<size_t> read = source.Read(*chunk, chunk_);
    if (!read.ok()) return read.status();
    n = *read;
  }
  PACKSTORE_RETURN_IF_ERROR(Finish());
  return size;
}

absl::StatusOr<char*> PipelinedWrite::NextBuffer() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return pending_size_[next_] == 0 || !status_.ok(); });
  if (!status_.ok()) return status_;
  return buffers_[next_].get();
}

void PipelinedWrite::Submit(size_t n) {
  std::lock_guard lock(mu_);
  pending_size_[next_] = n;
  next_ = 1 - next_;
  cv_.notify_all();
}

absl::Status PipelinedWrite::Finish() {
  {
    std::lock_guard lock(mu_);
    if (done_) return status_;
    done_ = true;
    cv_.notify_all();
  }
  thread_.join();
  return status_;
}

void PipelinedWrite::Run() {
  int turn = 0;
  while (true) {
    size_t n;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return pending_size_[turn] != 0 || done_; });
      if (pending_size_[turn] == 0) return;  // done, nothing queued
      n = pending_size_[turn];
    }
    absl::Status status = write_(std::string_view(buffers_[turn].get(), n));
    std::lock_guard lock(mu_);
    pending_size_[turn] = 0;
    if (!status.ok() && status_.ok()) status_ = status;
    turn = 1 - turn;
    cv_.notify_all();
    if (!status_.ok()) return;
  }
}

}  // namespace packstore::internal
