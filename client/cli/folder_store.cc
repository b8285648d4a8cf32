// FolderStore: the Store interface over the engine. See folder_store.h.
#include "client/cli/folder_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <utility>

#include "client/cli/output.h"
#include "common/hasher.h"
#include "common/status_util.h"
#include "common/str_cat.h"
#include "server/store/container.h"
#include "server/store/file_io.h"
#include "server/store/object_reader.h"

namespace packstore::cli {
namespace {

constexpr size_t kChunk = size_t{1} << 20;
constexpr size_t kListPage = 1000;

CompressMode ToCompressMode(CompressChoice choice) {
  switch (choice) {
    case CompressChoice::kYes:
      return CompressMode::kYes;
    case CompressChoice::kAuto:
      return CompressMode::kAuto;
    case CompressChoice::kDefault:
    case CompressChoice::kNo:
      break;
  }
  return CompressMode::kNo;
}

packstore::ProgressFn ToEngineProgress(const ProgressFn& progress) {
  if (!progress) return {};
  return [progress](const packstore::Progress& p) { progress(Progress{p.phase, p.done, p.total}); };
}

// An ObjectSource over a ByteSource, after `prefix` (bytes already read).
class CallbackSource : public ObjectSource {
 public:
  CallbackSource(std::string prefix, const Store::ByteSource& source)
      : prefix_(std::move(prefix)), source_(source) {}
  absl::StatusOr<size_t> Read(char* buf, size_t capacity) override {
    if (used_ < prefix_.size()) {
      size_t n = std::min(capacity, prefix_.size() - used_);
      prefix_.copy(buf, n, used_);
      used_ += n;
      return n;
    }
    return source_(buf, capacity);
  }

 private:
  std::string prefix_;
  size_t used_ = 0;
  const Store::ByteSource& source_;
};

class EngineObjectStream : public ObjectStream {
 public:
  explicit EngineObjectStream(std::unique_ptr<ObjectReader> reader) : reader_(std::move(reader)) {}
  uint64_t size() const override { return reader_->size(); }
  absl::StatusOr<size_t> Read(char* buffer, size_t n) override { return reader_->Read(buffer, n); }

 private:
  std::unique_ptr<ObjectReader> reader_;
};

Written ToWritten(const WrittenObject& w) { return Written{w.key, w.size}; }

}  // namespace

struct FolderStore::Engine {
  std::unique_ptr<Container> container;

  // Writes one object from `source` where `placement` says; `size` is its
  // size when known (kAuto needs it, or reads ahead to learn it).
  absl::StatusOr<Written> Write(ObjectSource& source, std::optional<uint64_t> size,
                                const WriteOptions& options) {
    bool packed = options.placement == Placement::kPacked ||
                  (options.placement == Placement::kAuto && size && *size <= kSmallObjectMax);
    absl::StatusOr<WrittenObject> written =
        packed ? container->PutPackedStream(source, ToCompressMode(options.compress))
               : container->PutLoose(source);
    if (!written.ok()) return written.status();
    return ToWritten(*written);
  }
};

absl::Status InitFolder(const std::string& dir, const InitRequest& request) {
  PACKSTORE_ASSIGN_OR_RETURN(HashType hash_type, ParseHashType(request.hash_type));
  PACKSTORE_ASSIGN_OR_RETURN(Codec codec, ParseCodec(request.compression));
  InitOptions options;
  options.loose_prefix_len = request.loose_prefix_len;
  options.pack_size_target = request.pack_size_target;
  options.hash_type = hash_type;
  options.codec = codec;
  options.allow_incompatible_codec = request.allow_incompatible;
  return Container::Init(dir, options);
}

absl::StatusOr<std::unique_ptr<FolderStore>> FolderStore::Open(const std::string& dir,
                                                               Access access) {
  absl::StatusOr<std::unique_ptr<Container>> opened =
      Container::Open(dir, access == Access::kShared ? OpenMode::kShared : OpenMode::kWriter);
  // Reads and loose writes work beside a running writer.
  if (access == Access::kReader && absl::IsFailedPrecondition(opened.status())) {
    opened = Container::Open(dir, OpenMode::kShared);
  }
  if (!opened.ok()) return opened.status();
  auto engine = std::make_unique<Engine>();
  engine->container = std::move(*opened);
  return std::unique_ptr<FolderStore>(new FolderStore(std::move(engine)));
}

FolderStore::FolderStore(std::unique_ptr<Engine> engine) : engine_(std::move(engine)) {}
FolderStore::~FolderStore() = default;

const std::string& FolderStore::dir() const { return engine_->container->dir(); }

std::string_view FolderStore::hash_type() const {
  return HashTypeName(engine_->container->config().hash_type);
}

absl::StatusOr<std::vector<Written>> FolderStore::PutMany(std::span<const std::string_view> objects,
                                                          const WriteOptions& options) {
  Container& store = *engine_->container;
  std::vector<Written> out(objects.size());
  // Objects bound for packs share one transaction; the others go loose.
  std::vector<std::string_view> packed;
  std::vector<size_t> packed_at;
  for (size_t i = 0; i < objects.size(); ++i) {
    bool to_pack = options.placement == Placement::kPacked ||
                   (options.placement == Placement::kAuto && objects[i].size() <= kSmallObjectMax);
    if (to_pack) {
      packed.push_back(objects[i]);
      packed_at.push_back(i);
      continue;
    }
    PACKSTORE_ASSIGN_OR_RETURN(WrittenObject w, store.PutLoose(objects[i]));
    out[i] = ToWritten(w);
  }
  if (!packed.empty()) {
    PACKSTORE_ASSIGN_OR_RETURN(std::vector<WrittenObject> written,
                               store.PutPacked(packed, ToCompressMode(options.compress)));
    for (size_t j = 0; j < written.size(); ++j) out[packed_at[j]] = ToWritten(written[j]);
  }
  return out;
}

absl::StatusOr<Written> FolderStore::PutFile(const std::string& path, const WriteOptions& options) {
  PACKSTORE_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDONLY));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, StrCat("stat ", path));
  std::optional<uint64_t> size;
  if (S_ISREG(st.st_mode)) size = static_cast<uint64_t>(st.st_size);
  FdSource source(fd.get());
  if (!size && options.placement == Placement::kAuto) {
    // A pipe or device: learn its size by reading, as for any stream.
    return PutStream([&](char* buf, size_t n) { return source.Read(buf, n); }, options);
  }
  return engine_->Write(source, size, options);
}

absl::StatusOr<Written> FolderStore::PutStream(const ByteSource& source,
                                               const WriteOptions& options) {
  std::string prefix;
  std::optional<uint64_t> size;
  if (options.placement == Placement::kAuto) {
    // Read up to one byte past the small-object limit to learn which side
    // of it the stream is.
    prefix.resize(kSmallObjectMax + 1);
    size_t filled = 0;
    while (filled < prefix.size()) {
      PACKSTORE_ASSIGN_OR_RETURN(size_t n, source(prefix.data() + filled, prefix.size() - filled));
      if (n == 0) break;
      filled += n;
    }
    prefix.resize(filled);
    if (filled <= kSmallObjectMax) size = filled;
  }
  CallbackSource adapted(std::move(prefix), source);
  return engine_->Write(adapted, size, options);
}

absl::StatusOr<uint64_t> FolderStore::ReadObject(std::string_view key, const ChunkSink& sink,
                                                 bool verify,
                                                 const std::function<void(uint64_t)>& on_size) {
  PACKSTORE_ASSIGN_OR_RETURN(std::unique_ptr<ObjectReader> reader,
                             engine_->container->OpenObject(key));
  if (on_size) on_size(reader->size());
  std::optional<Hasher> hasher;
  if (verify) hasher.emplace(engine_->container->config().hash_type);
  auto buf = std::make_unique_for_overwrite<char[]>(kChunk);
  uint64_t total = 0;
  while (true) {
    PACKSTORE_ASSIGN_OR_RETURN(size_t n, reader->Read(buf.get(), kChunk));
    if (n == 0) break;
    std::string_view chunk(buf.get(), n);
    if (hasher) hasher->Update(chunk);
    PACKSTORE_RETURN_IF_ERROR(sink(chunk));
    total += n;
  }
  if (hasher && hasher->HexDigest() != key) {
    return absl::DataLossError(StrCat("the stored bytes of ", key,
                                      " do not hash to its key: discard them and run validate"));
  }
  return total;
}

absl::StatusOr<std::vector<std::optional<ObjectStat>>> FolderStore::Stat(
    std::span<const std::string> keys) {
  std::vector<std::string> wanted(keys.begin(), keys.end());
  PACKSTORE_ASSIGN_OR_RETURN(std::vector<std::optional<ObjectInfo>> infos,
                             engine_->container->StatMany(wanted));
  std::vector<std::optional<ObjectStat>> out;
  out.reserve(infos.size());
  for (const std::optional<ObjectInfo>& info : infos) {
    if (!info) {
      out.emplace_back();
      continue;
    }
    ObjectStat stat;
    stat.key = info->key;
    stat.size = info->size;
    if (info->packed) {
      stat.packed = true;
      stat.compressed = info->packed->compressed;
      stat.stored_size = info->packed->length;
      stat.pack_id = info->packed->pack_id;
      stat.offset = info->packed->offset;
    }
    out.push_back(std::move(stat));
  }
  return out;
}

absl::StatusOr<std::vector<bool>> FolderStore::Has(std::span<const std::string> keys) {
  std::vector<bool> out;
  out.reserve(keys.size());
  for (const std::string& key : keys) {
    PACKSTORE_ASSIGN_OR_RETURN(bool present, engine_->container->Has(key));
    out.push_back(present);
  }
  return out;
}

absl::Status FolderStore::List(std::string_view after, const KeysFn& on_keys) {
  std::vector<std::string> page;
  absl::Status stopped;
  PACKSTORE_RETURN_IF_ERROR(engine_->container->ListKeys(after, [&](std::string_view key) {
    page.emplace_back(key);
    if (page.size() < kListPage) return true;
    stopped = on_keys(page);
    page.clear();
    return stopped.ok();
  }));
  PACKSTORE_RETURN_IF_ERROR(stopped);
  return page.empty() ? absl::OkStatus() : on_keys(page);
}

absl::StatusOr<StoreInfo> FolderStore::Info() {
  Container& store = *engine_->container;
  PACKSTORE_ASSIGN_OR_RETURN(StoreCounts counts, store.Counts());
  const ContainerConfig& c = store.config();
  StoreInfo info;
  info.container_dir = store.dir();
  info.container_id = c.container_id;
  info.hash_type = std::string(HashTypeName(c.hash_type));
  info.compression_algorithm = CodecName(c.codec);
  info.disk_objectstore_compatible = IsDiskObjectstoreCompatible(c.codec);
  info.pack_size_target = c.pack_size_target;
  info.packed_objects = counts.packed_objects;
  info.packed_bytes = counts.packed_bytes;
  info.packed_stored_bytes = counts.packed_stored_bytes;
  info.pack_files = counts.pack_files;
  info.pack_file_bytes = counts.pack_file_bytes;
  info.hole_bytes = counts.hole_bytes;
  info.loose_objects = counts.loose_objects;
  info.loose_bytes = counts.loose_bytes;
  info.index_bytes = counts.index_bytes;
  info.json = StrCat(
      "{\"path\": ", JsonString(store.dir()), ", \"packed_count\": ", counts.packed_objects,
      ", \"packed_bytes\": ", counts.packed_bytes,
      ", \"packed_stored_bytes\": ", counts.packed_stored_bytes,
      ", \"pack_files\": ", counts.pack_files, ", \"pack_file_bytes\": ", counts.pack_file_bytes,
      ", \"hole_bytes\": ", counts.hole_bytes, ", \"loose_count\": ", counts.loose_objects,
      ", \"loose_bytes\": ", counts.loose_bytes, ", \"index_bytes\": ", counts.index_bytes,
      ", \"config\": ", SerializeConfigJson(c), "}");
  return info;
}

absl::StatusOr<PackSummary> FolderStore::Pack(const PackRequest& request,
                                              const ProgressFn& progress) {
  PackOptions options;
  options.compress = ToCompressMode(request.compress);
  options.validate = request.validate;
  options.delete_loose = !request.keep_loose;
  PACKSTORE_ASSIGN_OR_RETURN(PackResult r,
                             engine_->container->PackAllLoose(options, ToEngineProgress(progress)));
  return PackSummary{r.packed, r.already_packed, r.bytes, r.loose_deleted, std::move(r.corrupt)};
}

absl::StatusOr<RepackSummary> FolderStore::Repack(CompressChoice compress,
                                                  const ProgressFn& progress) {
  RepackOptions options;
  if (compress != CompressChoice::kDefault) options.compress = ToCompressMode(compress);
  PACKSTORE_ASSIGN_OR_RETURN(RepackResult r,
                             engine_->container->Repack(options, ToEngineProgress(progress)));
  return RepackSummary{r.packs_rewritten, r.packs_removed, r.objects_moved, r.bytes_reclaimed};
}

absl::StatusOr<CleanSummary> FolderStore::Clean(bool vacuum, const ProgressFn& progress) {
  CleanOptions options;
  options.vacuum = vacuum;
  PACKSTORE_ASSIGN_OR_RETURN(CleanResult r,
                             engine_->container->Clean(options, ToEngineProgress(progress)));
  return CleanSummary{r.loose_deleted, r.sandbox_deleted, r.duplicates_resolved};
}

absl::StatusOr<uint64_t> FolderStore::Delete(std::span<const std::string> keys,
                                             const ProgressFn& progress) {
  if (progress) progress(Progress{"delete", 0, keys.size()});
  PACKSTORE_ASSIGN_OR_RETURN(uint64_t deleted,
                             engine_->container->Delete({keys.begin(), keys.end()}));
  if (progress) progress(Progress{"delete", keys.size(), keys.size()});
  return deleted;
}

absl::StatusOr<ValidateSummary> FolderStore::Validate(const ProgressFn& progress) {
  PACKSTORE_ASSIGN_OR_RETURN(ValidateReport report,
                             engine_->container->Validate(ToEngineProgress(progress)));
  ValidateSummary summary;
  summary.loose_checked = report.loose_checked;
  summary.packed_checked = report.packed_checked;
  for (ValidateIssue& issue : report.issues) {
    summary.issues.push_back(Issue{std::string(ValidateIssueKindName(issue.kind)),
                                   std::move(issue.subject), std::move(issue.detail)});
  }
  return summary;
}

absl::StatusOr<ImportSummary> FolderStore::Import(const std::string& source_dir,
                                                  const ProgressFn& progress) {
  PACKSTORE_ASSIGN_OR_RETURN(std::unique_ptr<Container> source,
                             Container::Open(source_dir, OpenMode::kShared));
  PACKSTORE_ASSIGN_OR_RETURN(ImportResult r,
                             engine_->container->Import(*source, ToEngineProgress(progress)));
  return ImportSummary{r.imported, r.already_present, r.bytes};
}

absl::StatusOr<uint64_t> FolderStore::ObjectCountEstimate() {
  PACKSTORE_ASSIGN_OR_RETURN(StoreCounts counts, engine_->container->Counts());
  return counts.packed_objects + counts.loose_objects;
}

absl::Status FolderStore::GetMany(const std::vector<std::string>& keys, uint64_t max_whole,
                                  const ObjectFn& on_object, const LargeFn& on_large) {
  return engine_->container->GetMany(
      keys,
      [&](std::string_view key, const absl::StatusOr<std::string_view>& content) {
        if (absl::IsNotFound(content.status())) return absl::OkStatus();
        if (!content.ok()) return content.status();
        return on_object(key, *content);
      },
      max_whole, on_large);
}

absl::StatusOr<std::unique_ptr<ObjectStream>> FolderStore::OpenObject(std::string_view key) {
  PACKSTORE_ASSIGN_OR_RETURN(std::unique_ptr<ObjectReader> reader,
                             engine_->container->OpenObject(key));
  return std::unique_ptr<ObjectStream>(new EngineObjectStream(std::move(reader)));
}

}  // namespace packstore::cli
