#include "server/service/service.h"

#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <thread>
#include <utility>

#include "common/hash_key.h"
#include "common/hasher.h"
#include "common/status_util.h"
#include "common/str_cat.h"
#include "packstore/v1/packstore.grpc.pb.h"
#include "server/service/call_stats.h"
#include "server/service/group_commit.h"
#include "server/service/pipe_source.h"
#include "server/service/stream_writer.h"
#include "server/service/worker_pool.h"
#include "server/store/container.h"
#include "server/store/object_reader.h"

namespace packstore::service {
namespace {

namespace pb = ::packstore::v1;

// Chunks of a streamed object: the wire contract promises 256 KiB to 1 MiB.
constexpr size_t kChunkSize = size_t{1} << 20;
// GetMany: objects up to this size come whole, many per message.
constexpr uint64_t kWholePieceMax = kChunkSize;
constexpr size_t kGetManyKeysPerMessage = 4096;
// A streamed upload pauses reading past this many bytes not yet written.
constexpr uint64_t kUploadHighWater = uint64_t{8} << 20;
// The free-space check runs again after every this many uploaded bytes.
constexpr uint64_t kSpaceCheckInterval = uint64_t{64} << 20;
constexpr uint32_t kDefaultListPage = 1000;
constexpr uint32_t kMaxListPage = 10000;
// PutMany: request messages being written at once per call.
constexpr size_t kPutManyInFlight = 16;

// "1 TiB", "1.5 GiB", "512 bytes": one decimal, rounded down, so a limit
// is never shown larger than it is.
std::string Bytes(uint64_t n) {
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
  if (n < 1024) return StrCat(n, " bytes");
  int unit = 0;
  while (unit < 4 && n >= (uint64_t{1024} << (10 * (unit + 1)))) ++unit;
  const uint64_t scale = uint64_t{1024} << (10 * unit);
  const uint64_t tenths = (n % scale) * 10 / scale;
  if (tenths == 0) return StrCat(n / scale, " ", kUnits[unit]);
  return StrCat(n / scale, ".", tenths, " ", kUnits[unit]);
}

absl::StatusOr<CompressMode> ToCompressMode(pb::Compression compression) {
  switch (compression) {
    case pb::COMPRESSION_UNSPECIFIED:
    case pb::COMPRESSION_NO:
      return CompressMode::kNo;
    case pb::COMPRESSION_YES:
      return CompressMode::kYes;
    case pb::COMPRESSION_AUTO:
      return CompressMode::kAuto;
    default:
      return absl::InvalidArgumentError(
          StrCat("unknown compression ", static_cast<int>(compression),
                 ": use COMPRESSION_NO, COMPRESSION_YES or COMPRESSION_AUTO"));
  }
}

absl::StatusOr<PutMode> ToPutMode(pb::PutMode mode) {
  switch (mode) {
    case pb::PUT_MODE_UNSPECIFIED:
      return PutMode::kDefault;
    case pb::PUT_MODE_AUTO:
      return PutMode::kAuto;
    case pb::PUT_MODE_LOOSE:
      return PutMode::kLoose;
    case pb::PUT_MODE_PACKED:
      return PutMode::kPacked;
    default:
      return absl::InvalidArgumentError(
          StrCat("unknown put mode ", static_cast<int>(mode),
                 ": use PUT_MODE_AUTO, PUT_MODE_LOOSE or PUT_MODE_PACKED"));
  }
}

// Where an object of `size` bytes goes.
enum class Destination { kPacked, kLoose };

// What a file descriptor passed for a PUT is, for a refusal.
std::string_view FileKind(mode_t mode) {
  if (S_ISFIFO(mode)) return "a pipe";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISLNK(mode)) return "a symbolic link";
  return "not a regular file";
}

// A client's file, read with pread from offset 0 to its end (its size is
// not trusted: the file may be growing or shrinking meanwhile), checking
// the object size limit as bytes arrive.
class ClientFileSource : public ObjectSource {
 public:
  ClientFileSource(int fd, std::function<absl::Status(uint64_t)> check_size)
      : fd_(fd), check_size_(std::move(check_size)) {}
  absl::StatusOr<size_t> Read(char* buf, size_t capacity) override {
    PACKSTORE_ASSIGN_OR_RETURN(size_t n, PreadUpTo(fd_, buf, capacity, offset_));
    offset_ += n;
    PACKSTORE_RETURN_IF_ERROR(check_size_(offset_));
    return n;
  }

 private:
  const int fd_;
  const std::function<absl::Status(uint64_t)> check_size_;
  uint64_t offset_ = 0;
};

// Keys of a request, each checked before it comes near the index or a path.
absl::Status CheckKeys(const google::protobuf::RepeatedPtrField<std::string>& keys,
                       HashType type) {
  for (int i = 0; i < keys.size(); ++i) {
    absl::Status status = ValidateKey(keys[i], type);
    if (!status.ok()) {
      return absl::InvalidArgumentError(StrCat("keys[", i, "]: ", status.message()));
    }
  }
  return absl::OkStatus();
}

void FillInfo(const ObjectInfo& info, pb::ObjectInfo* out) {
  out->set_key(info.key);
  out->set_size(info.size);
  out->set_packed(info.packed.has_value());
  out->set_compressed(info.packed && info.packed->compressed);
  out->set_stored_size(info.packed ? info.packed->length : 0);
}

// Reads until `buf` holds `n` bytes or the object ends.
absl::StatusOr<size_t> ReadFull(ObjectReader& reader, char* buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    PACKSTORE_ASSIGN_OR_RETURN(size_t r, reader.Read(buf + got, n - got));
    if (r == 0) break;
    got += r;
  }
  return got;
}

// An ObjectSource over an object already stored (packs a loose copy).
class ReaderSource : public ObjectSource {
 public:
  explicit ReaderSource(ObjectReader& reader) : reader_(reader) {}
  absl::StatusOr<size_t> Read(char* buf, size_t capacity) override {
    return reader_.Read(buf, capacity);
  }

 private:
  ObjectReader& reader_;
};

// Checks the free-space reserve every kSpaceCheckInterval bytes read.
class SpaceCheckedSource : public ObjectSource {
 public:
  SpaceCheckedSource(ObjectSource& inner, std::function<absl::Status(uint64_t)> check)
      : inner_(inner), check_(std::move(check)) {}
  absl::StatusOr<size_t> Read(char* buf, size_t capacity) override {
    if (read_ >= next_check_) {
      PACKSTORE_RETURN_IF_ERROR(check_(kSpaceCheckInterval));
      next_check_ = read_ + kSpaceCheckInterval;
    }
    PACKSTORE_ASSIGN_OR_RETURN(size_t n, inner_.Read(buf, capacity));
    read_ += n;
    return n;
  }

 private:
  ObjectSource& inner_;
  std::function<absl::Status(uint64_t)> check_;
  uint64_t read_ = 0;
  // The caller checks the space the object needs before its first byte.
  uint64_t next_check_ = kSpaceCheckInterval;
};

class ServiceImpl;

// Tracks threads the service starts per call (uploads, maintenance), so
// that Shutdown can wait for them.
class ThreadCounter {
 public:
  void Add() {
    std::lock_guard lock(mu_);
    ++count_;
  }
  void Done() {
    std::lock_guard lock(mu_);
    if (--count_ == 0) cv_.notify_all();
  }
  bool WaitUntil(absl::Time deadline) {
    std::unique_lock lock(mu_);
    return cv_.wait_until(lock, absl::ToChronoTime(deadline), [this] { return count_ == 0; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int count_ = 0;
};

class ServiceImpl final : public ObjectStoreService, public pb::ObjectStore::CallbackService {
 public:
  ServiceImpl(Container* container, const PeerRegistry* peers, const ServiceOptions& options)
      : container_(container),
        peers_(peers),
        options_(options),
        policy_(std::make_shared<Policy>(Policy{options.limits, options.access})),
        pool_(options.worker_threads > 0
                  ? options.worker_threads
                  : std::max(4, 2 * static_cast<int>(std::thread::hardware_concurrency()))),
        committer_(container, [this](uint64_t bytes) { return CheckSpace(bytes); }),
        started_(absl::Now()),
        idle_sweeper_([this] { SweepIdleStreams(); }) {}
  ~ServiceImpl() override { StopIdleSweeper(); }

  // --- ObjectStoreService ---
  grpc::Service* grpc_service() override { return this; }

  void Reload(const Limits& limits, const AccessPolicy& access) override {
    auto policy = std::make_shared<Policy>(Policy{limits, access});
    std::lock_guard lock(policy_mu_);
    policy_ = std::move(policy);
  }

  absl::Status RunMaintenance(std::string_view name,
                              const std::function<absl::Status()>& operation) override {
    PACKSTORE_RETURN_IF_ERROR(BeginMaintenance(name));
    absl::Status status = operation();
    EndMaintenance();
    return status;
  }

  uint64_t active_calls() const override {
    uint64_t active = 0;
    for (const MethodCounters& m : stats_.methods) active += m.active.load(std::memory_order_relaxed);
    return active;
  }
  LooseBacklog loose_backlog() const override {
    return {loose_objects_.load(std::memory_order_relaxed),
            loose_bytes_.load(std::memory_order_relaxed)};
  }
  void set_loose_backlog(const LooseBacklog& backlog) override {
    loose_objects_.store(backlog.objects, std::memory_order_relaxed);
    loose_bytes_.store(backlog.bytes, std::memory_order_relaxed);
  }

  absl::Status CheckLiveness(absl::Duration timeout) override {
    struct Probe {
      std::mutex mu;
      std::condition_variable cv;
      std::optional<absl::Status> result;
    };
    auto probe = std::make_shared<Probe>();
    pool_.Submit([this, probe] {
      // A lookup of a key that is never stored exercises the index.
      absl::Status status =
          container_->Has(std::string(HexKeyLength(container_->config().hash_type), '0')).status();
      std::lock_guard lock(probe->mu);
      probe->result = status;
      probe->cv.notify_all();
    });
    std::unique_lock lock(probe->mu);
    if (!probe->cv.wait_for(lock, absl::ToChronoNanoseconds(timeout),
                            [&] { return probe->result.has_value(); })) {
      return absl::DeadlineExceededError(
          StrCat("no worker thread answered an index lookup within ", absl::FormatDuration(timeout)));
    }
    return *probe->result;
  }

  bool Shutdown(absl::Time deadline) override {
    StopIdleSweeper();
    committer_.Stop();
    pool_.Stop();
    return threads_.WaitUntil(deadline);
  }

  // --- Shared by the calls ---
  struct Policy {
    Limits limits;
    AccessPolicy access;
  };
  std::shared_ptr<const Policy> policy() const {
    std::lock_guard lock(policy_mu_);
    return policy_;
  }

  // The peer's credentials; PERMISSION_DENIED unless it may make this call.
  absl::StatusOr<PeerCredentials> AuthorizedPeer(grpc::CallbackServerContext* ctx, Method method,
                                                 bool admin) {
    const std::string peer_name = ctx->peer();
    std::optional<PeerCredentials> peer = peers_->Find(peer_name);
    if (!peer) {
      return absl::PermissionDeniedError(
          StrCat("unknown peer ", peer_name, ": connect through packstored's socket"));
    }
    PACKSTORE_RETURN_IF_ERROR(AuthorizePeer(*peer, MethodName(method), admin));
    return *peer;
  }
  absl::Status Authorize(grpc::CallbackServerContext* ctx, Method method, bool admin) {
    return AuthorizedPeer(ctx, method, admin).status();
  }
  // The scope of a streaming call: authorized, then holding a stream slot
  // of the peer's process, or refused (Admission() says why).
  CallScope StreamScope(grpc::CallbackServerContext* ctx, Method method, bool admin = false) {
    absl::StatusOr<PeerCredentials> peer = AuthorizedPeer(ctx, method, admin);
    if (!peer.ok()) return CallScope(&stats_, method, peer.status());
    const Limits limits = policy()->limits;
    StreamShare share;
    share.total = std::max<uint32_t>(1, limits.max_concurrent_streams);
    share.per_client = limits.max_streams_per_client != 0
                           ? std::min(limits.max_streams_per_client, share.total)
                           : std::max<uint32_t>(1, share.total / 4);
    return CallScope(&stats_, method, share, peer->pid, ctx);
  }

  // The same for a peer known otherwise (the fast path's connections).
  absl::Status AuthorizePeer(const PeerCredentials& peer, std::string_view call, bool admin) {
    auto current = policy();
    if (!current->access.IsAllowed(peer)) return NotAllowedError(peer);
    if (admin && !current->access.IsAdmin(peer)) {
      return absl::PermissionDeniedError(StrCat(call, " is for admins only; uid ", peer.uid,
                                                " gid ", peer.gid,
                                                " is not one (see --admin-uid and --admin-gid)"));
    }
    spdlog::debug("{} from uid {} pid {}", call, peer.uid, peer.pid);
    return absl::OkStatus();
  }

  absl::Status CheckSpace(uint64_t bytes) {
    const uint64_t reserve = policy()->limits.free_disk_reserve;
    if (reserve == 0) return absl::OkStatus();
    const uint64_t free = FreeBytes();
    if (free < reserve + bytes) {
      return absl::ResourceExhaustedError(
          StrCat("the store's file system has ", Bytes(free), " free; writes stop ", Bytes(reserve),
                 " before it fills (--free-disk-reserve): free some space, or lower the reserve"));
    }
    return absl::OkStatus();
  }

  uint64_t FreeBytes() const {
    struct statvfs st;
    if (statvfs(container_->dir().c_str(), &st) != 0) return 0;
    return static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
  }

  absl::Status CheckObjectSize(uint64_t size) {
    const uint64_t max = policy()->limits.max_object_size;
    if (size > max) {
      return absl::ResourceExhaustedError(StrCat("object of ", size, " bytes or more exceeds the ",
                                                 Bytes(max), " limit (--max-object-size)"));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<Destination> Route(const pb::PutOptions& options, uint64_t size) {
    PACKSTORE_ASSIGN_OR_RETURN(PutMode mode, ToPutMode(options.mode()));
    return Route(mode, size);
  }
  Destination Route(PutMode mode, uint64_t size) const {
    switch (mode) {
      case PutMode::kLoose:
        return Destination::kLoose;
      case PutMode::kPacked:
        return Destination::kPacked;
      case PutMode::kAuto:
        break;
      case PutMode::kDefault:
        if (options_.default_mode == DefaultPutMode::kLoose) return Destination::kLoose;
        if (options_.default_mode == DefaultPutMode::kPacked) return Destination::kPacked;
        break;
    }
    return size <= options_.auto_packed_max_size ? Destination::kPacked : Destination::kLoose;
  }

  // A loose write on the calling (worker) thread.
  absl::StatusOr<WrittenObject> PutLoose(ObjectSource& source, uint64_t size_hint) {
    PACKSTORE_RETURN_IF_ERROR(CheckSpace(size_hint));
    SpaceCheckedSource checked(source, [this](uint64_t bytes) { return CheckSpace(bytes); });
    PACKSTORE_ASSIGN_OR_RETURN(WrittenObject written, container_->PutLoose(checked));
    loose_objects_.fetch_add(1, std::memory_order_relaxed);
    loose_bytes_.fetch_add(written.size, std::memory_order_relaxed);
    return written;
  }

  // Copies a just-written loose object into a pack, on the calling thread.
  absl::StatusOr<WrittenObject> PackLooseCopy(const std::string& key, CompressMode compress) {
    PACKSTORE_ASSIGN_OR_RETURN(std::unique_ptr<ObjectReader> reader, container_->OpenObject(key));
    PACKSTORE_RETURN_IF_ERROR(CheckSpace(reader->size()));
    ReaderSource source(*reader);
    return container_->PutPackedStream(source, compress);
  }

  // A packed write through the group commit, waited for on the calling
  // thread.
  absl::StatusOr<WrittenObject> CommitAndWait(std::string_view data, CompressMode compress) {
    std::promise<absl::StatusOr<std::vector<WrittenObject>>> committed;
    std::future<absl::StatusOr<std::vector<WrittenObject>>> written = committed.get_future();
    committer_.Submit({data}, compress,
                      [&committed](absl::StatusOr<std::vector<WrittenObject>> result) {
                        committed.set_value(std::move(result));
                      });
    PACKSTORE_ASSIGN_OR_RETURN(std::vector<WrittenObject> objects, written.get());
    return std::move(objects.front());
  }

  // --- The fast path (ObjectStoreService), on the caller's thread ---
  // Counted in Status.rpcs as FastPath.LOCATE and FastPath.PUT.
  absl::StatusOr<LocateResult> Locate(const std::vector<std::string>& keys, size_t max_files,
                                      const PeerCredentials& peer) override {
    CallScope scope(&stats_, Method::kFastLocate);
    absl::StatusOr<LocateResult> located = LocateFor(keys, max_files, peer);
    scope.Finish(located.status());
    return located;
  }

  absl::StatusOr<WrittenObject> PutFromFile(int fd, const FilePutOptions& options,
                                            const PeerCredentials& peer) override {
    CallScope scope(&stats_, Method::kFastPut);
    absl::StatusOr<WrittenObject> written = PutFromFileFor(fd, options, peer);
    if (written.ok()) scope.AddBytesIn(written->size);
    scope.Finish(written.status());
    return written;
  }

  absl::StatusOr<LocateResult> LocateFor(const std::vector<std::string>& keys, size_t max_files,
                                         const PeerCredentials& peer) {
    PACKSTORE_RETURN_IF_ERROR(AuthorizePeer(peer, "LOCATE", false));
    for (size_t i = 0; i < keys.size(); ++i) {
      absl::Status status = ValidateKey(keys[i], hash_type());
      if (!status.ok()) {
        return absl::InvalidArgumentError(StrCat("keys[", i, "]: ", status.message()));
      }
    }
    return container_->Locate(keys, max_files);
  }

  absl::StatusOr<WrittenObject> PutFromFileFor(int fd, const FilePutOptions& options,
                                               const PeerCredentials& peer) {
    PACKSTORE_RETURN_IF_ERROR(AuthorizePeer(peer, "PUT", false));
    struct stat st;
    if (::fstat(fd, &st) != 0) return ErrnoStatus(errno, "fstat of the descriptor passed");
    if (!S_ISREG(st.st_mode)) {
      return absl::InvalidArgumentError(
          StrCat("PUT takes a regular file; the descriptor passed is ", FileKind(st.st_mode)));
    }
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags < 0) return ErrnoStatus(errno, "fcntl of the descriptor passed");
    if ((flags & O_PATH) != 0 || (flags & O_ACCMODE) == O_WRONLY) {
      return absl::InvalidArgumentError("the descriptor passed for PUT is not open for reading");
    }
    const uint64_t size_seen = static_cast<uint64_t>(st.st_size);
    // Not trusted for what is stored, only to refuse at once what the size
    // limit would refuse after reading that far.
    PACKSTORE_RETURN_IF_ERROR(CheckObjectSize(size_seen));
    auto check_size = [this](uint64_t total) { return CheckObjectSize(total); };

    // As PutStream does: an object within the size that goes to packs is
    // gathered and written through the group commit; a larger one (or any
    // in loose mode) streams into a loose file, which packed mode then
    // copies into a pack.
    const uint64_t gather = options_.auto_packed_max_size;
    if (Route(options.mode, 0) == Destination::kPacked) {
      std::string head(gather + 1, '\0');
      ClientFileSource source(fd, check_size);
      size_t got = 0;
      while (got < head.size()) {
        PACKSTORE_ASSIGN_OR_RETURN(size_t n, source.Read(head.data() + got, head.size() - got));
        if (n == 0) break;
        got += n;
      }
      if (got <= gather) {
        head.resize(got);
        return CommitAndWait(head, options.compress);
      }
    }
    // From offset 0 again: the file is positional, and what is stored is
    // exactly what the loose write hashes.
    ClientFileSource source(fd, check_size);
    PACKSTORE_ASSIGN_OR_RETURN(WrittenObject written, PutLoose(source, size_seen));
    if (Route(options.mode, UINT64_MAX) == Destination::kPacked) {
      return PackLooseCopy(written.key, options.compress);
    }
    return written;
  }

  absl::Status BeginMaintenance(std::string_view name) {
    std::lock_guard lock(maintenance_mu_);
    if (!maintenance_.empty()) {
      return absl::FailedPreconditionError(
          StrCat("another maintenance operation is running (", maintenance_,
                 "); retry when it has finished"));
    }
    maintenance_ = std::string(name);
    return absl::OkStatus();
  }
  void EndMaintenance() {
    std::lock_guard lock(maintenance_mu_);
    maintenance_.clear();
  }
  std::string maintenance() const {
    std::lock_guard lock(maintenance_mu_);
    return maintenance_;
  }

  // Starts `fn` on a thread of its own that Shutdown waits for.
  void StartThread(std::function<void()> fn) {
    threads_.Add();
    std::thread([this, fn = std::move(fn)] {
      fn();
      threads_.Done();
    }).detach();
  }

  void FillStatus(pb::StatusResponse* response);

  // --- The calls (service.cc below) ---
  grpc::ServerUnaryReactor* Put(grpc::CallbackServerContext* ctx, const pb::PutRequest* request,
                                pb::PutResponse* response) override;
  grpc::ServerReadReactor<pb::PutStreamRequest>* PutStream(
      grpc::CallbackServerContext* ctx, pb::PutStreamResponse* response) override;
  grpc::ServerBidiReactor<pb::PutManyRequest, pb::PutManyResponse>* PutMany(
      grpc::CallbackServerContext* ctx) override;
  grpc::ServerWriteReactor<pb::GetResponse>* Get(grpc::CallbackServerContext* ctx,
                                                 const pb::GetRequest* request) override;
  grpc::ServerWriteReactor<pb::GetManyResponse>* GetMany(
      grpc::CallbackServerContext* ctx, const pb::GetManyRequest* request) override;
  grpc::ServerUnaryReactor* Stat(grpc::CallbackServerContext* ctx, const pb::StatRequest* request,
                                 pb::StatResponse* response) override;
  grpc::ServerUnaryReactor* Has(grpc::CallbackServerContext* ctx, const pb::HasRequest* request,
                                pb::HasResponse* response) override;
  grpc::ServerWriteReactor<pb::ListResponse>* List(grpc::CallbackServerContext* ctx,
                                                   const pb::ListRequest* request) override;
  grpc::ServerUnaryReactor* Status(grpc::CallbackServerContext* ctx,
                                   const pb::StatusRequest* request,
                                   pb::StatusResponse* response) override;
  grpc::ServerWriteReactor<pb::PackResponse>* Pack(grpc::CallbackServerContext* ctx,
                                                   const pb::PackRequest* request) override;
  grpc::ServerWriteReactor<pb::RepackResponse>* Repack(grpc::CallbackServerContext* ctx,
                                                       const pb::RepackRequest* request) override;
  grpc::ServerWriteReactor<pb::CleanResponse>* Clean(grpc::CallbackServerContext* ctx,
                                                     const pb::CleanRequest* request) override;
  grpc::ServerWriteReactor<pb::DeleteResponse>* Delete(grpc::CallbackServerContext* ctx,
                                                       const pb::DeleteRequest* request) override;
  grpc::ServerWriteReactor<pb::ValidateResponse>* Validate(
      grpc::CallbackServerContext* ctx, const pb::ValidateRequest* request) override;

  Container* container() { return container_; }
  WorkerPool& pool() { return pool_; }
  GroupCommitter& committer() { return committer_; }
  CallStats& stats() { return stats_; }
  HashType hash_type() const { return container_->config().hash_type; }
  uint64_t auto_packed_max_size() const { return options_.auto_packed_max_size; }

 private:
  // Cancels the streaming calls that waited on their client for longer
  // than --stream-idle-timeout, looking a few times per timeout (at least
  // every second) until StopIdleSweeper.
  void SweepIdleStreams() {
    std::unique_lock lock(sweeper_mu_);
    while (!sweeper_stopping_) {
      const std::chrono::seconds timeout(policy()->limits.stream_idle_timeout_seconds);
      const auto every = std::clamp<std::chrono::milliseconds>(
          std::chrono::duration_cast<std::chrono::milliseconds>(timeout) / 4,
          std::chrono::milliseconds(100), std::chrono::seconds(1));
      if (sweeper_cv_.wait_for(lock, every, [this] { return sweeper_stopping_; })) break;
      if (timeout.count() == 0) continue;
      lock.unlock();
      stats_.watch.CancelIdle(timeout);
      lock.lock();
    }
  }
  void StopIdleSweeper() {
    {
      std::lock_guard lock(sweeper_mu_);
      sweeper_stopping_ = true;
    }
    sweeper_cv_.notify_all();
    if (idle_sweeper_.joinable()) idle_sweeper_.join();
  }

  Container* const container_;
  const PeerRegistry* const peers_;
  const ServiceOptions options_;
  mutable std::mutex policy_mu_;
  std::shared_ptr<const Policy> policy_;
  mutable std::mutex maintenance_mu_;
  std::string maintenance_;
  std::atomic<uint64_t> loose_objects_{0};
  std::atomic<uint64_t> loose_bytes_{0};
  CallStats stats_;
  ThreadCounter threads_;
  WorkerPool pool_;
  GroupCommitter committer_;
  const absl::Time started_;
  std::mutex sweeper_mu_;
  std::condition_variable sweeper_cv_;
  bool sweeper_stopping_ = false;
  std::thread idle_sweeper_;  // last: it uses the members above
};

// Finishes a unary call through its default reactor.
void FinishUnary(grpc::ServerUnaryReactor* reactor, CallScope& scope, const absl::Status& status) {
  reactor->Finish(scope.Finish(status));
}

// A unary call whose work runs on a worker thread.
template <typename Work>
grpc::ServerUnaryReactor* RunUnary(ServiceImpl* service, grpc::CallbackServerContext* ctx,
                                   Method method, Work work) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  auto scope = std::make_shared<CallScope>(&service->stats(), method);
  if (absl::Status status = service->Authorize(ctx, method, false); !status.ok()) {
    FinishUnary(reactor, *scope, status);
    return reactor;
  }
  service->pool().Submit([reactor, scope, work = std::move(work)]() mutable {
    FinishUnary(reactor, *scope, work());
  });
  return reactor;
}

// ------------------------------------------------------------------ Put

grpc::ServerUnaryReactor* ServiceImpl::Put(grpc::CallbackServerContext* ctx,
                                           const pb::PutRequest* request,
                                           pb::PutResponse* response) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  auto scope = std::make_shared<CallScope>(&stats_, Method::kPut);
  scope->AddBytesIn(request->data().size());
  absl::Status status = Authorize(ctx, Method::kPut, false);
  if (status.ok()) status = CheckObjectSize(request->data().size());
  absl::StatusOr<CompressMode> compress = ToCompressMode(request->options().compression());
  absl::StatusOr<Destination> destination = Route(request->options(), request->data().size());
  if (status.ok()) status = compress.status();
  if (status.ok()) status = destination.status();
  if (!status.ok()) {
    FinishUnary(reactor, *scope, status);
    return reactor;
  }
  auto answer = [reactor, scope, response](absl::StatusOr<WrittenObject> written) {
    if (written.ok()) {
      response->mutable_object()->set_key(written->key);
      response->mutable_object()->set_size(written->size);
    }
    FinishUnary(reactor, *scope, written.status());
  };
  if (*destination == Destination::kPacked) {
    // The request stays alive until Finish: the writer reads it in place.
    committer_.Submit({request->data()}, *compress,
                      [answer](absl::StatusOr<std::vector<WrittenObject>> written) {
                        if (!written.ok()) return answer(written.status());
                        answer(std::move(written->front()));
                      });
  } else {
    pool_.Submit([this, request, answer] {
      StringSource source(request->data());
      answer(PutLoose(source, request->data().size()));
    });
  }
  return reactor;
}

// ------------------------------------------------------------ PutStream

// Small objects are gathered in memory and written like a Put; once an
// object passes the size that goes to packs (or at once in loose mode) it
// streams into a loose file on a thread of its own, through a bounded pipe.
// In packed mode such a large object is then copied from its loose file
// into a pack, so the writer is never held at the client's pace.
class PutStreamReactor : public grpc::ServerReadReactor<pb::PutStreamRequest> {
 public:
  PutStreamReactor(ServiceImpl* service, grpc::CallbackServerContext* ctx,
                   pb::PutStreamResponse* response)
      : service_(service),
        response_(response),
        scope_(service->StreamScope(ctx, Method::kPutStream)) {
    if (!scope_.Admission().ok()) {
      Complete(scope_.Admission());
      return;
    }
    ReadNext();
  }

 private:
  // Asks for the client's next message: the call waits on the client until
  // it comes.
  void ReadNext() {
    scope_.BeginWait();
    StartRead(&message_);
  }

  void OnReadDone(bool ok) override {
    scope_.EndWait();
    if (!ok) {
      Fail(absl::CancelledError(
          "the stream ended before a message with finish_write: nothing was stored"));
      return;
    }
    if (first_) {
      first_ = false;
      absl::StatusOr<CompressMode> compress = ToCompressMode(message_.options().compression());
      if (!compress.ok()) return Fail(compress.status());
      compress_ = *compress;
      options_ = message_.options();
    }
    const bool last = message_.finish_write();
    const uint64_t n = message_.data().size();
    total_ += n;
    scope_.AddBytesIn(n);
    if (absl::Status status = service_->CheckObjectSize(total_); !status.ok()) return Fail(status);

    bool more = true;
    if (pipe_) {
      more = pipe_->Push(std::move(*message_.mutable_data()));
    } else {
      buffer_.append(message_.data());
      absl::StatusOr<Destination> destination = service_->Route(options_, buffer_.size());
      if (!destination.ok()) return Fail(destination.status());
      // Stream to a loose file once the object is known to go there, or is
      // too large to gather in memory.
      const bool large = buffer_.size() > service_->auto_packed_max_size();
      if (!last && (large || *destination == Destination::kLoose)) {
        packed_after_ = *destination == Destination::kPacked;
        StartUpload();
        more = pipe_->Push(std::move(buffer_));
        buffer_.clear();
      }
    }
    if (last) {
      if (pipe_) {
        pipe_->Close();  // the upload thread completes the call
      } else {
        CommitBuffered();
      }
      return;
    }
    if (more) ReadNext();
    // else: the pipe calls Resume once it has drained.
  }

  void OnCancel() override {
    std::lock_guard lock(mu_);
    if (pipe_) pipe_->Abort(absl::CancelledError("the client went away"));
  }

  void OnDone() override {
    scope_.End();
    Unref();
  }

  void Resume() { ReadNext(); }

  void StartUpload() {
    std::lock_guard lock(mu_);
    pipe_ = std::make_unique<PipeSource>(kUploadHighWater, [this] { Resume(); });
    refs_.fetch_add(1);
    service_->StartThread([this] {
      absl::StatusOr<WrittenObject> written = service_->PutLoose(*pipe_, 0);
      if (written.ok() && packed_after_) written = service_->PackLooseCopy(written->key, compress_);
      Complete(written);
      Unref();
    });
  }

  void CommitBuffered() {
    absl::StatusOr<Destination> destination = service_->Route(options_, buffer_.size());
    if (!destination.ok()) return Fail(destination.status());
    refs_.fetch_add(1);
    if (*destination == Destination::kPacked) {
      service_->committer().Submit(
          {buffer_}, compress_, [this](absl::StatusOr<std::vector<WrittenObject>> written) {
            if (written.ok()) {
              Complete(std::move(written->front()));
            } else {
              Complete(written.status());
            }
            Unref();
          });
    } else {
      service_->pool().Submit([this] {
        StringSource source(buffer_);
        Complete(service_->PutLoose(source, buffer_.size()));
        Unref();
      });
    }
  }

  void Fail(absl::Status status) {
    std::unique_lock lock(mu_);
    if (pipe_) {
      pipe_->Abort(std::move(status));  // the upload thread completes the call
      return;
    }
    lock.unlock();
    Complete(status);
  }

  void Complete(absl::StatusOr<WrittenObject> written) {
    {
      std::lock_guard lock(mu_);
      if (finished_) return;
      finished_ = true;
    }
    if (written.ok()) {
      response_->mutable_object()->set_key(written->key);
      response_->mutable_object()->set_size(written->size);
      spdlog::debug("PutStream stored {} ({} bytes)", written->key, written->size);
    }
    Finish(scope_.Finish(written.status()));
  }

  void Unref() {
    if (refs_.fetch_sub(1) == 1) delete this;
  }

  ServiceImpl* const service_;
  pb::PutStreamResponse* const response_;
  CallScope scope_;
  pb::PutStreamRequest message_;
  pb::PutOptions options_;
  CompressMode compress_ = CompressMode::kNo;
  bool first_ = true;
  bool packed_after_ = false;
  uint64_t total_ = 0;
  std::string buffer_;
  std::mutex mu_;
  std::unique_ptr<PipeSource> pipe_;
  bool finished_ = false;
  std::atomic<int> refs_{1};
};

grpc::ServerReadReactor<pb::PutStreamRequest>* ServiceImpl::PutStream(
    grpc::CallbackServerContext* ctx, pb::PutStreamResponse* response) {
  return new PutStreamReactor(this, ctx, response);
}

// -------------------------------------------------------------- PutMany

// Each request message is one batch: written (packed batches join the
// group commit) while the next ones are read, and answered in order once
// durable. Up to kPutManyInFlight batches are in the works per call.
class PutManyReactor : public grpc::ServerBidiReactor<pb::PutManyRequest, pb::PutManyResponse> {
 public:
  PutManyReactor(ServiceImpl* service, grpc::CallbackServerContext* ctx)
      : service_(service), scope_(service->StreamScope(ctx, Method::kPutMany)) {
    if (!scope_.Admission().ok()) {
      std::unique_lock lock(mu_);
      error_ = scope_.Admission();
      input_done_ = true;
      Pump(lock);
      return;
    }
    incoming_ = std::make_unique<pb::PutManyRequest>();
    reading_ = true;
    NoteWait();
    StartRead(incoming_.get());
  }

 private:
  struct Batch {
    std::unique_ptr<pb::PutManyRequest> request;
    pb::PutManyResponse response;
    bool ready = false;
  };

  void OnReadDone(bool ok) override {
    std::unique_lock lock(mu_);
    scope_.EndWait();  // the client sent one: progress
    reading_ = false;
    if (!ok) {
      input_done_ = true;
      Pump(lock);
      return;
    }
    if (first_) {
      first_ = false;
      options_ = incoming_->options();
      absl::StatusOr<CompressMode> compress = ToCompressMode(options_.compression());
      if (!compress.ok()) return Fail(lock, compress.status());
      compress_ = *compress;
    }
    auto batch = std::make_shared<Batch>();
    batch->request = std::move(incoming_);
    bool all_packed = true;
    for (const std::string& object : batch->request->objects()) {
      scope_.AddBytesIn(object.size());
      if (absl::Status status = service_->CheckObjectSize(object.size()); !status.ok()) {
        return Fail(lock, status);
      }
      absl::StatusOr<Destination> destination = service_->Route(options_, object.size());
      if (!destination.ok()) return Fail(lock, destination.status());
      all_packed = all_packed && *destination == Destination::kPacked;
    }
    batches_.push_back(batch);
    const bool read_more = batches_.size() < kPutManyInFlight;
    if (read_more) {
      incoming_ = std::make_unique<pb::PutManyRequest>();
      reading_ = true;
    } else {
      read_paused_ = true;
    }
    NoteWait();
    lock.unlock();  // the batch may be answered at once (Done takes mu_)
    Dispatch(batch, all_packed);
    if (read_more) StartRead(incoming_.get());
  }

  void Dispatch(const std::shared_ptr<Batch>& batch, bool all_packed) {
    refs_.fetch_add(1);
    if (all_packed) {
      std::vector<std::string_view> objects(batch->request->objects().begin(),
                                            batch->request->objects().end());
      service_->committer().Submit(std::move(objects), compress_,
                                   [this, batch](absl::StatusOr<std::vector<WrittenObject>> w) {
                                     Done(batch, std::move(w));
                                   });
      return;
    }
    // Mixed sizes in auto mode, or loose mode: on a worker, the small ones
    // as one packed batch, the rest one loose file each.
    service_->pool().Submit([this, batch] { Done(batch, WriteMixed(*batch->request)); });
  }

  absl::StatusOr<std::vector<WrittenObject>> WriteMixed(const pb::PutManyRequest& request) {
    std::vector<WrittenObject> written(request.objects_size());
    std::vector<std::string_view> packed;
    std::vector<int> packed_index;
    uint64_t packed_bytes = 0;
    for (int i = 0; i < request.objects_size(); ++i) {
      const std::string& object = request.objects(i);
      if (service_->Route(options_, object.size()).value() == Destination::kPacked) {
        packed.push_back(object);
        packed_index.push_back(i);
        packed_bytes += object.size();
        continue;
      }
      StringSource source(object);
      PACKSTORE_ASSIGN_OR_RETURN(written[i], service_->PutLoose(source, object.size()));
    }
    if (!packed.empty()) {
      PACKSTORE_RETURN_IF_ERROR(service_->CheckSpace(packed_bytes));
      PACKSTORE_ASSIGN_OR_RETURN(auto in_packs,
                                 service_->container()->PutPacked(packed, compress_));
      for (size_t j = 0; j < in_packs.size(); ++j) written[packed_index[j]] = in_packs[j];
    }
    return written;
  }

  void Done(const std::shared_ptr<Batch>& batch, absl::StatusOr<std::vector<WrittenObject>> w) {
    {
      std::unique_lock lock(mu_);
      if (!w.ok()) {
        Fail(lock, w.status());
      } else {
        for (const WrittenObject& object : *w) {
          pb::ObjectRef* ref = batch->response.add_objects();
          ref->set_key(object.key);
          ref->set_size(object.size);
        }
        batch->ready = true;
        Pump(lock);
      }
    }
    Unref();
  }

  // Writes the next answer in order, resumes reading, or finishes.
  void Pump(std::unique_lock<std::mutex>& lock) {
    if (finished_) return;
    if (writing_) {
      NoteWait();
      return;
    }
    if (!error_.ok() || (input_done_ && batches_.empty())) {
      finished_ = true;
      absl::Status status = error_;
      lock.unlock();
      Finish(scope_.Finish(status));
      return;
    }
    if (batches_.empty() || !batches_.front()->ready) {
      NoteWait();
      return;
    }
    current_ = std::move(batches_.front()->response);
    batches_.pop_front();
    writing_ = true;
    const bool resume = read_paused_;
    read_paused_ = false;
    if (resume) {
      incoming_ = std::make_unique<pb::PutManyRequest>();
      reading_ = true;
    }
    NoteWait();
    lock.unlock();
    StartWrite(&current_);
    if (resume) StartRead(incoming_.get());
  }

  void Fail(std::unique_lock<std::mutex>& lock, absl::Status status) {
    if (error_.ok()) error_ = std::move(status);
    Pump(lock);
  }

  // Under mu_: the call waits on its client while an answer is out, or
  // while it asks for a batch and owes it none (while batches are in the
  // works, the client may rightly wait for their answers before sending).
  void NoteWait() {
    if (writing_ || (reading_ && batches_.empty())) {
      scope_.BeginWait();
    } else {
      scope_.EndWait();
    }
  }

  void OnWriteDone(bool ok) override {
    std::unique_lock lock(mu_);
    scope_.EndWait();  // the client took one: progress
    writing_ = false;
    if (!ok) Fail(lock, absl::CancelledError("the client went away"));
    Pump(lock);
  }

  void OnDone() override {
    scope_.End();
    Unref();
  }

  void Unref() {
    if (refs_.fetch_sub(1) == 1) delete this;
  }

  ServiceImpl* const service_;
  CallScope scope_;
  std::mutex mu_;
  std::unique_ptr<pb::PutManyRequest> incoming_;
  std::deque<std::shared_ptr<Batch>> batches_;
  pb::PutManyResponse current_;
  pb::PutOptions options_;
  CompressMode compress_ = CompressMode::kNo;
  absl::Status error_;
  bool first_ = true;
  bool input_done_ = false;
  bool read_paused_ = false;
  bool reading_ = false;  // a read is out
  bool writing_ = false;
  bool finished_ = false;
  std::atomic<int> refs_{1};
};

grpc::ServerBidiReactor<pb::PutManyRequest, pb::PutManyResponse>* ServiceImpl::PutMany(
    grpc::CallbackServerContext* ctx) {
  return new PutManyReactor(this, ctx);
}

// ----------------------------------------------------------------- Get

// A streaming call whose messages a worker produces, one Produce call per
// message.
template <typename Response>
class ProducedStream : public StreamWriter<Response> {
 protected:
  ProducedStream(ServiceImpl* service, grpc::CallbackServerContext* ctx, Method method,
                 bool admin = false)
      : StreamWriter<Response>(service->StreamScope(ctx, method, admin)), service_(service) {
    if (!this->scope().Admission().ok()) this->Close(this->scope().Admission());
  }

  // Pushes one message, or PushLast/Close. Runs on a worker, one at a time.
  virtual void Produce() = 0;

  ServiceImpl* const service_;

 private:
  void Refill() final {
    this->Ref();
    service_->pool().Submit([this] {
      if (!this->done()) Produce();
      this->Unref();
    });
  }
};

class GetReactor : public ProducedStream<pb::GetResponse> {
 public:
  GetReactor(ServiceImpl* service, grpc::CallbackServerContext* ctx, const pb::GetRequest* request)
      : ProducedStream(service, ctx, Method::kGet), request_(*request) {}

 private:
  void Produce() override {
    if (!reader_) {
      if (absl::Status status = Open(); !status.ok()) return Close(status);
    }
    pb::GetResponse message;
    if (first_) {
      first_ = false;
      *message.mutable_info() = info_;
      message.set_offset(offset_);
      message.set_length(remaining_);
    }
    std::string* data = message.mutable_data();
    data->resize(std::min<uint64_t>(remaining_, kChunkSize));
    absl::StatusOr<size_t> n = ReadFull(*reader_, data->data(), data->size());
    if (!n.ok()) return Close(n.status());
    if (*n < data->size()) {
      return Close(absl::DataLossError(StrCat("object ", info_.key(), " ended ",
                                              remaining_ - *n, " bytes early: run Validate")));
    }
    remaining_ -= *n;
    if (hasher_) hasher_->Update(*data);
    if (remaining_ > 0) return Push(std::move(message));
    absl::Status status;
    if (hasher_ && hasher_->HexDigest() != info_.key()) {
      status = absl::DataLossError(StrCat("the stored bytes of ", info_.key(),
                                          " do not hash to its key: discard what was received "
                                          "and run Validate"));
    }
    PushLast(std::move(message), status);
  }

  absl::Status Open() {
    Container* container = service_->container();
    PACKSTORE_RETURN_IF_ERROR(ValidateKey(request_.key(), service_->hash_type()));
    PACKSTORE_ASSIGN_OR_RETURN(ObjectInfo info, container->Stat(request_.key()));
    PACKSTORE_ASSIGN_OR_RETURN(reader_, container->OpenObject(request_.key()));
    FillInfo(info, &info_);
    info_.set_size(reader_->size());
    const uint64_t size = reader_->size();
    // A range past the end is clamped to it, as a file read at its end is.
    offset_ = std::min(request_.offset(), size);
    remaining_ = size - offset_;
    if (request_.has_length()) remaining_ = std::min(remaining_, request_.length());
    if (request_.verify()) {
      if (offset_ != 0 || remaining_ != size) {
        return absl::InvalidArgumentError("verify needs the whole object: drop offset and length");
      }
      hasher_ = std::make_unique<Hasher>(service_->hash_type());
    }
    return reader_->Seek(offset_);
  }

  const pb::GetRequest request_;
  std::unique_ptr<ObjectReader> reader_;
  std::unique_ptr<Hasher> hasher_;
  pb::ObjectInfo info_;
  uint64_t offset_ = 0;
  uint64_t remaining_ = 0;
  bool first_ = true;
};

grpc::ServerWriteReactor<pb::GetResponse>* ServiceImpl::Get(grpc::CallbackServerContext* ctx,
                                                            const pb::GetRequest* request) {
  auto* reactor = new GetReactor(this, ctx, request);
  reactor->Start();
  return reactor;
}

// ------------------------------------------------------------- GetMany

// One Container::GetMany over every key (one index lookup each, objects in
// storage order, neighbours read together) on a thread of the call's own,
// packing small objects whole into messages of up to 1 MiB as they come
// and pausing while the client is behind; objects larger than 1 MiB are
// then sent in 1 MiB pieces.
class GetManyReactor : public StreamWriter<pb::GetManyResponse> {
 public:
  GetManyReactor(ServiceImpl* service, grpc::CallbackServerContext* ctx,
                 const pb::GetManyRequest* request)
      : StreamWriter(service->StreamScope(ctx, Method::kGetMany)),
        service_(service),
        keys_(request->keys().begin(), request->keys().end()) {
    absl::Status status = scope().Admission();
    if (status.ok()) status = CheckKeys(request->keys(), service->hash_type());
    if (!status.ok()) {
      Close(status);
      return;
    }
    Ref();
    service->StartThread([this] {
      Close(Run());
      Unref();
    });
  }

 private:
  absl::Status Run() {
    pb::GetManyResponse message;
    uint64_t bytes = 0;
    auto flush = [&]() -> absl::Status {
      if (message.pieces_size() > 0 && !PushWait(std::move(message))) {
        return absl::CancelledError("the client went away");
      }
      message.Clear();
      bytes = 0;
      return absl::OkStatus();
    };
    std::vector<std::pair<std::string, uint64_t>> large;
    PACKSTORE_RETURN_IF_ERROR(service_->container()->GetMany(
        keys_,
        [&](std::string_view key, const absl::StatusOr<std::string_view>& content) -> absl::Status {
          if (absl::IsNotFound(content.status())) {
            AddMissing(message, key);
            return absl::OkStatus();
          }
          if (!content.ok()) return content.status();
          if (bytes + content->size() > kChunkSize) PACKSTORE_RETURN_IF_ERROR(flush());
          pb::ObjectPiece* piece = message.add_pieces();
          piece->set_key(std::string(key));
          piece->set_size(content->size());
          piece->set_data(content->data(), content->size());
          bytes += content->size();
          if (message.pieces_size() >= static_cast<int>(kGetManyKeysPerMessage)) return flush();
          return absl::OkStatus();
        },
        kWholePieceMax,
        [&](std::string_view key, uint64_t size) {
          large.emplace_back(key, size);
          return absl::OkStatus();
        }));
    for (const auto& [key, size] : large) {
      absl::StatusOr<std::unique_ptr<ObjectReader>> reader =
          service_->container()->OpenObject(key);
      if (absl::IsNotFound(reader.status())) {
        AddMissing(message, key);
        continue;
      }
      if (!reader.ok()) return reader.status();
      PACKSTORE_RETURN_IF_ERROR(flush());
      PACKSTORE_RETURN_IF_ERROR(SendPieces(**reader, key, message));
    }
    return flush();
  }

  // Sends `reader`'s object in 1 MiB pieces, one per message; the last one
  // stays in `message` for whatever follows.
  absl::Status SendPieces(ObjectReader& reader, const std::string& key,
                          pb::GetManyResponse& message) {
    do {
      if (message.pieces_size() > 0 && !PushWait(std::move(message))) {
        return absl::CancelledError("the client went away");
      }
      message.Clear();
      pb::ObjectPiece* piece = message.add_pieces();
      piece->set_key(key);
      piece->set_size(reader.size());
      piece->set_offset(reader.position());
      std::string* data = piece->mutable_data();
      data->resize(std::min<uint64_t>(kChunkSize, reader.size() - reader.position()));
      PACKSTORE_ASSIGN_OR_RETURN(size_t n, ReadFull(reader, data->data(), data->size()));
      if (n < data->size()) {
        return absl::DataLossError(StrCat("object ", key, " ended early: run Validate"));
      }
    } while (reader.position() < reader.size());
    return absl::OkStatus();
  }

  static void AddMissing(pb::GetManyResponse& message, std::string_view key) {
    pb::ObjectPiece* piece = message.add_pieces();
    piece->set_key(std::string(key));
    piece->set_missing(true);
  }

  ServiceImpl* const service_;
  const std::vector<std::string> keys_;
};

grpc::ServerWriteReactor<pb::GetManyResponse>* ServiceImpl::GetMany(
    grpc::CallbackServerContext* ctx, const pb::GetManyRequest* request) {
  return new GetManyReactor(this, ctx, request);
}

// ------------------------------------------------------- Stat, Has, List

grpc::ServerUnaryReactor* ServiceImpl::Stat(grpc::CallbackServerContext* ctx,
                                            const pb::StatRequest* request,
                                            pb::StatResponse* response) {
  return RunUnary(this, ctx, Method::kStat, [this, request, response]() -> absl::Status {
    PACKSTORE_RETURN_IF_ERROR(CheckKeys(request->keys(), hash_type()));
    std::vector<std::string> keys(request->keys().begin(), request->keys().end());
    PACKSTORE_ASSIGN_OR_RETURN(auto infos, container_->StatMany(keys));
    for (const std::optional<ObjectInfo>& info : infos) {
      pb::ObjectStat* stat = response->add_stats();
      stat->set_found(info.has_value());
      if (info) FillInfo(*info, stat->mutable_info());
    }
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ServiceImpl::Has(grpc::CallbackServerContext* ctx,
                                           const pb::HasRequest* request,
                                           pb::HasResponse* response) {
  return RunUnary(this, ctx, Method::kHas, [this, request, response]() -> absl::Status {
    PACKSTORE_RETURN_IF_ERROR(CheckKeys(request->keys(), hash_type()));
    std::vector<std::string> keys(request->keys().begin(), request->keys().end());
    PACKSTORE_ASSIGN_OR_RETURN(auto infos, container_->StatMany(keys));
    for (const std::optional<ObjectInfo>& info : infos) response->add_present(info.has_value());
    return absl::OkStatus();
  });
}

class ListReactor : public ProducedStream<pb::ListResponse> {
 public:
  ListReactor(ServiceImpl* service, grpc::CallbackServerContext* ctx,
              const pb::ListRequest* request)
      : ProducedStream(service, ctx, Method::kList),
        after_(request->after()),
        page_size_(request->page_size() == 0 ? kDefaultListPage
                                             : std::min(request->page_size(), kMaxListPage)) {}

 private:
  void Produce() override {
    const size_t max_len = HexKeyLength(service_->hash_type());
    if (after_.size() > max_len || !std::all_of(after_.begin(), after_.end(), [](char c) {
          return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
        })) {
      return Close(absl::InvalidArgumentError(
          StrCat("after must be a key or a prefix of one: at most ", max_len,
                 " lowercase hex characters")));
    }
    pb::ListResponse page;
    absl::Status status = service_->container()->ListKeys(after_, [&](std::string_view key) {
      page.add_keys(std::string(key));
      return static_cast<uint32_t>(page.keys_size()) < page_size_;
    });
    if (!status.ok()) return Close(status);
    if (static_cast<uint32_t>(page.keys_size()) < page_size_) {
      return PushLast(std::move(page), absl::OkStatus());
    }
    after_ = page.keys(page.keys_size() - 1);
    Push(std::move(page));
  }

  std::string after_;
  const uint32_t page_size_;
};

grpc::ServerWriteReactor<pb::ListResponse>* ServiceImpl::List(grpc::CallbackServerContext* ctx,
                                                              const pb::ListRequest* request) {
  auto* reactor = new ListReactor(this, ctx, request);
  reactor->Start();
  return reactor;
}

// --------------------------------------------------------------- Status

void ServiceImpl::FillStatus(pb::StatusResponse* response) {
  response->set_version(options_.version);
  response->set_container_dir(container_->dir());
  const ContainerConfig& config = container_->config();
  pb::ContainerConfig* c = response->mutable_config();
  c->set_container_id(config.container_id);
  c->set_container_version(config.container_version);
  c->set_loose_prefix_len(config.loose_prefix_len);
  c->set_pack_size_target(config.pack_size_target);
  c->set_hash_type(std::string(HashTypeName(config.hash_type)));
  c->set_compression_algorithm(CodecName(config.codec));
  const RegionCacheStats cache = container_->CacheStats();
  pb::CacheStats* s = response->mutable_cache();
  s->set_hits(cache.hits);
  s->set_misses(cache.misses);
  s->set_evictions(cache.evictions);
  s->set_fallbacks(cache.pread_fallbacks);
  s->set_mapped_bytes(cache.mapped_bytes);
  s->set_mapped_bytes_peak(cache.mapped_bytes_peak);
  s->set_mapped_bytes_limit(cache.mapped_bytes_limit);
  s->set_windows(cache.windows);
  s->set_windows_peak(cache.windows_peak);
  s->set_pinned(cache.pinned_windows);
  s->set_pinned_peak(cache.pinned_windows_peak);
  s->set_open_files(cache.open_files);
  s->set_open_files_peak(cache.open_files_peak);
  for (int i = 0; i < kMethodCount; ++i) {
    const MethodCounters& m = stats_.methods[i];
    pb::MethodStats* out = response->add_rpcs();
    out->set_method(std::string(MethodName(static_cast<Method>(i))));
    out->set_calls(m.calls.load(std::memory_order_relaxed));
    out->set_errors(m.errors.load(std::memory_order_relaxed));
    out->set_active(m.active.load(std::memory_order_relaxed));
    out->set_bytes_in(m.bytes_in.load(std::memory_order_relaxed));
    out->set_bytes_out(m.bytes_out.load(std::memory_order_relaxed));
  }
  response->set_uptime_seconds(absl::ToInt64Seconds(absl::Now() - started_));
  response->set_maintenance(maintenance());
  response->set_free_bytes(FreeBytes());
  response->set_free_bytes_reserve(policy()->limits.free_disk_reserve);
}

grpc::ServerUnaryReactor* ServiceImpl::Status(grpc::CallbackServerContext* ctx,
                                              const pb::StatusRequest* /*request*/,
                                              pb::StatusResponse* response) {
  return RunUnary(this, ctx, Method::kStatus, [this, response]() -> absl::Status {
    PACKSTORE_ASSIGN_OR_RETURN(StoreCounts counts, container_->Counts());
    pb::StoreCounts* c = response->mutable_counts();
    c->set_packed_objects(counts.packed_objects);
    c->set_packed_bytes(counts.packed_bytes);
    c->set_packed_stored_bytes(counts.packed_stored_bytes);
    c->set_pack_files(counts.pack_files);
    c->set_pack_file_bytes(counts.pack_file_bytes);
    c->set_hole_bytes(counts.hole_bytes);
    c->set_loose_objects(counts.loose_objects);
    c->set_loose_bytes(counts.loose_bytes);
    c->set_index_bytes(counts.index_bytes);
    FillStatus(response);
    return absl::OkStatus();
  });
}

// ---------------------------------------------------------- Maintenance

// An admin call that runs one engine operation on a thread of its own,
// streaming its progress (at most every 100 ms, and at every new phase)
// and then its result.
template <typename Response>
class MaintenanceStream : public StreamWriter<Response> {
 public:
  // Builds the final message(s) from the operation; runs on the thread.
  using Operation = std::function<absl::Status(const ProgressFn& progress,
                                               MaintenanceStream* stream)>;

  MaintenanceStream(ServiceImpl* service, grpc::CallbackServerContext* ctx, Method method,
                    Operation operation)
      : StreamWriter<Response>(service->StreamScope(ctx, method, /*admin=*/true)),
        service_(service) {
    absl::Status status = this->scope().Admission();
    if (status.ok()) status = service->BeginMaintenance(MethodName(method));
    if (!status.ok()) {
      this->Close(status);
      return;
    }
    this->Ref();
    service->StartThread([this, method, operation = std::move(operation)] {
      const absl::Time start = absl::Now();
      absl::Status result = operation(
          [this](const Progress& p) { OnProgress(p); }, this);
      service_->EndMaintenance();
      if (result.ok()) {
        spdlog::info("{}: done in {}", MethodName(method), absl::FormatDuration(absl::Now() - start));
      } else {
        spdlog::warn("{}: {}", MethodName(method), result.ToString());
      }
      this->Close(result);
      this->Unref();
    });
  }

  void Send(Response message) { this->Push(std::move(message)); }

 private:
  void OnProgress(const Progress& p) {
    const absl::Time now = absl::Now();
    const bool new_phase = p.phase != phase_;
    if (!new_phase && p.done != p.total && now - last_ < absl::Milliseconds(100)) return;
    phase_ = std::string(p.phase);
    last_ = now;
    Response message;
    auto* progress = message.mutable_progress();
    progress->set_phase(phase_);
    progress->set_done(p.done);
    progress->set_total(p.total);
    this->Push(std::move(message));
  }

  ServiceImpl* const service_;
  std::string phase_;
  absl::Time last_ = absl::InfinitePast();
};

grpc::ServerWriteReactor<pb::PackResponse>* ServiceImpl::Pack(grpc::CallbackServerContext* ctx,
                                                              const pb::PackRequest* request) {
  PackOptions options;
  absl::StatusOr<CompressMode> compress = ToCompressMode(request->compression());
  options.compress = compress.value_or(CompressMode::kNo);
  options.validate = !request->no_validate();
  using Stream = MaintenanceStream<pb::PackResponse>;
  return new Stream(this, ctx, Method::kPack,
                    [this, compress, options](const ProgressFn& progress, Stream* stream)
                        -> absl::Status {
                      PACKSTORE_RETURN_IF_ERROR(compress.status());
                      PACKSTORE_ASSIGN_OR_RETURN(PackResult r,
                                                 container_->PackAllLoose(options, progress));
                      const LooseBacklog left = loose_backlog();
                      set_loose_backlog({left.objects - std::min(left.objects, r.packed),
                                         left.bytes - std::min(left.bytes, r.bytes)});
                      spdlog::info("Pack: {} objects ({} bytes) packed, {} loose copies deleted",
                                   r.packed, r.bytes, r.loose_deleted);
                      pb::PackResponse message;
                      pb::PackResult* out = message.mutable_result();
                      out->set_packed(r.packed);
                      out->set_already_packed(r.already_packed);
                      out->set_bytes(r.bytes);
                      out->set_loose_deleted(r.loose_deleted);
                      for (const std::string& key : r.corrupt) out->add_corrupt(key);
                      stream->Send(std::move(message));
                      return absl::OkStatus();
                    });
}

grpc::ServerWriteReactor<pb::RepackResponse>* ServiceImpl::Repack(
    grpc::CallbackServerContext* ctx, const pb::RepackRequest* request) {
  RepackOptions options;
  absl::Status valid;
  if (request->compression() != pb::COMPRESSION_UNSPECIFIED) {
    absl::StatusOr<CompressMode> compress = ToCompressMode(request->compression());
    valid = compress.status();
    if (compress.ok()) options.compress = *compress;
  }
  using Stream = MaintenanceStream<pb::RepackResponse>;
  return new Stream(this, ctx, Method::kRepack,
                    [this, valid, options](const ProgressFn& progress, Stream* stream)
                        -> absl::Status {
                      PACKSTORE_RETURN_IF_ERROR(valid);
                      PACKSTORE_ASSIGN_OR_RETURN(RepackResult r,
                                                 container_->Repack(options, progress));
                      spdlog::info("Repack: {} packs rewritten, {} removed, {} bytes reclaimed",
                                   r.packs_rewritten, r.packs_removed, r.bytes_reclaimed);
                      pb::RepackResponse message;
                      pb::RepackResult* out = message.mutable_result();
                      out->set_packs_rewritten(r.packs_rewritten);
                      out->set_packs_removed(r.packs_removed);
                      out->set_objects_moved(r.objects_moved);
                      out->set_bytes_reclaimed(r.bytes_reclaimed);
                      stream->Send(std::move(message));
                      return absl::OkStatus();
                    });
}

grpc::ServerWriteReactor<pb::CleanResponse>* ServiceImpl::Clean(grpc::CallbackServerContext* ctx,
                                                                const pb::CleanRequest* request) {
  CleanOptions options;
  options.vacuum = request->vacuum();
  using Stream = MaintenanceStream<pb::CleanResponse>;
  return new Stream(
      this, ctx, Method::kClean,
      [this, options](const ProgressFn& progress, Stream* stream) -> absl::Status {
        PACKSTORE_ASSIGN_OR_RETURN(CleanResult r, container_->Clean(options, progress));
        spdlog::info("Clean: {} loose copies and {} sandbox files deleted", r.loose_deleted,
                     r.sandbox_deleted);
        pb::CleanResponse message;
        pb::CleanResult* out = message.mutable_result();
        out->set_loose_deleted(r.loose_deleted);
        out->set_sandbox_deleted(r.sandbox_deleted);
        out->set_duplicates_resolved(r.duplicates_resolved);
        stream->Send(std::move(message));
        return absl::OkStatus();
      });
}

grpc::ServerWriteReactor<pb::DeleteResponse>* ServiceImpl::Delete(
    grpc::CallbackServerContext* ctx, const pb::DeleteRequest* request) {
  absl::Status valid = CheckKeys(request->keys(), hash_type());
  std::vector<std::string> keys(request->keys().begin(), request->keys().end());
  using Stream = MaintenanceStream<pb::DeleteResponse>;
  return new Stream(this, ctx, Method::kDelete,
                    [this, valid, keys](const ProgressFn& progress, Stream* stream)
                        -> absl::Status {
                      PACKSTORE_RETURN_IF_ERROR(valid);
                      progress({"delete", 0, keys.size()});
                      PACKSTORE_ASSIGN_OR_RETURN(uint64_t deleted, container_->Delete(keys));
                      progress({"delete", keys.size(), keys.size()});
                      spdlog::info("Delete: {} of {} keys existed", deleted, keys.size());
                      pb::DeleteResponse message;
                      message.mutable_result()->set_deleted(deleted);
                      stream->Send(std::move(message));
                      return absl::OkStatus();
                    });
}

grpc::ServerWriteReactor<pb::ValidateResponse>* ServiceImpl::Validate(
    grpc::CallbackServerContext* ctx, const pb::ValidateRequest* /*request*/) {
  using Stream = MaintenanceStream<pb::ValidateResponse>;
  return new Stream(this, ctx, Method::kValidate,
                    [this](const ProgressFn& progress, Stream* stream) -> absl::Status {
                      PACKSTORE_ASSIGN_OR_RETURN(ValidateReport report,
                                                 container_->Validate(progress));
                      for (const ValidateIssue& issue : report.issues) {
                        pb::ValidateResponse message;
                        pb::ValidateIssue* out = message.mutable_issue();
                        out->set_kind(std::string(ValidateIssueKindName(issue.kind)));
                        out->set_subject(issue.subject);
                        out->set_detail(issue.detail);
                        stream->Send(std::move(message));
                      }
                      spdlog::info("Validate: {} loose and {} packed objects checked, {} issues",
                                   report.loose_checked, report.packed_checked,
                                   report.issues.size());
                      pb::ValidateResponse message;
                      pb::ValidateResult* out = message.mutable_result();
                      out->set_loose_checked(report.loose_checked);
                      out->set_packed_checked(report.packed_checked);
                      out->set_issues(report.issues.size());
                      stream->Send(std::move(message));
                      return absl::OkStatus();
                    });
}

}  // namespace

std::unique_ptr<ObjectStoreService> ObjectStoreService::Create(Container* container,
                                                               const PeerRegistry* peers,
                                                               const ServiceOptions& options) {
  return std::make_unique<ServiceImpl>(container, peers, options);
}

}  // namespace packstore::service
