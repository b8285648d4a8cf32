// DaemonStore: the Store interface over the client library. See
// daemon_store.h. This file includes packstore/client.h and never the
// engine's headers (store.h keeps the two apart).
#include "client/cli/daemon_store.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "client/cli/importer.h"
#include "packstore/client.h"

namespace packstore::cli {
namespace {

namespace pc = ::packstore::client;

constexpr std::string_view kMaintenanceAdvice =
    "\n  pack, optimize, repack, clean, rm and validate are maintenance: they need admin rights "
    "on packstored (run them as the daemon's user or root, or have an admin add you with "
    "packstored's --admin-uid or --admin-gid)";
constexpr std::string_view kSocketAdvice =
    "\n  start packstored, or name its socket with --socket or PACKSTORE_SOCKET; "
    "--store DIR works on a store folder without the daemon";

pc::PutMode ToMode(Placement placement) {
  switch (placement) {
    case Placement::kAuto:
      return pc::PutMode::kAuto;
    case Placement::kLoose:
      return pc::PutMode::kLoose;
    case Placement::kPacked:
      return pc::PutMode::kPacked;
    case Placement::kDefault:
      break;
  }
  return pc::PutMode::kDefault;
}

pc::Compression ToCompression(CompressChoice choice) {
  switch (choice) {
    case CompressChoice::kNo:
      return pc::Compression::kNo;
    case CompressChoice::kYes:
      return pc::Compression::kYes;
    case CompressChoice::kAuto:
      return pc::Compression::kAuto;
    case CompressChoice::kDefault:
      break;
  }
  return pc::Compression::kDefault;
}

pc::PutOptions ToPutOptions(const WriteOptions& options) {
  pc::PutOptions out;
  out.mode = ToMode(options.placement);
  out.compression = ToCompression(options.compress);
  return out;
}

pc::ProgressCallback ToCallback(const ProgressFn& progress) {
  if (!progress) return {};
  return [progress](const pc::Progress& p) { progress(Progress{p.phase, p.done, p.total}); };
}

// Why nothing answers on `socket`, found by trying it directly.
std::string DescribeSocket(const std::string& socket) {
  struct stat st;
  if (::stat(socket.c_str(), &st) != 0) {
    return "no packstored socket at " + socket + " (" + std::strerror(errno) +
           "): the daemon is not running there";
  }
  if (!S_ISSOCK(st.st_mode)) return socket + " is not a socket";
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket.size() >= sizeof(addr.sun_path)) return "the socket path " + socket + " is too long";
  std::memcpy(addr.sun_path, socket.data(), socket.size());
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "cannot make a socket: " + std::string(std::strerror(errno));
  int rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  int err = errno;
  ::close(fd);
  if (rc == 0) return "";
  if (err == ECONNREFUSED) {
    return "nothing listens on " + socket + " (a stale socket: packstored is not running)";
  }
  if (err == EACCES || err == EPERM) {
    return "not allowed to connect to " + socket +
           " (permission denied on the socket file: ask to be added to its group, "
           "packstore-clients under systemd)";
  }
  return "cannot connect to " + socket + ": " + std::strerror(err);
}

class DaemonStore final : public Store {
 public:
  explicit DaemonStore(std::unique_ptr<pc::Client> client) : client_(std::move(client)) {}

  Kind kind() const override { return Kind::kDaemon; }

  absl::StatusOr<std::vector<Written>> PutMany(std::span<const std::string_view> objects,
                                               const WriteOptions& options) override {
    auto refs = client_->PutMany(objects, ToPutOptions(options));
    if (!refs.ok()) return Explain(refs.status());
    std::vector<Written> out;
    out.reserve(refs->size());
    for (const pc::ObjectRef& ref : *refs) out.push_back(Written{ref.key, ref.size});
    return out;
  }

  absl::StatusOr<Written> PutFile(const std::string& path, const WriteOptions& options) override {
    auto ref = client_->PutFile(path, ToPutOptions(options));
    if (!ref.ok()) return Explain(ref.status());
    return Written{ref->key, ref->size};
  }

  absl::StatusOr<Written> PutStream(const ByteSource& source,
                                    const WriteOptions& options) override {
    auto ref = client_->PutStream(source, ToPutOptions(options));
    if (!ref.ok()) return Explain(ref.status());
    return Written{ref->key, ref->size};
  }

  absl::StatusOr<uint64_t> ReadObject(std::string_view key, const ChunkSink& sink, bool verify,
                                      const std::function<void(uint64_t)>& on_size) override {
    if (on_size) {
      const std::string keys[] = {std::string(key)};
      auto stats = client_->Stat(keys);
      if (!stats.ok()) return Explain(stats.status());
      if (!(*stats)[0]) return absl::NotFoundError("object " + keys[0] + " not found");
      on_size((*stats)[0]->size);
    }
    auto size = client_->GetTo(key, sink, verify);
    if (!size.ok()) return Explain(size.status());
    return *size;
  }

  absl::StatusOr<std::vector<std::optional<ObjectStat>>> Stat(
      std::span<const std::string> keys) override {
    auto infos = client_->Stat(keys);
    if (!infos.ok()) return Explain(infos.status());
    std::vector<std::optional<ObjectStat>> out;
    out.reserve(infos->size());
    for (const std::optional<pc::ObjectInfo>& info : *infos) {
      if (!info) {
        out.emplace_back();
        continue;
      }
      ObjectStat stat;
      stat.key = info->key;
      stat.size = info->size;
      stat.packed = info->packed;
      stat.compressed = info->compressed;
      stat.stored_size = info->stored_size;
      out.push_back(std::move(stat));
    }
    return out;
  }

  absl::StatusOr<std::vector<bool>> Has(std::span<const std::string> keys) override {
    auto present = client_->Has(keys);
    if (!present.ok()) return Explain(present.status());
    return *std::move(present);
  }

  absl::Status List(std::string_view after, const KeysFn& on_keys) override {
    return Explain(client_->List(on_keys, after));
  }

  absl::StatusOr<StoreInfo> Info() override {
    auto status = client_->Status();
    if (!status.ok()) return Explain(status.status());
    const pc::StoreStatus& s = *status;
    StoreInfo info;
    info.container_dir = s.container_dir;
    info.container_id = s.container_id;
    info.hash_type = s.hash_type;
    info.compression_algorithm = s.compression_algorithm;
    info.disk_objectstore_compatible = s.compression_algorithm.rfind("zlib", 0) == 0;
    info.packed_objects = s.packed_objects;
    info.packed_bytes = s.packed_bytes;
    info.packed_stored_bytes = s.packed_stored_bytes;
    info.pack_files = s.pack_files;
    info.pack_file_bytes = s.pack_file_bytes;
    info.hole_bytes = s.hole_bytes;
    info.loose_objects = s.loose_objects;
    info.loose_bytes = s.loose_bytes;
    info.index_bytes = s.index_bytes;
    info.daemon = StoreInfo::Daemon{s.version,     client_->socket(), s.uptime_seconds,
                                    s.maintenance, s.free_bytes,      s.free_bytes_reserve};
    info.json = s.json;
    return info;
  }

  absl::StatusOr<PackSummary> Pack(const PackRequest& request,
                                   const ProgressFn& progress) override {
    if (request.keep_loose) {
      return absl::InvalidArgumentError(
          "--keep-loose works on a store folder only (--store DIR): packstored always removes "
          "the loose copies it packed");
    }
    pc::PackOptions options;
    options.compression = ToCompression(request.compress);
    options.validate = request.validate;
    auto r = client_->Pack(options, ToCallback(progress));
    if (!r.ok()) return Explain(r.status(), true);
    return PackSummary{r->packed, r->already_packed, r->bytes, r->loose_deleted, r->corrupt};
  }

  absl::StatusOr<RepackSummary> Repack(CompressChoice compress,
                                       const ProgressFn& progress) override {
    auto r = client_->Repack(ToCompression(compress), ToCallback(progress));
    if (!r.ok()) return Explain(r.status(), true);
    return RepackSummary{r->packs_rewritten, r->packs_removed, r->objects_moved,
                         r->bytes_reclaimed};
  }

  absl::StatusOr<CleanSummary> Clean(bool vacuum, const ProgressFn& progress) override {
    auto r = client_->Clean(vacuum, ToCallback(progress));
    if (!r.ok()) return Explain(r.status(), true);
    return CleanSummary{r->loose_deleted, r->sandbox_deleted, r->duplicates_resolved};
  }

  absl::StatusOr<uint64_t> Delete(std::span<const std::string> keys,
                                  const ProgressFn& progress) override {
    auto deleted = client_->Delete(keys, ToCallback(progress));
    if (!deleted.ok()) return Explain(deleted.status(), true);
    return *deleted;
  }

  absl::StatusOr<ValidateSummary> Validate(const ProgressFn& progress) override {
    auto r = client_->Validate(ToCallback(progress));
    if (!r.ok()) return Explain(r.status(), true);
    ValidateSummary summary;
    summary.loose_checked = r->loose_checked;
    summary.packed_checked = r->packed_checked;
    summary.issues.reserve(r->issues.size());
    for (const pc::ValidateIssue& issue : r->issues) {
      summary.issues.push_back(Issue{issue.kind, issue.subject, issue.detail});
    }
    return summary;
  }

  absl::StatusOr<ImportSummary> Import(const std::string& source_dir,
                                       const ProgressFn& progress) override {
    return ImportFolder(source_dir, *this, progress);
  }

 private:
  // Adds what a person can do about connection and permission errors.
  absl::Status Explain(const absl::Status& status, bool maintenance = false) const {
    if (absl::IsUnavailable(status)) {
      std::string why = DescribeSocket(client_->socket());
      if (why.empty()) {
        // The socket answers: the daemon closed the call or is going away.
        return absl::UnavailableError(
            std::string(status.message()) +
            "\n  packstored listens but did not serve the call; if it keeps refusing, its "
            "allow lists (--allow-uid, --allow-gid) may leave your uid out");
      }
      return absl::UnavailableError(why + std::string(kSocketAdvice));
    }
    if (absl::IsPermissionDenied(status) && maintenance) {
      return absl::PermissionDeniedError(std::string(status.message()) +
                                         std::string(kMaintenanceAdvice));
    }
    return status;
  }

  std::unique_ptr<pc::Client> client_;
};

}  // namespace

std::string DefaultDaemonSocket() { return pc::DefaultSocketPath(); }

absl::StatusOr<std::unique_ptr<Store>> OpenDaemonStore(const std::string& socket) {
  pc::ClientOptions options;
  options.socket = socket;
  auto client = pc::Client::Connect(std::move(options));
  if (!client.ok()) {
    if (!absl::IsUnavailable(client.status()) && !absl::IsInvalidArgument(client.status())) {
      return client.status();
    }
    std::string target = socket.empty() ? pc::DefaultSocketPath() : socket;
    return absl::UnavailableError(DescribeSocket(target) + std::string(kSocketAdvice));
  }
  return std::unique_ptr<Store>(new DaemonStore(std::move(*client)));
}

}  // namespace packstore::cli
