// Per-method call statistics (for Status) and the scope of one call: it
// counts the call, its bytes and its outcome, and holds a slot of the
// concurrent-stream limits (all clients together, and its client's share)
// while a streaming call runs, during which the stream watch knows whether
// the call waits on its client (for the idle timeout).
#ifndef PACKSTORE_SERVER_SERVICE_CALL_STATS_H_
#define PACKSTORE_SERVER_SERVICE_CALL_STATS_H_

#include <grpcpp/support/status.h>
#include <sys/types.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"

namespace grpc {
class CallbackServerContext;
}

namespace packstore::service {

// The ObjectStore methods in the proto's order, then the fast path's
// requests (counted as calls too).
enum class Method {
  kPut, kPutStream, kPutMany, kGet, kGetMany, kStat, kHas, kList, kStatus,
  kPack, kRepack, kClean, kDelete, kValidate, kFastLocate, kFastPut,
};
inline constexpr int kMethodCount = 16;
std::string_view MethodName(Method method);

struct MethodCounters {
  std::atomic<uint64_t> calls{0};
  std::atomic<uint64_t> errors{0};
  std::atomic<uint64_t> active{0};
  std::atomic<uint64_t> bytes_in{0};
  std::atomic<uint64_t> bytes_out{0};
};

// The streaming calls running, and since when each has waited on its
// client: a call waits while the client has not taken a message the call
// wrote, or has not sent one the call asked for. Thread-safe.
class StreamWatch {
 public:
  struct Call {
    grpc::CallbackServerContext* ctx;
    Method method;
    pid_t client;
    // steady_clock nanoseconds of when the wait began; 0: not waiting.
    std::atomic<int64_t> waiting_since{0};
    bool cancelled = false;  // under the watch's lock
  };
  void Add(Call* call);
  // Once this returns, CancelIdle no longer touches `call` or its context
  // (a call's OnDone removes it, before gRPC frees the context).
  void Remove(Call* call);
  // Cancels (ServerContext::TryCancel, which runs the call's reactions on
  // gRPC's threads, never inline) every call that has waited longer than
  // `timeout`, each once. Returns how many it cancelled.
  size_t CancelIdle(std::chrono::nanoseconds timeout);

 private:
  std::mutex mu_;
  absl::flat_hash_set<Call*> calls_;
};

struct CallStats {
  std::array<MethodCounters, kMethodCount> methods;
  StreamWatch watch;
  std::mutex streams_mu;
  uint32_t streams = 0;                                 // streaming calls running now
  absl::flat_hash_map<pid_t, uint32_t> client_streams;  // the same, by client process
};

// The stream slots a streaming call may take: `total` for all clients
// together, `per_client` for the calls of one client process.
struct StreamShare {
  uint32_t total = 1;
  uint32_t per_client = 1;
};

// The same code and message, as gRPC carries them.
grpc::Status ToGrpcStatus(const absl::Status& status);

class CallScope {
 public:
  // A unary call.
  CallScope(CallStats* stats, Method method);
  // A streaming call of process `client`: takes a slot of `share` and is
  // watched; if no slot is left, Admission() is RESOURCE_EXHAUSTED and the
  // call must finish at once with it (it holds no slot, nobody watches it).
  CallScope(CallStats* stats, Method method, const StreamShare& share, pid_t client,
            grpc::CallbackServerContext* ctx);
  // A streaming call refused before it began (its peer may not make it):
  // Admission() is `refusal`.
  CallScope(CallStats* stats, Method method, absl::Status refusal);
  CallScope(CallScope&& other) noexcept;
  CallScope(const CallScope&) = delete;
  CallScope& operator=(const CallScope&) = delete;
  ~CallScope() { End(); }

  const absl::Status& Admission() const { return admission_; }
  Method method() const { return method_; }
  void AddBytesIn(uint64_t n) { counters().bytes_in.fetch_add(n, std::memory_order_relaxed); }
  void AddBytesOut(uint64_t n) { counters().bytes_out.fetch_add(n, std::memory_order_relaxed); }
  // Records the outcome and converts it; releases the stream slot, so that
  // once a client has the answer, its next call finds the slot free.
  grpc::Status Finish(const absl::Status& status);
  // Releases the call's active count, (if Finish did not) its stream slot,
  // and its watch (idempotent). Runs in OnDone, or earlier.
  void End();
  // The call waits on its client from now on (unless it already did), or
  // no longer: the client took a message or sent one.
  void BeginWait();
  void EndWait();

 private:
  MethodCounters& counters() { return stats_->methods[static_cast<int>(method_)]; }

  void ReleaseSlot();

  CallStats* stats_;
  Method method_;
  absl::Status admission_;
  pid_t client_ = 0;
  std::unique_ptr<StreamWatch::Call> watched_;  // a streaming call's, once admitted
  bool ended_ = false;
  // A refused call gives its slot back at once; Finish and End may run on
  // different threads, one after the other.
  std::atomic<bool> holds_slot_{false};
};

}  // namespace packstore::service

#endif  // PACKSTORE_SERVER_SERVICE_CALL_STATS_H_
