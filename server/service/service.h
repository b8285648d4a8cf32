// The packstore.v1.ObjectStore gRPC service (proto/packstore/v1/
// packstore.proto; docs/protocol.md): requests -> engine calls -> responses.
//
// Threading: gRPC's callback API runs the handlers on its polling threads,
// which do no disk work here. Reads run on a pool of worker threads, packed
// puts queue at the single writer thread (group commit: one append, one
// fdatasync and one index transaction per batch of callers), streamed
// uploads run on a thread of their own, and maintenance calls on the
// maintenance thread, one at a time.
//
// Besides gRPC, the service answers the daemon's local fast path
// (docs/protocol.md, "The local fast path (PSFD1)") through Locate and
// PutFromFile: the same access checks, limits, free-disk reserve and group
// commit as the gRPC calls, on the caller's thread.
//
// This header keeps gRPC out of its includers: the daemon registers
// grpc_service() with its grpc::ServerBuilder.
#ifndef PACKSTORE_SERVER_SERVICE_SERVICE_H_
#define PACKSTORE_SERVER_SERVICE_SERVICE_H_

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/store/container.h"

namespace grpc {
class Service;
}  // namespace grpc

namespace packstore {
namespace service {

struct PeerCredentials {
  uid_t uid = 0;
  gid_t gid = 0;
  pid_t pid = 0;
};

// The credentials of every connection the listener handed to gRPC, by file
// descriptor. gRPC names a connection added from a descriptor "fd:N" in
// ServerContext::peer(). A descriptor is re-registered when reused, always
// before gRPC sees the new connection, so a lookup during a call finds its
// own connection's peer. Thread-safe.
class PeerRegistry {
 public:
  void Register(int fd, const PeerCredentials& credentials);
  // The credentials for a gRPC peer string ("fd:N"); nullopt if unknown.
  std::optional<PeerCredentials> Find(std::string_view grpc_peer) const;

 private:
  mutable absl::Mutex mu_;
  std::vector<std::optional<PeerCredentials>> by_fd_ ABSL_GUARDED_BY(mu_);
};

// PERMISSION_DENIED for a peer the allow lists leave out, in the words
// every refusal uses.
absl::Status NotAllowedError(const PeerCredentials& peer);

// Who may connect and who may run maintenance. Empty allow lists allow
// everyone the socket's file mode lets in.
struct AccessPolicy {
  std::vector<uid_t> allow_uids;
  std::vector<gid_t> allow_gids;
  // Admins (Pack, Repack, Clean, Delete, Validate). The daemon fills in its
  // own uid and root when these are left empty.
  std::vector<uid_t> admin_uids;
  std::vector<gid_t> admin_gids;

  // Allowed when both lists are empty, or the uid is in allow_uids, or the
  // gid is in allow_gids. Admins are always allowed.
  bool IsAllowed(const PeerCredentials& peer) const;
  bool IsAdmin(const PeerCredentials& peer) const;
};

struct Limits {
  // Largest object a put accepts (RESOURCE_EXHAUSTED past it).
  uint64_t max_object_size = uint64_t{1} << 40;
  // Largest request message (the server's receive limit; the daemon sets
  // it on its grpc::ServerBuilder).
  uint64_t max_message_size = uint64_t{16} << 20;
  // Streaming calls (PutStream, PutMany, Get, GetMany, List, maintenance)
  // running at once across all clients; more get RESOURCE_EXHAUSTED.
  uint32_t max_concurrent_streams = 1024;
  // Of those, the most one client process may run at once, so that one
  // client holding its streams open cannot refuse everyone else's; 0: a
  // quarter of max_concurrent_streams (at least 1).
  uint32_t max_streams_per_client = 0;
  // A streaming call whose client has for this long neither taken the
  // message the call wrote nor sent the one it asked for is cancelled; 0:
  // never.
  uint32_t stream_idle_timeout_seconds = 300;
  // Writes are refused with RESOURCE_EXHAUSTED while the store's file
  // system has less free space than this (plus the write's own size).
  uint64_t free_disk_reserve = uint64_t{1} << 30;
};

enum class DefaultPutMode { kAuto, kLoose, kPacked };

// Where a put goes, as a request says it (docs/protocol.md, "Put modes and
// compression"); kDefault: as ServiceOptions::default_mode says.
enum class PutMode { kDefault, kAuto, kLoose, kPacked };

struct FilePutOptions {
  PutMode mode = PutMode::kDefault;
  CompressMode compress = CompressMode::kNo;
};

struct ServiceOptions {
  // Mode of puts that leave it unspecified.
  DefaultPutMode default_mode = DefaultPutMode::kAuto;
  // In auto mode, objects up to this size go to packs, larger ones loose.
  uint64_t auto_packed_max_size = uint64_t{1} << 20;
  // Worker threads for reads and loose writes (0: 2 per core, at least 4).
  int worker_threads = 0;
  Limits limits;
  AccessPolicy access;
  std::string version = "packstore";
};

// Objects and bytes written loose since the last pack: what the daemon's
// auto-pack policy watches. Approximate by design (cheap atomics).
struct LooseBacklog {
  uint64_t objects = 0;
  uint64_t bytes = 0;
};

class ObjectStoreService {
 public:
  // `container` (opened as writer) and `peers` must outlive the service.
  static std::unique_ptr<ObjectStoreService> Create(Container* container,
                                                    const PeerRegistry* peers,
                                                    const ServiceOptions& options);
  virtual ~ObjectStoreService() = default;

  // What to register with the grpc::ServerBuilder.
  virtual grpc::Service* grpc_service() = 0;

  // SIGHUP: new limits and access policy for calls that start from now on.
  virtual void Reload(const Limits& limits, const AccessPolicy& access) = 0;

  // Runs `operation` on the calling thread as the one maintenance operation
  // of the moment, named `name` in Status; FAILED_PRECONDITION naming the
  // running one when another runs. The daemon's scheduled maintenance goes
  // through it, as the maintenance RPCs do.
  virtual absl::Status RunMaintenance(std::string_view name,
                                      const std::function<absl::Status()>& operation) = 0;

  // The fast path's LOCATE: checks that `peer` may read and that every key
  // is well formed (INVALID_ARGUMENT naming the first bad one, "keys[3]:
  // ..."), then Container::Locate. Blocks on the index and on opening
  // files: call it on a thread that may.
  virtual absl::StatusOr<LocateResult> Locate(const std::vector<std::string>& keys,
                                              size_t max_files, const PeerCredentials& peer) = 0;

  // The fast path's PUT: stores the content of the regular file `fd`
  // (not owned, kept open by the caller until this returns), read with
  // pread from offset 0 until it ends, whatever its size said. It goes
  // where a PutStream with the same options would: small objects through
  // the group commit, larger ones into a loose file (and, in packed mode,
  // then into a pack), with the same size limit, free-disk reserve and
  // permission check. Returns once the object is durable; blocks until
  // then. INVALID_ARGUMENT for a descriptor that is not a regular file open
  // for reading; RESOURCE_EXHAUSTED for the object size limit and the
  // reserve; PERMISSION_DENIED; UNAVAILABLE once the service shuts down;
  // the read error of the file.
  virtual absl::StatusOr<WrittenObject> PutFromFile(int fd, const FilePutOptions& options,
                                                    const PeerCredentials& peer) = 0;

  // Calls of the ObjectStore service running now.
  virtual uint64_t active_calls() const = 0;

  virtual LooseBacklog loose_backlog() const = 0;
  // Sets the backlog (at start-up from the container's counts; after a pack
  // from what is left).
  virtual void set_loose_backlog(const LooseBacklog& backlog) = 0;

  // A real liveness check for the watchdog: a worker thread runs an index
  // lookup within `timeout`.
  virtual absl::Status CheckLiveness(absl::Duration timeout) = 0;

  // After grpc::Server::Shutdown: drains the writer queue and joins the
  // service's threads. Returns false when a maintenance operation is still
  // running at `deadline` (the daemon may then exit without waiting; the
  // engine recovers at the next start).
  virtual bool Shutdown(absl::Time deadline) = 0;
};

}  // namespace service
}  // namespace packstore

#endif  // PACKSTORE_SERVER_SERVICE_SERVICE_H_
