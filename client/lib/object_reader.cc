#include "client/lib/object_reader.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>

namespace packstore::client::internal {

absl::StatusOr<ObjectInfo> StreamGet(const Rpc& rpc, std::string_view key, uint64_t offset,
                                     std::optional<uint64_t> length, bool verify,
                                     const Client::Sink& sink) {
  pb::GetRequest request;
  request.set_key(std::string(key));
  request.set_offset(offset);
  if (length) request.set_length(*length);
  request.set_verify(verify);
  bool delivered = false;
  for (int attempt = 1;; ++attempt) {
    grpc::ClientContext ctx;
    rpc.Prepare(&ctx);
    auto stream = rpc.stub->Get(&ctx, request);
    pb::GetResponse message;
    std::optional<ObjectInfo> info;
    absl::Status sink_status;
    while (stream->Read(&message)) {
      if (!info) info = FromProto(message.info());
      if (message.data().empty()) continue;
      delivered = true;
      sink_status = sink(message.data());
      if (!sink_status.ok()) {
        ctx.TryCancel();
        break;
      }
    }
    const grpc::Status status = stream->Finish();
    if (!sink_status.ok()) return sink_status;
    if (status.ok()) {
      if (!info) return absl::InternalError("packstored ended a Get without the object's metadata");
      return *std::move(info);
    }
    if (status.error_code() != grpc::StatusCode::UNAVAILABLE || delivered ||
        attempt >= rpc.options.max_attempts) {
      return ToStatus(status, rpc.socket);
    }
    SleepBeforeRetry(attempt);
  }
}

namespace {

// Sequential reads stream the rest of the object; the first read after a
// seek asks for one chunk only, so random access (an archive's directory,
// a dataset's chunks) does not pull bytes nobody reads. A read that goes on
// where that chunk ended opens the stream to the end.
class StreamingReader final : public ObjectReader {
 public:
  StreamingReader(std::shared_ptr<const Rpc> rpc, ObjectInfo info)
      : rpc_(std::move(rpc)), info_(std::move(info)) {}
  ~StreamingReader() override { CloseStream(); }

  const ObjectInfo& info() const override { return info_; }
  uint64_t Tell() const override { return position_; }
  void Seek(uint64_t offset) override { position_ = offset; }

  absl::StatusOr<size_t> Read(char* buffer, size_t n) override {
    if (n == 0 || position_ >= info_.size) return 0;
    if (position_ < buffer_offset_ || position_ >= buffer_offset_ + buffer_.size()) {
      if (absl::Status status = Fill(); !status.ok()) return status;
    }
    const size_t skip = position_ - buffer_offset_;
    const size_t count = std::min(n, buffer_.size() - skip);
    std::memcpy(buffer, buffer_.data() + skip, count);
    position_ += count;
    return count;
  }

  absl::StatusOr<size_t> ReadAt(uint64_t offset, char* buffer, size_t n) override {
    if (n == 0 || offset >= info_.size) return 0;
    size_t count = 0;
    absl::StatusOr<ObjectInfo> got =
        StreamGet(*rpc_, info_.key, offset, n, false, [&](std::string_view chunk) {
          const size_t take = std::min(chunk.size(), n - count);
          std::memcpy(buffer + count, chunk.data(), take);
          count += take;
          return absl::OkStatus();
        });
    if (!got.ok()) return got.status();
    return count;
  }

 private:
  // Makes the buffer hold the bytes at position_ (position_ < size).
  absl::Status Fill() {
    if (!stream_ || stream_next_ != position_) {
      const bool sequential = position_ == buffer_offset_ + buffer_.size() && !buffer_.empty();
      if (absl::Status status = OpenStream(sequential); !status.ok()) return status;
    }
    while (true) {
      pb::GetResponse message;
      if (!stream_->Read(&message)) {
        const grpc::Status status = stream_->Finish();
        stream_.reset();
        ctx_.reset();
        if (!status.ok()) return ToStatus(status, rpc_->socket);
        // The bounded read is complete: carry on with the rest.
        if (absl::Status reopened = OpenStream(true); !reopened.ok()) return reopened;
        continue;
      }
      if (message.data().empty()) continue;
      buffer_offset_ = stream_next_;
      stream_next_ += message.data().size();
      buffer_ = std::move(*message.mutable_data());
      if (position_ < stream_next_) return absl::OkStatus();
    }
  }

  // A Get from position_: to the end when reading on sequentially, else
  // one chunk.
  absl::Status OpenStream(bool to_end) {
    CloseStream();
    if (position_ >= info_.size) {
      return absl::DataLossError("object " + info_.key + " ended before its recorded size");
    }
    pb::GetRequest request;
    request.set_key(info_.key);
    request.set_offset(position_);
    if (!to_end) request.set_length(kChunkSize);
    ctx_ = std::make_unique<grpc::ClientContext>();
    rpc_->Prepare(ctx_.get());
    stream_ = rpc_->stub->Get(ctx_.get(), request);
    stream_next_ = position_;
    return absl::OkStatus();
  }

  void CloseStream() {
    if (!stream_) return;
    ctx_->TryCancel();
    stream_->Finish().IgnoreError();
    stream_.reset();
    ctx_.reset();
  }

  const std::shared_ptr<const Rpc> rpc_;
  const ObjectInfo info_;
  uint64_t position_ = 0;
  // Bytes [buffer_offset_, buffer_offset_ + buffer_.size()) of the object.
  std::string buffer_;
  uint64_t buffer_offset_ = 0;
  std::unique_ptr<grpc::ClientContext> ctx_;
  std::unique_ptr<grpc::ClientReader<pb::GetResponse>> stream_;
  uint64_t stream_next_ = 0;  // offset of the stream's next byte
};

class LocatedReader final : public ObjectReader {
 public:
  LocatedReader(ObjectInfo info, LocatedObject located)
      : info_(std::move(info)), located_(std::move(located)) {}

  const ObjectInfo& info() const override { return info_; }
  uint64_t Tell() const override { return position_; }
  void Seek(uint64_t offset) override { position_ = offset; }

  absl::StatusOr<size_t> Read(char* buffer, size_t n) override {
    absl::StatusOr<size_t> got = ReadAt(position_, buffer, n);
    if (got.ok()) position_ += *got;
    return got;
  }

  absl::StatusOr<size_t> ReadAt(uint64_t offset, char* buffer, size_t n) override {
    if (offset >= located_.size) return 0;
    const size_t count = static_cast<size_t>(std::min<uint64_t>(n, located_.size - offset));
    if (absl::Status status = ReadLocated(located_, offset, count, buffer); !status.ok()) {
      return status;
    }
    return count;
  }

 private:
  const ObjectInfo info_;
  const LocatedObject located_;
  uint64_t position_ = 0;
};

}  // namespace

std::unique_ptr<ObjectReader> NewLocatedReader(ObjectInfo info, LocatedObject located) {
  return std::make_unique<LocatedReader>(std::move(info), std::move(located));
}

std::unique_ptr<ObjectReader> NewObjectReader(std::shared_ptr<const Rpc> rpc, ObjectInfo info) {
  return std::make_unique<StreamingReader>(std::move(rpc), std::move(info));
}

}  // namespace packstore::client::internal
