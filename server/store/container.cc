// Container: init, open, recovery, writes and reads. Maintenance operations
// are in maintenance.cc. The on-disk format is docs/format.md.
#include "server/store/container.h"

#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <set>
#include <unordered_map>

#include "common/str_cat.h"
#include "common/hasher.h"
#include "common/status_util.h"
#include "server/store/container_internal.h"
#include "server/store/object_reader.h"
#include "server/store/pack_files.h"
#include "server/store/pipelined_write.h"
#include "server/store/stored_file.h"

namespace packstore {

using internal::kChunk;
using internal::PipelinedWrite;

absl::StatusOr<CompressMode> ParseCompressMode(std::string_view name) {
  if (name == "no") return CompressMode::kNo;
  if (name == "yes") return CompressMode::kYes;
  if (name == "auto") return CompressMode::kAuto;
  return absl::InvalidArgumentError(
      StrCat("compression mode must be no, yes or auto, not \"", name, "\""));
}

namespace internal {

bool ShouldCompress(CompressMode mode, std::string_view data) {
  if (mode != CompressMode::kAuto) return mode == CompressMode::kYes;
  std::vector<uint64_t> offsets = SampleOffsets(data.size());
  if (offsets.size() == 1) return SampleIsCompressible(data.substr(0, kSamplePieces * kSamplePieceSize));
  std::string sample;
  sample.reserve(offsets.size() * kSamplePieceSize);
  for (uint64_t offset : offsets) sample.append(data.substr(offset, kSamplePieceSize));
  return SampleIsCompressible(sample);
}

absl::StatusOr<bool> ShouldCompressFile(CompressMode mode, int fd, uint64_t size) {
  if (mode != CompressMode::kAuto) return mode == CompressMode::kYes;
  std::vector<uint64_t> offsets = SampleOffsets(size);
  size_t piece = offsets.size() == 1 ? static_cast<size_t>(size) : kSamplePieceSize;
  std::string sample(offsets.size() * piece, '\0');
  for (size_t i = 0; i < offsets.size(); ++i) {
    PACKSTORE_RETURN_IF_ERROR(PreadExact(fd, sample.data() + i * piece, piece, offsets[i]));
  }
  return SampleIsCompressible(sample);
}

}  // namespace internal


// What a read found for a key: a packed location with its open pack file,
// or an open loose file.
struct Container::Resolved {
  std::string key;
  std::optional<PackedLocation> packed;
  std::shared_ptr<const StoredFile> file;  // the pack, or the loose file
  uint64_t size = 0;
};

Container::Container(std::string dir, ContainerConfig config, OpenMode mode,
                     std::unique_ptr<RegionCache> cache)
    : dir_(std::move(dir)),
      config_(std::move(config)),
      mode_(mode),
      loose_(dir_, config_.loose_prefix_len, config_.hash_type),
      cache_(std::move(cache)),
      packs_(std::make_unique<PackFileTable>(JoinPath(dir_, "packs"), cache_.get())),
      pack_writer_(std::make_unique<PackWriter>(JoinPath(dir_, "packs"),
                                                config_.pack_size_target)) {}

Container::~Container() {
  absl::MutexLock lock(&writer_mu_);
  pack_writer_.reset();
}

absl::Status Container::Init(const std::string& dir, const InitOptions& options) {
  if (options.loose_prefix_len < 0 ||
      static_cast<size_t>(options.loose_prefix_len) >= HexKeyLength(options.hash_type)) {
    return absl::InvalidArgumentError(
        StrCat("loose_prefix_len must be between 0 and ",
                     HexKeyLength(options.hash_type) - 1, ", not ", options.loose_prefix_len));
  }
  if (options.pack_size_target <= 0) {
    return absl::InvalidArgumentError("pack_size_target must be a positive number of bytes");
  }
  if (!IsDiskObjectstoreCompatible(options.codec) && !options.allow_incompatible_codec) {
    return absl::InvalidArgumentError(StrCat(
        "compression ", CodecName(options.codec),
        " makes the container unreadable by disk-objectstore; allow it explicitly "
        "(packstore init --allow-incompatible) if that is what you want"));
  }
  if (PathExists(dir)) {
    if (PathExists(JoinPath(dir, "config.json"))) {
      return absl::AlreadyExistsError(dir + " already holds a container");
    }
    PACKSTORE_ASSIGN_OR_RETURN(std::vector<std::string> entries, ListDir(dir));
    if (!entries.empty()) {
      return absl::FailedPreconditionError(dir + " is not empty: refusing to create a container in it");
    }
  } else {
    // Like mkdir -p: each missing parent in turn.
    for (size_t slash = dir.find('/', 1); slash != std::string::npos;
         slash = dir.find('/', slash + 1)) {
      PACKSTORE_RETURN_IF_ERROR(MakeDir(dir.substr(0, slash)));
    }
    PACKSTORE_RETURN_IF_ERROR(MakeDir(dir));
  }
  for (const char* sub : {"loose", "packs", "sandbox", "duplicates"}) {
    PACKSTORE_RETURN_IF_ERROR(MakeDir(JoinPath(dir, sub)));
  }
  PACKSTORE_RETURN_IF_ERROR(PackIndex::Open(JoinPath(dir, "packs.idx"), /*create=*/true).status());

  ContainerConfig config;
  config.loose_prefix_len = options.loose_prefix_len;
  config.pack_size_target = options.pack_size_target;
  config.hash_type = options.hash_type;
  config.container_id = NewContainerId();
  config.codec = options.codec;
  // config.json last: its presence is what makes the folder a container.
  std::string tmp = JoinPath(dir, "sandbox/config.json.tmp");
  {
    PACKSTORE_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644));
    PACKSTORE_RETURN_IF_ERROR(WriteAll(fd.get(), SerializeConfigJson(config)));
    PACKSTORE_RETURN_IF_ERROR(Fsync(fd.get()));
  }
  PACKSTORE_RETURN_IF_ERROR(Rename(tmp, JoinPath(dir, "config.json")));
  return FsyncDir(dir);
}

absl::StatusOr<std::unique_ptr<Container>> Container::Open(const std::string& dir,
                                                           const OpenOptions& options) {
  const OpenMode mode = options.mode;
  auto text = ReadSmallFile(JoinPath(dir, "config.json"));
  if (absl::IsNotFound(text.status())) {
    return absl::NotFoundError(dir + " is not a container: it has no config.json");
  }
  if (!text.ok()) return text.status();
  PACKSTORE_ASSIGN_OR_RETURN(ContainerConfig config, ParseConfigJson(*text));
  for (const char* sub : {"loose", "packs", "sandbox", "duplicates"}) {
    if (!PathExists(JoinPath(dir, sub))) {
      return absl::NotFoundError(StrCat(dir, " is not a complete container: ", sub,
                                              "/ is missing"));
    }
  }
  std::unique_ptr<RegionCache> cache;
  if (mode == OpenMode::kWriter) {
    PACKSTORE_ASSIGN_OR_RETURN(cache, RegionCache::Create(options.cache));
  }
  std::unique_ptr<Container> c(new Container(dir, std::move(config), mode, std::move(cache)));
  if (mode == OpenMode::kWriter) {
    std::string lock_path = JoinPath(dir, "packstore.lock");
    PACKSTORE_ASSIGN_OR_RETURN(c->writer_lock_, OpenFile(lock_path, O_RDWR | O_CREAT, 0644));
    if (::flock(c->writer_lock_.get(), LOCK_EX | LOCK_NB) != 0) {
      auto holder = ReadSmallFile(lock_path);
      std::string pid = holder.ok() ? holder->substr(0, holder->find('\n')) : "";
      return absl::FailedPreconditionError(
          StrCat(dir, " is already open for writing by another process",
                 pid.empty() ? "" : StrCat(" (pid ", pid, ")"),
                 "; only one packstore writer may own a container"));
    }
    std::string pid = StrCat(::getpid(), "\n");
    if (::ftruncate(c->writer_lock_.get(), 0) == 0) {
      PwriteAll(c->writer_lock_.get(), pid, 0).IgnoreError();
    }
  }
  std::string index_path = JoinPath(dir, "packs.idx");
  bool create_index = mode == OpenMode::kWriter && !PathExists(index_path);
  PACKSTORE_ASSIGN_OR_RETURN(c->index_, PackIndex::Open(index_path, create_index));
  if (mode == OpenMode::kWriter) {
    absl::MutexLock lock(&c->writer_mu_);
    PACKSTORE_RETURN_IF_ERROR(c->Recover());
  }
  return c;
}

absl::Status Container::Recover() {
  PACKSTORE_ASSIGN_OR_RETURN(PackListing listing, packs_->List());
  // Locks left by a packstore writer that died: we hold the container's
  // writer lock, so no packstore writer is alive. Others' locks stay.
  std::set<int64_t> foreign_locks;
  for (const std::string& lock : listing.locks) {
    std::string path = JoinPath(JoinPath(dir_, "packs"), lock);
    auto content = ReadSmallFile(path);
    int64_t id = *ParsePackName(std::string_view(lock).substr(0, lock.size() - 5));
    if (content.ok() && std::string_view(*content).starts_with("packstore ")) {
      PACKSTORE_RETURN_IF_ERROR(Unlink(path));
    } else {
      foreign_locks.insert(id);
    }
  }
  PACKSTORE_ASSIGN_OR_RETURN(auto lengths, index_->LengthPerPack());
  std::set<int64_t> with_rows;
  for (const auto& [id, length] : lengths) with_rows.insert(id);

  // Pack files no row points at: the first object of a new pack whose
  // commit never happened, or the old file of an interrupted repack. They
  // are unlinked, never truncated.
  for (int64_t id : listing.ids) {
    if (id != -1 && !with_rows.contains(id) && !foreign_locks.contains(id)) {
      PACKSTORE_RETURN_IF_ERROR(packs_->Remove(id));
    }
  }
  bool minus_one_file = std::find(listing.ids.begin(), listing.ids.end(), -1) != listing.ids.end();
  if (with_rows.contains(-1) && minus_one_file) {
    // disk-objectstore's repack died after moving rows to pack -1: give the
    // file a regular id. Link first, so a crash at any step leaves either
    // rows on -1 with packs/-1 present, or rows on the new id with its file.
    int64_t id = 0;
    while (PathExists(packs_->PathFor(id))) ++id;
    PACKSTORE_RETURN_IF_ERROR(Link(packs_->PathFor(-1), packs_->PathFor(id)));
    PACKSTORE_RETURN_IF_ERROR(FsyncDir(JoinPath(dir_, "packs")));
    PACKSTORE_RETURN_IF_ERROR(index_->RenamePack(-1, id));
    PACKSTORE_RETURN_IF_ERROR(packs_->Remove(-1));
  } else if (minus_one_file && !with_rows.contains(-1)) {
    PACKSTORE_RETURN_IF_ERROR(packs_->Remove(-1));
  }
  PACKSTORE_RETURN_IF_ERROR(loose_.CleanSandbox(CleanOptions{}.foreign_sandbox_age_seconds).status());
  pack_writer_->Reset();
  return absl::OkStatus();
}

absl::Status Container::RequireWriter(std::string_view operation) const {
  if (mode_ == OpenMode::kWriter) return absl::OkStatus();
  return absl::FailedPreconditionError(
      StrCat(operation, " needs the container's writer; this one is open shared"));
}

absl::Status Container::CheckKey(std::string_view key) const {
  return ValidateKey(key, config_.hash_type);
}

// --- Writes ---

absl::StatusOr<WrittenObject> Container::PutLoose(ObjectSource& source) {
  return loose_.Write(source);
}

absl::StatusOr<WrittenObject> Container::PutLoose(std::string_view data) {
  StringSource source(data);
  return loose_.Write(source);
}

absl::StatusOr<IndexRow> Container::AppendObject(ObjectSource& source, bool compress) {
  PACKSTORE_ASSIGN_OR_RETURN(PackWriter::Position pos, pack_writer_->BeginObject());
  Hasher hasher(config_.hash_type);
  std::unique_ptr<Compressor> compressor;
  if (compress) {
    PACKSTORE_ASSIGN_OR_RETURN(compressor, Compressor::Create(config_.codec));
  }
  auto buf = std::make_unique_for_overwrite<char[]>(kChunk);
  uint64_t size = 0;
  PACKSTORE_ASSIGN_OR_RETURN(size_t n, source.Read(buf.get(), kChunk));
  if (!compressor && n == kChunk) {
    // Large and stored as is: each chunk is hashed while it is written.
    PipelinedWrite writes([this](std::string_view data) { return pack_writer_->Write(data); },
                          kChunk);
    PACKSTORE_ASSIGN_OR_RETURN(size, writes.CopyFrom(std::string_view(buf.get(), n), source, hasher));
  } else {
    std::string out;
    while (n != 0) {
      std::string_view chunk(buf.get(), n);
      hasher.Update(chunk);
      size += n;
      if (compressor) {
        out.clear();
        PACKSTORE_RETURN_IF_ERROR(compressor->Compress(chunk, &out));
        PACKSTORE_RETURN_IF_ERROR(pack_writer_->Write(out));
      } else {
        PACKSTORE_RETURN_IF_ERROR(pack_writer_->Write(chunk));
      }
      PACKSTORE_ASSIGN_OR_RETURN(n, source.Read(buf.get(), kChunk));
    }
    if (compressor) {
      out.clear();
      PACKSTORE_RETURN_IF_ERROR(compressor->Finish(&out));
      PACKSTORE_RETURN_IF_ERROR(pack_writer_->Write(out));
    }
  }
  IndexRow row;
  row.key = hasher.HexDigest();
  row.location = PackedLocation{pos.pack_id, pos.offset, pack_writer_->EndObject(), size,
                                compress};
  return row;
}

absl::StatusOr<std::vector<WrittenObject>> Container::PutPacked(
    const std::vector<std::string_view>& objects, CompressMode compress) {
  PACKSTORE_RETURN_IF_ERROR(RequireWriter("writing to packs"));
  // Hashing happens before the writer lock is taken, so callers batching in
  // parallel only serialize on the appends themselves.
  std::vector<std::string> keys(objects.size());
  std::vector<WrittenObject> results(objects.size());
  for (size_t i = 0; i < objects.size(); ++i) {
    keys[i] = Hasher::Hash(config_.hash_type, objects[i]);
    results[i] = WrittenObject{keys[i], objects[i].size()};
  }
  absl::MutexLock lock(&writer_mu_);
  PACKSTORE_ASSIGN_OR_RETURN(auto existing, index_->LookupManyAsWriter(keys));
  std::vector<IndexRow> rows;
  std::unordered_map<std::string_view, bool> seen;
  absl::Status status;
  for (size_t i = 0; i < objects.size() && status.ok(); ++i) {
    if (existing[i] || !seen.emplace(keys[i], true).second) continue;
    bool compress_it = internal::ShouldCompress(compress, objects[i]);
    std::string stored;
    if (compress_it) {
      auto compressed = CompressAll(config_.codec, objects[i]);
      if (!compressed.ok()) {
        status = compressed.status();
        break;
      }
      stored = std::move(*compressed);
    }
    auto pos = pack_writer_->BeginObject();
    if (!pos.ok()) {
      status = pos.status();
      break;
    }
    status = pack_writer_->Write(compress_it ? std::string_view(stored) : objects[i]);
    rows.push_back(IndexRow{keys[i], PackedLocation{pos->pack_id, pos->offset,
                                                    pack_writer_->EndObject(),
                                                    objects[i].size(), compress_it}});
  }
  const std::set<int64_t> synced = pack_writer_->touched();
  if (status.ok()) status = pack_writer_->Commit();
  if (!status.ok()) {
    AbandonAppends();
    return status;
  }
  // Rows only for bytes known durable: the commit above succeeded.
  if (!rows.empty()) {
    PACKSTORE_RETURN_IF_ERROR(
        CommitRows(synced, [&] { return index_->InsertRows(rows).status(); }));
  }
  return results;
}

absl::Status Container::CommitRows(const std::set<int64_t>& synced,
                                   const std::function<absl::Status()>& commit) {
  absl::Status status = commit();
  if (!status.ok()) {
    uncommitted_packs_.insert(synced.begin(), synced.end());
    return status;
  }
  for (auto it = uncommitted_packs_.begin(); it != uncommitted_packs_.end();) {
    const int64_t id = *it;
    absl::Status scan =
        index_->ForEachRow(id, [](const IndexRow&) { return absl::CancelledError(); });
    if (!scan.ok() && !absl::IsCancelled(scan)) {
      ++it;  // look again after the next commit
      continue;
    }
    // No row: remove it, unless another packer holds it.
    if (scan.ok() && !PathExists(JoinPath(JoinPath(dir_, "packs"), StrCat(id, ".lock"))) &&
        !packs_->Remove(id).ok()) {
      ++it;
      continue;
    }
    it = uncommitted_packs_.erase(it);
  }
  return absl::OkStatus();
}

void Container::AbandonAppends() {
  std::vector<int64_t> touched(pack_writer_->touched().begin(), pack_writer_->touched().end());
  for (int64_t id : touched) {
    // One row is enough to keep the pack; a failed scan keeps it too.
    absl::Status scan =
        index_->ForEachRow(id, [](const IndexRow&) { return absl::CancelledError(); });
    if (scan.ok() && packs_->Remove(id).ok()) pack_writer_->Forget(id);
  }
  pack_writer_->Abandon();
}

absl::StatusOr<WrittenObject> Container::PutPackedStream(ObjectSource& source, CompressMode compress) {
  PACKSTORE_RETURN_IF_ERROR(RequireWriter("writing to packs"));
  // Read the head first: a small object is handled as known bytes (no hole
  // if it is packed already), and the head is the AUTO sample otherwise.
  std::string head(kSamplePieces * kSamplePieceSize + 1, '\0');
  size_t head_size = 0;
  while (head_size < head.size()) {
    PACKSTORE_ASSIGN_OR_RETURN(size_t n, source.Read(head.data() + head_size, head.size() - head_size));
    if (n == 0) break;
    head_size += n;
  }
  head.resize(head_size);
  if (head_size < kSamplePieces * kSamplePieceSize + 1) {
    PACKSTORE_ASSIGN_OR_RETURN(auto written, PutPacked({head}, compress));
    return written[0];
  }
  bool compress_it = compress == CompressMode::kYes ||
                     (compress == CompressMode::kAuto && SampleIsCompressible(head));
  internal::ChainSource chained(head, source);
  absl::MutexLock lock(&writer_mu_);
  auto row = AppendObject(chained, compress_it);
  if (!row.ok()) {
    AbandonAppends();
    return row.status();
  }
  // Known only now: if the object was packed already, the new bytes are
  // left as a hole (or their pack removed, if this append started it) and
  // the existing row kept.
  auto existing = index_->Lookup(row->key);
  if (!existing.ok() || existing->has_value()) {
    AbandonAppends();
    if (!existing.ok()) return existing.status();
    return WrittenObject{row->key, row->location.size};
  }
  const std::set<int64_t> synced = pack_writer_->touched();
  if (absl::Status committed = pack_writer_->Commit(); !committed.ok()) {
    AbandonAppends();
    return committed;
  }
  PACKSTORE_RETURN_IF_ERROR(
      CommitRows(synced, [&] { return index_->InsertRows({*row}).status(); }));
  return WrittenObject{row->key, row->location.size};
}

// --- Reads ---

absl::StatusOr<std::vector<std::optional<PackedLocation>>> Container::LookupAndOpen(
    const std::vector<std::string>& keys,
    std::map<int64_t, std::shared_ptr<const StoredFile>>* files) {
  // A shared opener's writer (another process) may move rows and replace
  // pack files at any time, so a row is used only if the index still says
  // the same after its pack was opened: the file opened then is the one the
  // row describes. A few rounds outlast any repack step.
  constexpr int kMaxRounds = 20;
  for (int round = 0;; ++round) {
    files->clear();
    PACKSTORE_ASSIGN_OR_RETURN(auto locations, index_->LookupMany(keys));
    absl::Status opened;
    for (const auto& location : locations) {
      if (!location) continue;
      auto& file = (*files)[location->pack_id];
      if (file) continue;
      auto got = packs_->Get(location->pack_id);
      if (!got.ok()) {
        opened = got.status();
        break;
      }
      file = std::move(*got);
    }
    if (packs_->cached()) {
      PACKSTORE_RETURN_IF_ERROR(opened);
      return locations;
    }
    if (opened.ok() || absl::IsDataLoss(opened)) {
      PACKSTORE_ASSIGN_OR_RETURN(auto again, index_->LookupMany(keys));
      bool same = true;
      for (size_t i = 0; i < keys.size() && same; ++i) {
        same = locations[i].has_value() == again[i].has_value() &&
               (!locations[i] || (locations[i]->pack_id == again[i]->pack_id &&
                                  locations[i]->offset == again[i]->offset &&
                                  locations[i]->length == again[i]->length));
      }
      if (same) {
        PACKSTORE_RETURN_IF_ERROR(opened);
        return locations;
      }
    }
    if (!opened.ok() && !absl::IsDataLoss(opened)) return opened;
    if (round == kMaxRounds) {
      return absl::UnavailableError("the container's writer keeps moving these objects; retry");
    }
  }
}

absl::StatusOr<Container::Resolved> Container::Resolve(std::string_view key) {
  PACKSTORE_RETURN_IF_ERROR(CheckKey(key));
  Resolved r;
  r.key = std::string(key);
  auto lookup_packed = [&]() -> absl::StatusOr<bool> {
    absl::ReaderMutexLock layout(&packs_->layout_mu());
    std::map<int64_t, std::shared_ptr<const StoredFile>> files;
    PACKSTORE_ASSIGN_OR_RETURN(auto locations, LookupAndOpen({r.key}, &files));
    r.packed = locations[0];
    if (!r.packed) return false;
    r.file = files[r.packed->pack_id];
    r.size = r.packed->size;
    return true;
  };
  PACKSTORE_ASSIGN_OR_RETURN(bool packed, lookup_packed());
  if (packed) return r;
  auto fd = loose_.Open(key);
  if (fd.ok()) {
    PACKSTORE_ASSIGN_OR_RETURN(r.size, FileSize(fd->get()));
    r.file = std::make_shared<FdStoredFile>(std::move(*fd));
    return r;
  }
  if (!absl::IsNotFound(fd.status())) return fd.status();
  // Packed and cleaned since the first look?
  PACKSTORE_ASSIGN_OR_RETURN(packed, lookup_packed());
  if (packed) return r;
  return absl::NotFoundError(StrCat("object ", key, " not found"));
}

absl::StatusOr<std::unique_ptr<ObjectReader>> Container::ReaderFor(Resolved r) {
  if (r.packed) {
    return std::make_unique<ObjectReader>(std::move(r.key), std::move(r.file), r.packed->offset,
                                          r.packed->length, r.packed->size, r.packed->compressed,
                                          config_.codec.kind);
  }
  return std::make_unique<ObjectReader>(std::move(r.key), std::move(r.file), 0, r.size, r.size,
                                        false, config_.codec.kind);
}

absl::StatusOr<std::unique_ptr<ObjectReader>> Container::OpenObject(std::string_view key) {
  PACKSTORE_ASSIGN_OR_RETURN(Resolved r, Resolve(key));
  return ReaderFor(std::move(r));
}

absl::StatusOr<std::string> Container::Get(std::string_view key) {
  PACKSTORE_ASSIGN_OR_RETURN(auto reader, OpenObject(key));
  return reader->ReadRest();
}

absl::StatusOr<std::string> Container::GetRange(std::string_view key, ByteRange range) {
  PACKSTORE_ASSIGN_OR_RETURN(auto reader, OpenObject(key));
  PACKSTORE_RETURN_IF_ERROR(reader->Seek(range.offset));
  uint64_t available = reader->size() - range.offset;
  uint64_t length = std::min(range.length.value_or(available), available);
  std::string out(length, '\0');
  size_t done = 0;
  while (done < out.size()) {
    PACKSTORE_ASSIGN_OR_RETURN(size_t n, reader->Read(out.data() + done, out.size() - done));
    if (n == 0) break;
    done += n;
  }
  return out;
}

absl::StatusOr<ObjectInfo> Container::Stat(std::string_view key) {
  PACKSTORE_ASSIGN_OR_RETURN(Resolved r, Resolve(key));
  return ObjectInfo{r.key, r.size, r.packed};
}

absl::StatusOr<LocateResult> Container::Locate(const std::vector<std::string>& keys,
                                               size_t max_files) {
  for (const std::string& key : keys) PACKSTORE_RETURN_IF_ERROR(CheckKey(key));
  LocateResult result;
  result.objects.resize(keys.size());
  using State = ObjectLocation::State;

  // Locates keys[i], i in `which`, in the index; returns those with no row.
  // Each descriptor is opened under the same hold of layout_mu() as the
  // lookup, so it is the file the rows describe. Packs are shared only
  // within one call of this: between two, pack N may have been repacked
  // and a new file given its id.
  auto locate_packed =
      [&](const std::vector<size_t>& which) -> absl::StatusOr<std::vector<size_t>> {
    std::vector<size_t> without_row;
    if (which.empty()) return without_row;
    std::vector<std::string> lookup;
    lookup.reserve(which.size());
    for (size_t i : which) lookup.push_back(keys[i]);
    absl::ReaderMutexLock layout(&packs_->layout_mu());
    std::map<int64_t, std::shared_ptr<const StoredFile>> files;
    PACKSTORE_ASSIGN_OR_RETURN(auto locations, LookupAndOpen(lookup, &files));
    std::map<int64_t, size_t> opened;
    for (size_t j = 0; j < which.size(); ++j) {
      ObjectLocation& out = result.objects[which[j]];
      if (!locations[j]) {
        without_row.push_back(which[j]);
        continue;
      }
      const PackedLocation& location = *locations[j];
      auto it = opened.find(location.pack_id);
      if (it == opened.end()) {
        if (result.files.size() >= max_files) {
          out.state = State::kDeferred;
          continue;
        }
        PACKSTORE_ASSIGN_OR_RETURN(UniqueFd fd, files[location.pack_id]->OpenDescriptor());
        it = opened.emplace(location.pack_id, result.files.size()).first;
        result.files.push_back(std::move(fd));
      }
      out.state = State::kFound;
      out.file = it->second;
      out.offset = location.offset;
      out.length = location.length;
      out.size = location.size;
      if (location.compressed) out.codec = config_.codec.kind;
    }
    return without_row;
  };

  std::vector<size_t> all(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) all[i] = i;
  PACKSTORE_ASSIGN_OR_RETURN(std::vector<size_t> not_packed, locate_packed(all));
  std::vector<size_t> vanished;
  std::map<std::string_view, size_t> loose_seen;  // a key asked twice shares its file
  for (size_t i : not_packed) {
    ObjectLocation& out = result.objects[i];
    if (auto it = loose_seen.find(keys[i]); it != loose_seen.end()) {
      out = result.objects[it->second];
      continue;
    }
    if (result.files.size() >= max_files) {
      out.state = State::kDeferred;
      continue;
    }
    absl::StatusOr<UniqueFd> fd = loose_.Open(keys[i]);
    if (absl::IsNotFound(fd.status())) {
      vanished.push_back(i);
      continue;
    }
    if (!fd.ok()) return fd.status();
    PACKSTORE_ASSIGN_OR_RETURN(uint64_t size, FileSize(fd->get()));
    out.state = State::kFound;
    out.file = result.files.size();
    out.length = size;
    out.size = size;
    result.files.push_back(std::move(*fd));
    loose_seen.emplace(keys[i], i);
  }
  // Packed and cleaned since the first look? What is not in the index now
  // stays kMissing.
  PACKSTORE_RETURN_IF_ERROR(locate_packed(vanished).status());
  return result;
}

absl::StatusOr<bool> Container::Has(std::string_view key) {
  PACKSTORE_RETURN_IF_ERROR(CheckKey(key));
  PACKSTORE_ASSIGN_OR_RETURN(auto packed, index_->Lookup(key));
  if (packed || loose_.Exists(key)) return true;
  PACKSTORE_ASSIGN_OR_RETURN(packed, index_->Lookup(key));
  return packed.has_value();
}

absl::StatusOr<std::vector<std::optional<ObjectInfo>>> Container::StatMany(
    const std::vector<std::string>& keys) {
  for (const std::string& key : keys) PACKSTORE_RETURN_IF_ERROR(CheckKey(key));
  PACKSTORE_ASSIGN_OR_RETURN(auto locations, index_->LookupMany(keys));
  std::vector<std::optional<ObjectInfo>> out(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    if (locations[i]) {
      out[i] = ObjectInfo{keys[i], locations[i]->size, locations[i]};
      continue;
    }
    auto info = Stat(keys[i]);
    if (info.ok()) {
      out[i] = std::move(*info);
    } else if (!absl::IsNotFound(info.status())) {
      return info.status();
    }
  }
  return out;
}

absl::Status Container::GetMany(const std::vector<std::string>& keys, const GetManyFn& fn,
                                uint64_t max_whole_size, const LargeObjectFn& large) {
  if (!large) max_whole_size = UINT64_MAX;
  for (const std::string& key : keys) PACKSTORE_RETURN_IF_ERROR(CheckKey(key));
  std::vector<std::string> unique_keys = keys;
  std::sort(unique_keys.begin(), unique_keys.end());
  unique_keys.erase(std::unique(unique_keys.begin(), unique_keys.end()), unique_keys.end());

  struct Item {
    const std::string* key;
    PackedLocation location;
  };
  std::vector<Item> packed;
  std::vector<const std::string*> other;
  std::map<int64_t, std::shared_ptr<const StoredFile>> files;
  {
    absl::ReaderMutexLock layout(&packs_->layout_mu());
    PACKSTORE_ASSIGN_OR_RETURN(auto locations, LookupAndOpen(unique_keys, &files));
    for (size_t i = 0; i < unique_keys.size(); ++i) {
      if (locations[i]) {
        packed.push_back(Item{&unique_keys[i], *locations[i]});
      } else {
        other.push_back(&unique_keys[i]);
      }
    }
  }
  std::sort(packed.begin(), packed.end(), [](const Item& a, const Item& b) {
    return std::tie(a.location.pack_id, a.location.offset) <
           std::tie(b.location.pack_id, b.location.offset);
  });

  // Neighbouring objects are read with one pread of up to kSpan bytes,
  // skipping gaps of up to kMaxGap.
  constexpr uint64_t kSpan = 4 << 20;
  // A gap is cheaper to read through than a second pread only while it is
  // small: 4 KiB measured best for random batches of 1 KiB objects (a 64 KiB
  // gap copied 18x the bytes delivered).
  constexpr uint64_t kMaxGap = 4 << 10;
  auto span = std::make_unique_for_overwrite<char[]>(kSpan);
  for (size_t i = 0; i < packed.size();) {
    const Item& first = packed[i];
    const std::shared_ptr<const StoredFile>& file = files[first.location.pack_id];
    if (first.location.size > max_whole_size) {
      PACKSTORE_RETURN_IF_ERROR(large(*first.key, first.location.size));
      ++i;
      continue;
    }
    if (first.location.length > kSpan) {
      ObjectReader reader(*first.key, file, first.location.offset, first.location.length,
                          first.location.size, first.location.compressed, config_.codec.kind);
      auto content = reader.ReadRest();
      if (!content.ok()) {
        PACKSTORE_RETURN_IF_ERROR(fn(*first.key, content.status()));
      } else {
        PACKSTORE_RETURN_IF_ERROR(fn(*first.key, std::string_view(*content)));
      }
      ++i;
      continue;
    }
    size_t end = i + 1;
    uint64_t span_end = first.location.offset + first.location.length;
    while (end < packed.size() && packed[end].location.pack_id == first.location.pack_id &&
           packed[end].location.size <= max_whole_size &&
           packed[end].location.offset <= span_end + kMaxGap &&
           packed[end].location.offset + packed[end].location.length <=
               first.location.offset + kSpan) {
      span_end = std::max(span_end, packed[end].location.offset + packed[end].location.length);
      ++end;
    }
    const absl::Status span_read =
        file->ReadAt(first.location.offset, span.get(), span_end - first.location.offset);
    for (; i < end; ++i) {
      const PackedLocation& loc = packed[i].location;
      char* const at = span.get() + (loc.offset - first.location.offset);
      if (!span_read.ok()) {
        // Perhaps only some objects' bytes are missing (a damaged row points
        // past the end of the pack): each alone, so only those fail.
        if (absl::Status read = file->ReadAt(loc.offset, at, loc.length); !read.ok()) {
          PACKSTORE_RETURN_IF_ERROR(fn(*packed[i].key, ObjectReadError(*packed[i].key, read)));
          continue;
        }
      }
      std::string_view stored(at, loc.length);
      if (!loc.compressed) {
        PACKSTORE_RETURN_IF_ERROR(fn(*packed[i].key, stored));
        continue;
      }
      auto content = DecompressAll(config_.codec.kind, stored, loc.size);
      if (!content.ok()) {
        PACKSTORE_RETURN_IF_ERROR(fn(*packed[i].key,
                                     absl::IsDataLoss(content.status())
                                         ? UndecodableObject(*packed[i].key, content.status())
                                         : content.status()));
      } else {
        PACKSTORE_RETURN_IF_ERROR(fn(*packed[i].key, std::string_view(*content)));
      }
    }
  }
  for (const std::string* key : other) {
    if (max_whole_size != UINT64_MAX) {
      absl::StatusOr<ObjectInfo> info = Stat(*key);
      if (info.ok() && info->size > max_whole_size) {
        PACKSTORE_RETURN_IF_ERROR(large(*key, info->size));
        continue;
      }
    }
    auto content = Get(*key);
    if (!content.ok()) {
      PACKSTORE_RETURN_IF_ERROR(fn(*key, content.status()));
    } else {
      PACKSTORE_RETURN_IF_ERROR(fn(*key, std::string_view(*content)));
    }
  }
  return absl::OkStatus();
}

absl::Status Container::ListKeys(std::string_view after,
                                 const std::function<bool(std::string_view)>& fn) {
  std::vector<std::string> loose;
  PACKSTORE_RETURN_IF_ERROR(loose_.ForEach(
      [&](const std::string& key) {
        if (key > after) loose.push_back(key);
        return absl::OkStatus();
      },
      [](const std::string&) {}));
  std::sort(loose.begin(), loose.end());
  size_t next = 0;
  bool stopped = false;
  PACKSTORE_RETURN_IF_ERROR(index_->ForEachKey(after, 0, [&](std::string_view key) {
    for (; next < loose.size() && loose[next] <= key; ++next) {
      if (loose[next] == key) continue;
      if (!fn(loose[next])) return !(stopped = true);
    }
    if (!fn(key)) return !(stopped = true);
    return true;
  }));
  for (; !stopped && next < loose.size(); ++next) {
    if (!fn(loose[next])) break;
  }
  return absl::OkStatus();
}

RegionCacheStats Container::CacheStats() const {
  return cache_ ? cache_->GetStats() : RegionCacheStats{};
}

uint64_t Container::UnmapIdleWindows() { return cache_ ? cache_->UnmapIdle() : 0; }

absl::Status Container::Checkpoint() {
  PACKSTORE_RETURN_IF_ERROR(RequireWriter("checkpoint"));
  absl::MutexLock lock(&writer_mu_);
  return index_->Checkpoint();
}

}  // namespace packstore
