// StreamWriter: the server-streaming reactor every streaming read and
// maintenance call of the service is built on.
//
// Messages are queued with Push from any thread and written one at a time;
// Close(status) ends the call once the queue has drained. A pull-model call
// overrides Refill, which runs whenever fewer than two messages wait and
// the call is not closed: it produces the next message(s) on a worker
// thread while the previous one is on the wire (double buffering). A
// push-model call (maintenance, GetMany) pushes from a thread of its own as
// it goes and leaves Refill alone; PushWait blocks it while the client is
// behind.
//
// Lifetime: the reactor is reference-counted. gRPC holds one reference
// until OnDone; work running elsewhere (a worker task, a maintenance
// thread) holds another with Ref/Unref, so it may outlive the call and
// push into a finished stream, which drops the messages.
#ifndef PACKSTORE_SERVER_SERVICE_STREAM_WRITER_H_
#define PACKSTORE_SERVER_SERVICE_STREAM_WRITER_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "server/service/call_stats.h"

namespace packstore::service {

template <typename Response>
class StreamWriter : public grpc::ServerWriteReactor<Response> {
 public:
  // Starts producing: called once the reactor is fully built (Refill is
  // virtual), before it is handed to gRPC.
  void Start() {
    std::unique_lock lock(mu_);
    Pump(lock);
  }
  void Ref() { refs_.fetch_add(1, std::memory_order_relaxed); }
  void Unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

 protected:
  explicit StreamWriter(CallScope scope) : scope_(std::move(scope)) {}
  virtual ~StreamWriter() = default;

  // Runs on a gRPC thread with no lock held when the call needs more
  // messages; must eventually Push or Close (usually on a worker).
  virtual void Refill() {}

  void Push(Response message) {
    std::unique_lock lock(mu_);
    if (finished_) return;
    queue_.push_back(std::move(message));
    refilling_ = false;
    Pump(lock);
  }
  void Close(absl::Status status) {
    std::unique_lock lock(mu_);
    CloseLocked(std::move(status));
    Pump(lock);
  }
  // Push for a producer thread of the call's own: blocks while two
  // messages wait to be written. False once the call is over.
  bool PushWait(Response message) {
    std::unique_lock lock(mu_);
    room_.wait(lock, [this] { return finished_ || queue_.size() < 2; });
    if (finished_) return false;
    queue_.push_back(std::move(message));
    Pump(lock);
    return true;
  }
  // Push and Close in one step (no Refill in between).
  void PushLast(Response message, absl::Status status) {
    std::unique_lock lock(mu_);
    if (!finished_) queue_.push_back(std::move(message));
    CloseLocked(std::move(status));
    Pump(lock);
  }
  // True once the client went away or the call ended: stop producing.
  bool done() const { return cancelled_.load(std::memory_order_relaxed); }
  CallScope& scope() { return scope_; }

 private:
  void OnWriteDone(bool ok) override {
    scope_.EndWait();
    std::unique_lock lock(mu_);
    writing_ = false;
    if (!ok) Break();
    Pump(lock);
  }
  void OnCancel() override {
    std::unique_lock lock(mu_);
    Break();
    Pump(lock);
  }
  void OnDone() override {
    cancelled_.store(true, std::memory_order_relaxed);
    scope_.End();
    Unref();
  }

  void CloseLocked(absl::Status status) {
    if (closed_) return;
    closed_ = true;
    final_ = std::move(status);
  }

  void Break() {
    broken_ = true;
    cancelled_.store(true, std::memory_order_relaxed);
  }

  // Starts the next write, finishes the call, or asks for more. Releases
  // the lock before calling into gRPC or Refill.
  void Pump(std::unique_lock<std::mutex>& lock) {
    if (finished_ || writing_) return;
    if (broken_ || (closed_ && queue_.empty())) {
      finished_ = true;
      absl::Status status = broken_ ? absl::CancelledError("the client went away") : final_;
      queue_.clear();
      lock.unlock();
      room_.notify_all();
      this->Finish(scope_.Finish(status));
      return;
    }
    if (!queue_.empty()) {
      current_ = std::move(queue_.front());
      queue_.pop_front();
      writing_ = true;
      scope_.AddBytesOut(current_.ByteSizeLong());
      const bool want_more = !closed_ && !refilling_ && queue_.size() < 2;
      if (want_more) refilling_ = true;
      lock.unlock();
      room_.notify_all();
      scope_.BeginWait();  // until the client has taken it
      this->StartWrite(&current_);
      if (want_more) Refill();
      return;
    }
    if (!closed_ && !refilling_) {
      refilling_ = true;
      lock.unlock();
      Refill();
    }
  }

  CallScope scope_;
  std::atomic<int> refs_{1};
  std::atomic<bool> cancelled_{false};
  std::mutex mu_;
  std::condition_variable room_;
  std::deque<Response> queue_;
  Response current_;
  absl::Status final_;
  bool writing_ = false;
  bool refilling_ = false;
  bool closed_ = false;
  bool broken_ = false;
  bool finished_ = false;
};

}  // namespace packstore::service

#endif  // PACKSTORE_SERVER_SERVICE_STREAM_WRITER_H_
