#include "server/service/call_stats.h"


namespace packstore::service {

std::string_view MethodName(Method method) {
  static constexpr std::array<std::string_view, kMethodCount> kNames = {
      "Put", "PutStream", "PutMany", "Get",    "GetMany", "Stat",   "Has",
      "List", "Status",   "Pack",    "Repack", "Clean",   "Delete", "Validate"};
  return kNames[static_cast<int>(method)];
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

CallScope::CallScope(CallStats* stats, Method method, uint32_t stream_limit)
    : stats_(stats), method_(method), stream_(stream_limit > 0) {
  counters().calls.fetch_add(1, std::memory_order_relaxed);
  counters().active.fetch_add(1, std::memory_order_relaxed);
  if (stream_ && stats_->streams.fetch_add(1, std::memory_order_relaxed) >= stream_limit) {
    admitted_ = false;
  }
}

CallScope::CallScope(CallScope&& other) noexcept
    : stats_(other.stats_),
      method_(other.method_),
      stream_(other.stream_),
      admitted_(other.admitted_),
      ended_(other.ended_) {
  other.ended_ = true;
}

absl::Status CallScope::Admission() const {
  if (admitted_) return absl::OkStatus();
  return absl::ResourceExhaustedError(
      "too many streaming calls at once (the daemon's limit is --max-streams); "
      "retry when some have finished");
}

grpc::Status CallScope::Finish(const absl::Status& status) {
  if (!status.ok()) counters().errors.fetch_add(1, std::memory_order_relaxed);
  return ToGrpcStatus(status);
}

void CallScope::End() {
  if (ended_) return;
  ended_ = true;
  counters().active.fetch_sub(1, std::memory_order_relaxed);
  if (stream_) stats_->streams.fetch_sub(1, std::memory_order_relaxed);
}

}  // namespace packstore::service
