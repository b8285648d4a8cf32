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
    : stats_(stats), method_(method) {
  counters().calls.fetch_add(1, std::memory_order_relaxed);
  counters().active.fetch_add(1, std::memory_order_relaxed);
  if (stream_limit == 0) return;
  if (stats_->streams.fetch_add(1, std::memory_order_relaxed) >= stream_limit) {
    stats_->streams.fetch_sub(1, std::memory_order_relaxed);
    admitted_ = false;
  } else {
    holds_slot_.store(true, std::memory_order_relaxed);
  }
}

CallScope::CallScope(CallScope&& other) noexcept
    : stats_(other.stats_),
      method_(other.method_),
      admitted_(other.admitted_),
      ended_(other.ended_),
      holds_slot_(other.holds_slot_.exchange(false)) {
  other.ended_ = true;
}

void CallScope::ReleaseSlot() {
  if (holds_slot_.exchange(false)) stats_->streams.fetch_sub(1, std::memory_order_relaxed);
}

absl::Status CallScope::Admission() const {
  if (admitted_) return absl::OkStatus();
  return absl::ResourceExhaustedError(
      "too many streaming calls at once (the daemon's limit is --max-streams); "
      "retry when some have finished");
}

grpc::Status CallScope::Finish(const absl::Status& status) {
  if (!status.ok()) counters().errors.fetch_add(1, std::memory_order_relaxed);
  ReleaseSlot();
  return ToGrpcStatus(status);
}

void CallScope::End() {
  if (ended_) return;
  ended_ = true;
  counters().active.fetch_sub(1, std::memory_order_relaxed);
  ReleaseSlot();
}

}  // namespace packstore::service
