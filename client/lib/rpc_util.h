// Internals of the client library shared by its files: the stub and the
// options a call runs with, the mapping of gRPC results to Status values,
// and the retry loop for calls that are safe to repeat.
//
// Thread-safety: Rpc is immutable after construction and shared by every
// thread of a Client and by its readers.
#ifndef PACKSTORE_CLIENT_LIB_RPC_UTIL_H_
#define PACKSTORE_CLIENT_LIB_RPC_UTIL_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <type_traits>

#include "absl/status/status.h"
#include "packstore/client.h"
#include "packstore/v1/packstore.grpc.pb.h"

namespace packstore::client::internal {

namespace pb = ::packstore::v1;

// Objects up to this size travel whole in one message; larger ones in
// chunks of this size (the daemon's own chunk size).
inline constexpr size_t kChunkSize = size_t{1} << 20;

class FastPath;

struct Rpc {
  std::string socket;
  ClientOptions options;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<pb::ObjectStore::Stub> stub;
  // Null when ClientOptions::fast_path is off.
  std::unique_ptr<FastPath> fast_path;

  Rpc();
  ~Rpc();

  // A context carrying the call's deadline.
  void Prepare(grpc::ClientContext* ctx, bool maintenance = false) const;
};

// The daemon's code and message; UNAVAILABLE says which socket did not
// answer.
absl::Status ToStatus(const grpc::Status& status, const std::string& socket);

// Sleeps before attempt number `attempt_number` + 1 (50 ms, 200 ms, ...).
void SleepBeforeRetry(int attempt_number);

// Runs `attempt` until it returns something other than UNAVAILABLE, at most
// options.max_attempts times, with a short backoff in between. `attempt`
// must be safe to repeat.
template <typename Attempt>
auto Retrying(const Rpc& rpc, Attempt attempt) -> decltype(attempt()) {
  for (int i = 1;; ++i) {
    auto result = attempt();
    absl::Status status;
    if constexpr (std::is_same_v<decltype(result), absl::Status>) {
      status = result;
    } else {
      status = result.status();
    }
    if (!absl::IsUnavailable(status) || i >= rpc.options.max_attempts) return result;
    SleepBeforeRetry(i);
  }
}

pb::PutMode ToProto(PutMode mode);
pb::Compression ToProto(Compression compression);
ObjectInfo FromProto(const pb::ObjectInfo& info);

}  // namespace packstore::client::internal

#endif  // PACKSTORE_CLIENT_LIB_RPC_UTIL_H_
