#include "client/lib/rpc_util.h"

#include <thread>

#include "client/lib/fast_path.h"

namespace packstore::client::internal {

Rpc::Rpc() = default;
Rpc::~Rpc() = default;

void Rpc::Prepare(grpc::ClientContext* ctx, bool maintenance) const {
  const std::chrono::milliseconds timeout =
      maintenance ? options.maintenance_timeout : options.timeout;
  if (timeout.count() > 0) ctx->set_deadline(std::chrono::system_clock::now() + timeout);
}

absl::Status ToStatus(const grpc::Status& status, const std::string& socket) {
  if (status.ok()) return absl::OkStatus();
  const auto code = static_cast<absl::StatusCode>(status.error_code());
  // gRPC's own "cannot connect" (the daemon itself never says it) gets the
  // socket and a hint; the daemon's UNAVAILABLE (shutting down, index busy)
  // keeps its message.
  if (code == absl::StatusCode::kUnavailable &&
      (status.error_message().find("failed to connect") != std::string::npos ||
       status.error_message().find("Socket closed") != std::string::npos ||
       status.error_message().find("Connection reset") != std::string::npos)) {
    return absl::UnavailableError("packstored did not answer on " + socket +
                                  " (is it running? PACKSTORE_SOCKET names another socket): " +
                                  status.error_message());
  }
  return absl::Status(code, status.error_message());
}

void SleepBeforeRetry(int attempt_number) {
  std::this_thread::sleep_for(std::chrono::milliseconds(50) * (1 << (2 * (attempt_number - 1))));
}

pb::PutMode ToProto(PutMode mode) {
  switch (mode) {
    case PutMode::kDefault: return pb::PUT_MODE_UNSPECIFIED;
    case PutMode::kAuto: return pb::PUT_MODE_AUTO;
    case PutMode::kLoose: return pb::PUT_MODE_LOOSE;
    case PutMode::kPacked: return pb::PUT_MODE_PACKED;
  }
  return pb::PUT_MODE_UNSPECIFIED;
}

pb::Compression ToProto(Compression compression) {
  switch (compression) {
    case Compression::kDefault: return pb::COMPRESSION_UNSPECIFIED;
    case Compression::kNo: return pb::COMPRESSION_NO;
    case Compression::kYes: return pb::COMPRESSION_YES;
    case Compression::kAuto: return pb::COMPRESSION_AUTO;
  }
  return pb::COMPRESSION_UNSPECIFIED;
}

ObjectInfo FromProto(const pb::ObjectInfo& info) {
  return ObjectInfo{info.key(), info.size(), info.packed(), info.compressed(),
                    info.stored_size()};
}

}  // namespace packstore::client::internal
