#include "server/service/call_stats.h"

#include <grpcpp/server_context.h>
#include <spdlog/spdlog.h>

#include "common/str_cat.h"

namespace packstore::service {

std::string_view MethodName(Method method) {
  static constexpr std::array<std::string_view, kMethodCount> kNames = {
      "Put", "PutStream", "PutMany", "Get",    "GetMany", "Stat",   "Has",
      "List", "Status",   "Pack",    "Repack", "Clean",   "Delete", "Validate",
      "FastPath.LOCATE", "FastPath.PUT"};
  return kNames[static_cast<int>(method)];
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

CallScope::CallScope(CallStats* stats, Method method) : stats_(stats), method_(method) {
  counters().calls.fetch_add(1, std::memory_order_relaxed);
  counters().active.fetch_add(1, std::memory_order_relaxed);
}

CallScope::CallScope(CallStats* stats, Method method, absl::Status refusal)
    : CallScope(stats, method) {
  admission_ = std::move(refusal);
}

CallScope::CallScope(CallStats* stats, Method method, const StreamShare& share, pid_t client,
                     grpc::CallbackServerContext* ctx)
    : CallScope(stats, method) {
  std::lock_guard lock(stats_->streams_mu);
  if (stats_->streams >= share.total) {
    admission_ = absl::ResourceExhaustedError(
        "too many streaming calls at once (the daemon's limit is --max-streams); "
        "retry when some have finished");
    return;
  }
  auto mine = stats_->client_streams.find(client);
  if (mine != stats_->client_streams.end() && mine->second >= share.per_client) {
    admission_ = absl::ResourceExhaustedError(StrCat(
        "too many streaming calls at once from this client (pid ", client, " runs ", mine->second,
        "; the daemon's limit per client is --max-streams-per-client); "
        "retry when some have finished"));
    return;
  }
  ++stats_->client_streams[client];
  ++stats_->streams;
  client_ = client;
  holds_slot_.store(true, std::memory_order_relaxed);
  watched_.reset(new StreamWatch::Call{.ctx = ctx, .method = method, .client = client});
  stats_->watch.Add(watched_.get());
}

CallScope::CallScope(CallScope&& other) noexcept
    : stats_(other.stats_),
      method_(other.method_),
      admission_(other.admission_),
      client_(other.client_),
      watched_(std::move(other.watched_)),
      ended_(other.ended_),
      holds_slot_(other.holds_slot_.exchange(false)) {
  other.ended_ = true;
}

void CallScope::ReleaseSlot() {
  if (!holds_slot_.exchange(false)) return;
  std::lock_guard lock(stats_->streams_mu);
  --stats_->streams;
  auto mine = stats_->client_streams.find(client_);
  if (--mine->second == 0) stats_->client_streams.erase(mine);
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
  if (watched_) stats_->watch.Remove(watched_.get());
}

namespace {
int64_t SteadyNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

void CallScope::BeginWait() {
  if (!watched_) return;
  int64_t none = 0;
  watched_->waiting_since.compare_exchange_strong(none, SteadyNanos(), std::memory_order_relaxed);
}

void CallScope::EndWait() {
  if (watched_) watched_->waiting_since.store(0, std::memory_order_relaxed);
}

void StreamWatch::Add(Call* call) {
  std::lock_guard lock(mu_);
  calls_.insert(call);
}

void StreamWatch::Remove(Call* call) {
  std::lock_guard lock(mu_);
  calls_.erase(call);
}

size_t StreamWatch::CancelIdle(std::chrono::nanoseconds timeout) {
  const int64_t now = SteadyNanos();
  size_t cancelled = 0;
  std::lock_guard lock(mu_);
  for (Call* call : calls_) {
    const int64_t since = call->waiting_since.load(std::memory_order_relaxed);
    if (call->cancelled || since == 0 || now - since <= timeout.count()) continue;
    call->cancelled = true;
    ++cancelled;
    spdlog::warn("{} from pid {}: cancelled, its client took or sent nothing for {:.1f} s "
                 "(--stream-idle-timeout)",
                 MethodName(call->method), call->client, (now - since) / 1e9);
    call->ctx->TryCancel();
  }
  return cancelled;
}

}  // namespace packstore::service
