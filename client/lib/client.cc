#include "packstore/client.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <grpcpp/grpcpp.h>
#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <future>
#include <unordered_set>
#include <utility>

#include "client/lib/fast_path.h"
#include "client/lib/object_reader.h"
#include "client/lib/rpc_util.h"

namespace packstore::client {

using internal::Codec;
using internal::FromProto;
using internal::LocatedObject;
using internal::kChunkSize;
using internal::kMaxLocateKeys;
using internal::Retrying;
using internal::Rpc;
using internal::StreamGet;
using internal::ToProto;
using internal::ToStatus;
namespace pb = ::packstore::v1;

std::string DefaultSocketPath() {
  const char* env = std::getenv("PACKSTORE_SOCKET");
  if (env != nullptr && *env != '\0') return env;
  return "/run/packstore/packstore.sock";
}

absl::StatusOr<ObjectRef> Client::PutStream(std::istream& in, const PutOptions& options) {
  return PutStream(
      [&in](char* buffer, size_t n) -> absl::StatusOr<size_t> {
        in.read(buffer, static_cast<std::streamsize>(n));
        if (in.bad()) return absl::DataLossError("reading the input stream failed");
        return static_cast<size_t>(in.gcount());
      },
      options);
}

namespace {

// Keys and objects per request message: well under the daemon's 16 MiB
// message limit (a key is 64 bytes plus framing).
constexpr size_t kKeysPerCall = 16384;
constexpr size_t kPutManyBatchBytes = size_t{1} << 20;
constexpr size_t kPutManyBatchObjects = 4096;
// PutMany batches sent ahead of the answers read back.
constexpr size_t kPutManyInFlight = 4;
// Fast-path GetMany reads neighbours in one pread across gaps up to this.
constexpr uint64_t kCoalesceGap = 4096;

absl::Status ErrnoError(int err, const std::string& what) {
  const std::string message = what + ": " + std::strerror(err);
  switch (err) {
    case ENOENT: return absl::NotFoundError(message);
    case EACCES:
    case EPERM: return absl::PermissionDeniedError(message);
    case EISDIR:
    case EINVAL: return absl::InvalidArgumentError(message);
    default: return absl::UnknownError(message);
  }
}

// Calls that return one message per key, for any number of keys.
template <typename Call>
absl::Status ForKeyBatches(std::span<const std::string> keys, Call call) {
  for (size_t begin = 0; begin < keys.size(); begin += kKeysPerCall) {
    absl::Status status = call(keys.subspan(begin, std::min(kKeysPerCall, keys.size() - begin)));
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

// A maintenance call: progress to the callback, then its result. Never
// retried.
template <typename Response, typename OnEvent>
absl::Status RunMaintenance(const Rpc& rpc, std::unique_ptr<grpc::ClientReader<Response>> stream,
                            const ProgressCallback& progress, OnEvent on_event) {
  Response message;
  bool finished = false;
  while (stream->Read(&message)) {
    if (message.has_progress()) {
      if (progress) {
        const pb::Progress& p = message.progress();
        progress(Progress{p.phase(), p.done(), p.total()});
      }
      continue;
    }
    finished |= on_event(message);
  }
  const grpc::Status status = stream->Finish();
  if (!status.ok()) return ToStatus(status, rpc.socket);
  if (!finished) return absl::InternalError("packstored ended the call without its result");
  return absl::OkStatus();
}

class ClientImpl final : public Client {
 public:
  explicit ClientImpl(std::shared_ptr<const Rpc> rpc) : rpc_(std::move(rpc)) {}

  const std::string& socket() const override { return rpc_->socket; }

  absl::StatusOr<ObjectRef> Put(std::string_view data, const PutOptions& options) override {
    if (data.size() > kChunkSize) {
      return Retrying(*rpc_, [&] {
        size_t sent = 0;
        return PutStream(
            [&](char* buffer, size_t n) -> absl::StatusOr<size_t> {
              const size_t count = std::min(n, data.size() - sent);
              std::memcpy(buffer, data.data() + sent, count);
              sent += count;
              return count;
            },
            options);
      });
    }
    pb::PutRequest request;
    *request.mutable_options() = ToOptions(options);
    request.set_data(std::string(data));
    return Retrying(*rpc_, [&]() -> absl::StatusOr<ObjectRef> {
      grpc::ClientContext ctx;
      rpc_->Prepare(&ctx);
      pb::PutResponse response;
      grpc::Status status = rpc_->stub->Put(&ctx, request, &response);
      if (!status.ok()) return ToStatus(status, rpc_->socket);
      return ObjectRef{response.object().key(), response.object().size()};
    });
  }

  absl::StatusOr<ObjectRef> PutStream(const Source& source, const PutOptions& options) override {
    grpc::ClientContext ctx;
    rpc_->Prepare(&ctx);
    pb::PutStreamResponse response;
    auto stream = rpc_->stub->PutStream(&ctx, &response);
    pb::PutStreamRequest message;
    *message.mutable_options() = ToOptions(options);
    std::string* data = message.mutable_data();
    bool sending = true;
    while (sending) {
      data->resize(kChunkSize);
      absl::StatusOr<size_t> n = source(data->data(), data->size());
      if (!n.ok()) {
        ctx.TryCancel();
        stream->Finish().IgnoreError();
        return n.status();
      }
      data->resize(*n);
      if (*n == 0) message.set_finish_write(true);
      // A failed write means the daemon ended the call: Finish says why.
      sending = stream->Write(message) && *n > 0;
      message.clear_options();
    }
    stream->WritesDone();
    grpc::Status status = stream->Finish();
    if (!status.ok()) return ToStatus(status, rpc_->socket);
    return ObjectRef{response.object().key(), response.object().size()};
  }

  absl::StatusOr<ObjectRef> PutFile(const std::string& path, const PutOptions& options) override {
    return Retrying(*rpc_, [&]() -> absl::StatusOr<ObjectRef> {
      const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) return ErrnoError(errno, "cannot open " + path);
      struct stat st {};
      if (::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        ::close(fd);
        return ErrnoError(EISDIR, "cannot store " + path);
      }
      if (rpc_->fast_path != nullptr && S_ISREG(st.st_mode)) {
        // The daemon reads the file itself: no byte crosses the socket.
        absl::StatusOr<ObjectRef> ref = rpc_->fast_path->PutFile(fd, options);
        if (ref.ok() || !absl::IsUnavailable(ref.status())) {
          ::close(fd);
          return ref;
        }
      }
      ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
      absl::StatusOr<ObjectRef> ref = PutStream(
          [&](char* buffer, size_t n) -> absl::StatusOr<size_t> {
            size_t filled = 0;
            while (filled < n) {
              const ssize_t got = ::read(fd, buffer + filled, n - filled);
              if (got < 0 && errno == EINTR) continue;
              if (got < 0) return ErrnoError(errno, "reading " + path);
              if (got == 0) break;
              filled += static_cast<size_t>(got);
            }
            return filled;
          },
          options);
      ::close(fd);
      return ref;
    });
  }

  absl::StatusOr<std::vector<ObjectRef>> PutMany(std::span<const std::string_view> objects,
                                                 const PutOptions& options) override {
    std::vector<ObjectRef> refs(objects.size());
    // Objects too large for a batch message go on their own.
    std::vector<size_t> batched;
    for (size_t i = 0; i < objects.size(); ++i) {
      if (objects[i].size() > kChunkSize) {
        absl::StatusOr<ObjectRef> ref = Put(objects[i], options);
        if (!ref.ok()) return ref.status();
        refs[i] = *std::move(ref);
      } else {
        batched.push_back(i);
      }
    }
    if (batched.empty()) return refs;
    absl::Status status = Retrying(*rpc_, [&] { return PutBatches(objects, batched, options, refs); });
    if (!status.ok()) return status;
    return refs;
  }

  absl::StatusOr<std::string> Get(std::string_view key, bool verify) override {
    if (!verify) {
      absl::StatusOr<LocatedObject> located = LocateOne(key);
      if (located.ok()) {
        std::string out(located->size, '\0');
        absl::Status status = internal::ReadLocated(*located, 0, out.size(), out.data());
        if (!status.ok()) return status;
        return out;
      }
      if (!absl::IsUnavailable(located.status())) return located.status();
    }
    return Retrying(*rpc_, [&]() -> absl::StatusOr<std::string> {
      std::string out;
      bool reserved = false;
      absl::StatusOr<ObjectInfo> info =
          StreamGet(*rpc_, key, 0, std::nullopt, verify, [&](std::string_view chunk) {
            if (!reserved) {
              reserved = true;
              out.reserve(chunk.size() > kChunkSize / 2 ? 4 * chunk.size() : chunk.size());
            }
            out.append(chunk);
            return absl::OkStatus();
          });
      if (!info.ok()) return info.status();
      return out;
    });
  }

  absl::StatusOr<std::string> GetRange(std::string_view key, uint64_t offset,
                                       uint64_t length) override {
    absl::StatusOr<LocatedObject> located = LocateOne(key);
    if (located.ok()) {
      const uint64_t begin = std::min(offset, located->size);
      std::string out(std::min(length, located->size - begin), '\0');
      absl::Status status = internal::ReadLocated(*located, begin, out.size(), out.data());
      if (!status.ok()) return status;
      return out;
    }
    if (!absl::IsUnavailable(located.status())) return located.status();
    std::string out;
    absl::StatusOr<ObjectInfo> info =
        StreamGet(*rpc_, key, offset, length, false, [&](std::string_view chunk) {
          out.append(chunk);
          return absl::OkStatus();
        });
    if (!info.ok()) return info.status();
    return out;
  }

  absl::StatusOr<uint64_t> GetTo(std::string_view key, const Sink& sink, bool verify) override {
    if (!verify) {
      absl::StatusOr<LocatedObject> located = LocateOne(key);
      if (located.ok()) {
        absl::Status status = internal::StreamLocated(*located, kChunkSize, sink);
        if (!status.ok()) return status;
        return located->size;
      }
      if (!absl::IsUnavailable(located.status())) return located.status();
    }
    absl::StatusOr<ObjectInfo> info = StreamGet(*rpc_, key, 0, std::nullopt, verify, sink);
    if (!info.ok()) return info.status();
    return info->size;
  }

  absl::StatusOr<std::unique_ptr<ObjectReader>> Open(std::string_view key) override {
    const std::string keys[] = {std::string(key)};
    absl::StatusOr<std::vector<std::optional<ObjectInfo>>> stats = Stat(keys);
    if (!stats.ok()) return stats.status();
    if (!(*stats)[0]) return absl::NotFoundError("object " + keys[0] + " not found");
    if (!(*stats)[0]->compressed) {
      absl::StatusOr<LocatedObject> located = LocateOne(key);
      if (located.ok()) return internal::NewLocatedReader(*std::move((*stats)[0]), *std::move(located));
      if (!absl::IsUnavailable(located.status())) return located.status();
    }
    return internal::NewObjectReader(rpc_, *std::move((*stats)[0]));
  }

  absl::Status GetMany(std::span<const std::string> keys, const PieceCallback& on_piece) override {
    // Each distinct key once, whichever call of the batches asks for it.
    std::vector<std::string> unique;
    unique.reserve(keys.size());
    std::unordered_set<std::string_view> seen;
    for (const std::string& key : keys) {
      if (seen.insert(key).second) unique.push_back(key);
    }
    if (rpc_->fast_path != nullptr && rpc_->fast_path->available()) {
      absl::StatusOr<std::vector<std::string>> rest = GetManyFast(unique, on_piece);
      if (!rest.ok()) return rest.status();
      unique = *std::move(rest);
    }
    return ForKeyBatches(unique, [&](std::span<const std::string> batch) {
      pb::GetManyRequest request;
      for (const std::string& key : batch) request.add_keys(key);
      bool delivered = false;
      return Retrying(*rpc_, [&]() -> absl::Status {
        if (delivered) return absl::OkStatus();
        grpc::ClientContext ctx;
        rpc_->Prepare(&ctx);
        auto stream = rpc_->stub->GetMany(&ctx, request);
        pb::GetManyResponse message;
        absl::Status callback_status;
        while (callback_status.ok() && stream->Read(&message)) {
          for (const pb::ObjectPiece& p : message.pieces()) {
            delivered = true;
            callback_status = on_piece(ObjectPiece{p.key(), p.size(), p.offset(), p.data(), p.missing()});
            if (!callback_status.ok()) {
              ctx.TryCancel();
              break;
            }
          }
        }
        const grpc::Status status = stream->Finish();
        if (!callback_status.ok()) return callback_status;
        absl::Status result = ToStatus(status, rpc_->socket);
        // Once pieces were handed out the call cannot be repeated.
        if (delivered && absl::IsUnavailable(result)) {
          return absl::AbortedError(std::string(result.message()));
        }
        return result;
      });
    });
  }

  absl::StatusOr<std::vector<bool>> Has(std::span<const std::string> keys) override {
    std::vector<bool> present;
    present.reserve(keys.size());
    absl::Status status = ForKeyBatches(keys, [&](std::span<const std::string> batch) {
      pb::HasRequest request;
      for (const std::string& key : batch) request.add_keys(key);
      return Retrying(*rpc_, [&]() -> absl::Status {
        grpc::ClientContext ctx;
        rpc_->Prepare(&ctx);
        pb::HasResponse response;
        grpc::Status s = rpc_->stub->Has(&ctx, request, &response);
        if (!s.ok()) return ToStatus(s, rpc_->socket);
        present.insert(present.end(), response.present().begin(), response.present().end());
        return absl::OkStatus();
      });
    });
    if (!status.ok()) return status;
    return present;
  }

  absl::StatusOr<std::vector<std::optional<ObjectInfo>>> Stat(
      std::span<const std::string> keys) override {
    std::vector<std::optional<ObjectInfo>> infos;
    infos.reserve(keys.size());
    absl::Status status = ForKeyBatches(keys, [&](std::span<const std::string> batch) {
      pb::StatRequest request;
      for (const std::string& key : batch) request.add_keys(key);
      return Retrying(*rpc_, [&]() -> absl::Status {
        grpc::ClientContext ctx;
        rpc_->Prepare(&ctx);
        pb::StatResponse response;
        grpc::Status s = rpc_->stub->Stat(&ctx, request, &response);
        if (!s.ok()) return ToStatus(s, rpc_->socket);
        for (const pb::ObjectStat& stat : response.stats()) {
          infos.push_back(stat.found() ? std::optional(FromProto(stat.info())) : std::nullopt);
        }
        return absl::OkStatus();
      });
    });
    if (!status.ok()) return status;
    return infos;
  }

  absl::Status List(const KeysCallback& on_keys, std::string_view after) override {
    // Resumable: a retry starts after the last key handed out.
    std::string last(after);
    return Retrying(*rpc_, [&]() -> absl::Status {
      grpc::ClientContext ctx;
      rpc_->Prepare(&ctx);
      pb::ListRequest request;
      request.set_after(last);
      auto stream = rpc_->stub->List(&ctx, request);
      pb::ListResponse page;
      absl::Status callback_status;
      while (stream->Read(&page)) {
        if (page.keys().empty()) continue;
        std::vector<std::string> keys(page.keys().begin(), page.keys().end());
        last = keys.back();
        callback_status = on_keys(keys);
        if (!callback_status.ok()) {
          ctx.TryCancel();
          break;
        }
      }
      const grpc::Status status = stream->Finish();
      if (!callback_status.ok()) return callback_status;
      return ToStatus(status, rpc_->socket);
    });
  }

  absl::StatusOr<StoreStatus> Status() override {
    return Retrying(*rpc_, [&]() -> absl::StatusOr<StoreStatus> {
      grpc::ClientContext ctx;
      rpc_->Prepare(&ctx);
      pb::StatusResponse r;
      grpc::Status s = rpc_->stub->Status(&ctx, pb::StatusRequest(), &r);
      if (!s.ok()) return ToStatus(s, rpc_->socket);
      StoreStatus out;
      out.version = r.version();
      out.container_dir = r.container_dir();
      out.container_id = r.config().container_id();
      out.hash_type = r.config().hash_type();
      out.compression_algorithm = r.config().compression_algorithm();
      out.pack_size_target = r.config().pack_size_target();
      out.loose_prefix_len = r.config().loose_prefix_len();
      const pb::StoreCounts& c = r.counts();
      out.packed_objects = c.packed_objects();
      out.packed_bytes = c.packed_bytes();
      out.packed_stored_bytes = c.packed_stored_bytes();
      out.pack_files = c.pack_files();
      out.pack_file_bytes = c.pack_file_bytes();
      out.hole_bytes = c.hole_bytes();
      out.loose_objects = c.loose_objects();
      out.loose_bytes = c.loose_bytes();
      out.index_bytes = c.index_bytes();
      out.free_bytes = r.free_bytes();
      out.free_bytes_reserve = r.free_bytes_reserve();
      out.uptime_seconds = r.uptime_seconds();
      out.maintenance = r.maintenance();
      google::protobuf::util::JsonPrintOptions json;
      json.preserve_proto_field_names = true;
      json.always_print_primitive_fields = true;
      if (!google::protobuf::util::MessageToJsonString(r, &out.json, json).ok()) {
        return absl::InternalError("the daemon's status could not be written as JSON");
      }
      return out;
    });
  }

  absl::StatusOr<PackResult> Pack(const PackOptions& options,
                                  const ProgressCallback& progress) override {
    pb::PackRequest request;
    request.set_compression(ToProto(options.compression));
    request.set_no_validate(!options.validate);
    grpc::ClientContext ctx;
    rpc_->Prepare(&ctx, true);
    PackResult out;
    absl::Status status = RunMaintenance(*rpc_, rpc_->stub->Pack(&ctx, request), progress,
                                         [&](const pb::PackResponse& m) {
                                           if (!m.has_result()) return false;
                                           const pb::PackResult& r = m.result();
                                           out = PackResult{r.packed(), r.already_packed(),
                                                            r.bytes(), r.loose_deleted(),
                                                            {r.corrupt().begin(), r.corrupt().end()}};
                                           return true;
                                         });
    if (!status.ok()) return status;
    return out;
  }

  absl::StatusOr<RepackResult> Repack(Compression compression,
                                      const ProgressCallback& progress) override {
    pb::RepackRequest request;
    request.set_compression(ToProto(compression));
    grpc::ClientContext ctx;
    rpc_->Prepare(&ctx, true);
    RepackResult out;
    absl::Status status = RunMaintenance(*rpc_, rpc_->stub->Repack(&ctx, request), progress,
                                         [&](const pb::RepackResponse& m) {
                                           if (!m.has_result()) return false;
                                           const pb::RepackResult& r = m.result();
                                           out = RepackResult{r.packs_rewritten(), r.packs_removed(),
                                                              r.objects_moved(), r.bytes_reclaimed()};
                                           return true;
                                         });
    if (!status.ok()) return status;
    return out;
  }

  absl::StatusOr<CleanResult> Clean(bool vacuum, const ProgressCallback& progress) override {
    pb::CleanRequest request;
    request.set_vacuum(vacuum);
    grpc::ClientContext ctx;
    rpc_->Prepare(&ctx, true);
    CleanResult out;
    absl::Status status = RunMaintenance(*rpc_, rpc_->stub->Clean(&ctx, request), progress,
                                         [&](const pb::CleanResponse& m) {
                                           if (!m.has_result()) return false;
                                           const pb::CleanResult& r = m.result();
                                           out = CleanResult{r.loose_deleted(), r.sandbox_deleted(),
                                                             r.duplicates_resolved()};
                                           return true;
                                         });
    if (!status.ok()) return status;
    return out;
  }

  absl::StatusOr<uint64_t> Delete(std::span<const std::string> keys,
                                  const ProgressCallback& progress) override {
    uint64_t deleted = 0;
    absl::Status status = ForKeyBatches(keys, [&](std::span<const std::string> batch) {
      pb::DeleteRequest request;
      for (const std::string& key : batch) request.add_keys(key);
      grpc::ClientContext ctx;
      rpc_->Prepare(&ctx, true);
      return RunMaintenance(*rpc_, rpc_->stub->Delete(&ctx, request), progress,
                            [&](const pb::DeleteResponse& m) {
                              if (!m.has_result()) return false;
                              deleted += m.result().deleted();
                              return true;
                            });
    });
    if (!status.ok()) return status;
    return deleted;
  }

  absl::StatusOr<ValidateResult> Validate(const ProgressCallback& progress) override {
    grpc::ClientContext ctx;
    rpc_->Prepare(&ctx, true);
    ValidateResult out;
    absl::Status status = RunMaintenance(
        *rpc_, rpc_->stub->Validate(&ctx, pb::ValidateRequest()), progress,
        [&](const pb::ValidateResponse& m) {
          if (m.has_issue()) {
            out.issues.push_back({m.issue().kind(), m.issue().subject(), m.issue().detail()});
            return false;
          }
          if (!m.has_result()) return false;
          out.loose_checked = m.result().loose_checked();
          out.packed_checked = m.result().packed_checked();
          return true;
        });
    if (!status.ok()) return status;
    return out;
  }

 private:
  // The object's place through the fast path. UNAVAILABLE when the fast
  // path is off or not offered, and for a zstd object (read through gRPC):
  // the caller then uses gRPC. NOT_FOUND when the store does not have it.
  absl::StatusOr<LocatedObject> LocateOne(std::string_view key) {
    if (rpc_->fast_path == nullptr) return absl::UnavailableError("the fast path is off");
    const std::string keys[] = {std::string(key)};
    absl::StatusOr<std::vector<std::optional<LocatedObject>>> located = rpc_->fast_path->Locate(keys);
    if (!located.ok()) return located.status();
    if (!(*located)[0]) return absl::NotFoundError("object " + keys[0] + " not found");
    if ((*located)[0]->codec == Codec::kZstd) return absl::UnavailableError("a zstd object");
    return *std::move((*located)[0]);
  }

  // GetMany through the fast path, in batches of one LOCATE each: the
  // objects of a batch in storage order (by descriptor, then offset),
  // neighbours read with one pread; its missing keys last. The next batch
  // is located on another thread while this one is read, so that the
  // daemon's index lookups overlap the reading here. Returns the keys left
  // to gRPC: zstd objects, and every key from the first batch the fast
  // path could not serve on.
  absl::StatusOr<std::vector<std::string>> GetManyFast(const std::vector<std::string>& keys,
                                                       const PieceCallback& on_piece) {
    using Located = absl::StatusOr<std::vector<std::optional<LocatedObject>>>;
    const std::span<const std::string> all(keys);
    auto locate = [this, all](size_t begin) -> Located {
      return rpc_->fast_path->Locate(all.subspan(begin, std::min(kMaxLocateKeys, all.size() - begin)));
    };
    std::vector<std::string> rest;
    Located located = locate(0);
    for (size_t begin = 0; begin < all.size(); begin += kMaxLocateKeys) {
      if (absl::IsUnavailable(located.status())) {
        rest.insert(rest.end(), all.begin() + static_cast<long>(begin), all.end());
        return rest;
      }
      if (!located.ok()) return located.status();
      std::future<Located> next;
      if (begin + kMaxLocateKeys < all.size()) {
        next = std::async(std::launch::async, locate, begin + kMaxLocateKeys);
      }
      absl::Status status = ReadLocatedBatch(
          all.subspan(begin, std::min(kMaxLocateKeys, all.size() - begin)), *located, on_piece, rest);
      if (next.valid()) located = next.get();
      if (!status.ok()) return status;
    }
    return rest;
  }

  // Delivers one located batch (see GetManyFast); its zstd keys go to `rest`.
  absl::Status ReadLocatedBatch(std::span<const std::string> keys,
                                const std::vector<std::optional<LocatedObject>>& located,
                                const PieceCallback& on_piece, std::vector<std::string>& rest) {
    std::vector<std::string_view> missing;
    std::vector<const LocatedObject*> order;
    for (size_t i = 0; i < keys.size(); ++i) {
      const std::optional<LocatedObject>& object = located[i];
      if (!object) {
        missing.push_back(keys[i]);
      } else if (object->codec == Codec::kZstd) {
        rest.push_back(keys[i]);
      } else {
        order.push_back(&*object);
      }
    }
    std::sort(order.begin(), order.end(), [](const LocatedObject* a, const LocatedObject* b) {
      return std::pair(a->file.get(), a->offset) < std::pair(b->file.get(), b->offset);
    });
    std::string buffer;
    for (size_t i = 0; i < order.size();) {
      const LocatedObject& first = *order[i];
      if (first.codec != Codec::kNone || first.size > kChunkSize) {
        // Alone, in pieces of at most a chunk.
        uint64_t offset = 0;
        absl::Status status = internal::StreamLocated(first, kChunkSize, [&](std::string_view data) {
          absl::Status s = on_piece(ObjectPiece{first.key, first.size, offset, data, false});
          offset += data.size();
          return s;
        });
        if (!status.ok()) return status;
        ++i;
        continue;
      }
      // A run of small uncompressed neighbours in one file, read at once.
      size_t end = i + 1;
      uint64_t run_end = first.offset + first.length;
      while (end < order.size() && order[end]->file == first.file &&
             order[end]->codec == Codec::kNone && order[end]->size <= kChunkSize &&
             order[end]->offset >= run_end && order[end]->offset - run_end <= kCoalesceGap &&
             order[end]->offset + order[end]->length - first.offset <= kChunkSize) {
        run_end = std::max(run_end, order[end]->offset + order[end]->length);
        ++end;
      }
      LocatedObject run = first;
      run.length = run.size = run_end - first.offset;
      buffer.resize(run.size);
      if (absl::Status status = internal::ReadLocated(run, 0, buffer.size(), buffer.data());
          !status.ok()) {
        return status;
      }
      for (; i < end; ++i) {
        const LocatedObject& object = *order[i];
        const std::string_view data(buffer.data() + (object.offset - first.offset), object.size);
        if (absl::Status status = on_piece(ObjectPiece{object.key, object.size, 0, data, false});
            !status.ok()) {
          return status;
        }
      }
    }
    for (std::string_view key : missing) {
      if (absl::Status status = on_piece(ObjectPiece{key, 0, 0, {}, true}); !status.ok()) {
        return status;
      }
    }
    return absl::OkStatus();
  }

  static pb::PutOptions ToOptions(const PutOptions& options) {
    pb::PutOptions out;
    out.set_mode(ToProto(options.mode));
    out.set_compression(ToProto(options.compression));
    return out;
  }

  // One PutMany call for objects[batched[...]]: batches of at most
  // kPutManyBatchBytes, a few ahead of the answers, each answer matched to
  // its batch (the daemon answers in order).
  absl::Status PutBatches(std::span<const std::string_view> objects,
                          const std::vector<size_t>& batched, const PutOptions& options,
                          std::vector<ObjectRef>& refs) {
    grpc::ClientContext ctx;
    rpc_->Prepare(&ctx);
    auto stream = rpc_->stub->PutMany(&ctx);
    std::vector<std::vector<size_t>> pending;  // indexes of each unanswered batch
    size_t answered = 0;
    auto read_answer = [&]() -> bool {
      pb::PutManyResponse response;
      if (!stream->Read(&response)) return false;
      const std::vector<size_t>& batch = pending[answered++];
      if (static_cast<size_t>(response.objects_size()) != batch.size()) return false;
      for (size_t j = 0; j < batch.size(); ++j) {
        refs[batch[j]] = ObjectRef{response.objects(j).key(), response.objects(j).size()};
      }
      return true;
    };
    bool ok = true;
    size_t next = 0;
    bool first = true;
    while (ok && next < batched.size()) {
      pb::PutManyRequest request;
      if (first) *request.mutable_options() = ToOptions(options);
      first = false;
      std::vector<size_t> batch;
      size_t bytes = 0;
      while (next < batched.size() && batch.size() < kPutManyBatchObjects &&
             (batch.empty() || bytes + objects[batched[next]].size() <= kPutManyBatchBytes)) {
        const std::string_view object = objects[batched[next]];
        request.add_objects(object.data(), object.size());
        bytes += object.size();
        batch.push_back(batched[next++]);
      }
      pending.push_back(std::move(batch));
      ok = stream->Write(request);
      while (ok && pending.size() - answered > kPutManyInFlight) ok = read_answer();
    }
    if (ok) stream->WritesDone();
    while (ok && answered < pending.size()) ok = read_answer();
    const grpc::Status status = stream->Finish();
    if (!status.ok()) return ToStatus(status, rpc_->socket);
    if (answered < pending.size()) {
      return absl::InternalError("packstored answered " + std::to_string(answered) + " of " +
                                 std::to_string(pending.size()) + " PutMany messages");
    }
    return absl::OkStatus();
  }

  const std::shared_ptr<const Rpc> rpc_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(ClientOptions options) {
  auto rpc = std::make_shared<Rpc>();
  rpc->socket = options.socket.empty() ? DefaultSocketPath() : options.socket;
  rpc->options = std::move(options);
  rpc->options.max_attempts = std::max(1, rpc->options.max_attempts);
  struct stat st;
  if (::stat(rpc->socket.c_str(), &st) != 0) {
    const int err = errno;
    return absl::UnavailableError(
        "no packstored socket at " + rpc->socket + " (" + std::strerror(err) +
        "): is the daemon running? Set PACKSTORE_SOCKET or pass the socket path");
  }
  if (!S_ISSOCK(st.st_mode)) {
    return absl::InvalidArgumentError(rpc->socket + " is not a socket");
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(16 << 20);
  rpc->channel = grpc::CreateCustomChannel("unix:" + rpc->socket,
                                           grpc::InsecureChannelCredentials(), args);
  rpc->stub = pb::ObjectStore::NewStub(rpc->channel);
  if (rpc->options.fast_path) rpc->fast_path = std::make_unique<internal::FastPath>(rpc->socket);
  return std::unique_ptr<Client>(new ClientImpl(std::move(rpc)));
}

}  // namespace packstore::client
