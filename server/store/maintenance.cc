// Container maintenance: pack, clean, delete, repack, import, validate and
// counts. Each mutation runs under the writer lock; see container.h.
#include <sys/stat.h>

#include <algorithm>
#include <map>
#include <set>

#include "common/str_cat.h"
#include "common/hasher.h"
#include "common/status_util.h"
#include "server/store/container.h"
#include "server/store/container_internal.h"
#include "server/store/object_reader.h"
#include "server/store/pack_files.h"
#include "server/store/stored_file.h"

namespace packstore {

using internal::kChunk;

namespace {

// Commit the rows of a pack-all-loose run at least this often, so a long
// run keeps its transactions and its memory bounded.
constexpr size_t kMaxPendingRows = 10000;

void Report(const ProgressFn& progress, std::string_view phase, uint64_t done, uint64_t total) {
  if (progress) progress(Progress{phase, done, total});
}

// Reads a source to its end, hashing it. Returns the hex digest.
absl::StatusOr<std::string> HashSource(HashType type, ObjectSource& source, uint64_t* size) {
  Hasher hasher(type);
  auto buf = std::make_unique_for_overwrite<char[]>(kChunk);
  *size = 0;
  while (true) {
    PACKSTORE_ASSIGN_OR_RETURN(size_t n, source.Read(buf.get(), kChunk));
    if (n == 0) break;
    hasher.Update(buf.get(), n);
    *size += n;
  }
  return hasher.HexDigest();
}

}  // namespace

std::string_view ValidateIssueKindName(ValidateIssue::Kind kind) {
  switch (kind) {
    case ValidateIssue::Kind::kCorruptLoose: return "corrupt_loose";
    case ValidateIssue::Kind::kCorruptPacked: return "corrupt_packed";
    case ValidateIssue::Kind::kSizeMismatch: return "size_mismatch";
    case ValidateIssue::Kind::kOverlap: return "overlap";
    case ValidateIssue::Kind::kPastEndOfPack: return "past_end_of_pack";
    case ValidateIssue::Kind::kMissingPack: return "missing_pack";
    case ValidateIssue::Kind::kOrphanPack: return "orphan_pack";
    case ValidateIssue::Kind::kStrayFile: return "stray_file";
    case ValidateIssue::Kind::kCorruptIndex: return "corrupt_index";
  }
  return "unknown";
}

absl::StatusOr<PackResult> Container::PackAllLoose(const PackOptions& options,
                                                   const ProgressFn& progress) {
  PACKSTORE_RETURN_IF_ERROR(RequireWriter("pack"));
  absl::MutexLock lock(&writer_mu_);
  std::vector<std::string> keys;
  PACKSTORE_RETURN_IF_ERROR(loose_.ForEach(
      [&](const std::string& key) {
        keys.push_back(key);
        return absl::OkStatus();
      },
      [](const std::string&) {}));
  std::sort(keys.begin(), keys.end());
  PACKSTORE_ASSIGN_OR_RETURN(auto existing, index_->LookupMany(keys));

  PackResult result;
  std::vector<IndexRow> pending;
  // Makes the pending objects durable and visible, then drops their loose
  // copies: pack data synced, then one transaction, then the unlinks.
  auto flush = [&]() -> absl::Status {
    const std::set<int64_t> synced = pack_writer_->touched();
    PACKSTORE_RETURN_IF_ERROR(pack_writer_->Commit());
    if (pending.empty()) return absl::OkStatus();
    PACKSTORE_RETURN_IF_ERROR(
        CommitRows(synced, [&] { return index_->InsertRows(pending).status(); }));
    if (options.delete_loose) {
      for (const IndexRow& row : pending) {
        PACKSTORE_RETURN_IF_ERROR(loose_.Delete(row.key));
        ++result.loose_deleted;
      }
    }
    pending.clear();
    return absl::OkStatus();
  };

  uint64_t done = 0;
  int64_t pending_pack = -1;
  absl::Status status;
  for (size_t i = 0; i < keys.size() && status.ok(); ++i) {
    Report(progress, "pack", done++, keys.size());
    const std::string& key = keys[i];
    if (existing[i]) {
      ++result.already_packed;
      if (options.delete_loose) {
        status = loose_.Delete(key);
        if (status.ok()) ++result.loose_deleted;
      }
      continue;
    }
    auto fd = loose_.Open(key);
    if (absl::IsNotFound(fd.status())) continue;  // deleted meanwhile
    if (!fd.ok()) {
      status = fd.status();
      break;
    }
    auto size = FileSize(fd->get());
    if (!size.ok()) {
      status = size.status();
      break;
    }
    auto compress = internal::ShouldCompressFile(options.compress, fd->get(), *size);
    if (!compress.ok()) {
      status = compress.status();
      break;
    }
    FdSource source(fd->get());
    auto row = AppendObject(source, *compress);
    if (!row.ok()) {
      status = row.status();
      break;
    }
    if (options.validate && row->key != key) {
      // The bytes just appended stay as a hole; the loose file is kept for
      // a person to look at.
      result.corrupt.push_back(key);
      continue;
    }
    // One transaction per pack, as disk-objectstore does. The object just
    // appended is synced with them but committed with its own pack.
    if (!pending.empty() &&
        (row->location.pack_id != pending_pack || pending.size() >= kMaxPendingRows)) {
      status = flush();
    }
    pending_pack = row->location.pack_id;
    result.bytes += row->location.size;
    ++result.packed;
    row->key = key;
    pending.push_back(std::move(*row));
  }
  if (status.ok()) status = flush();
  if (!status.ok()) {
    AbandonAppends();
    return status;
  }
  Report(progress, "pack", done, keys.size());
  return result;
}

absl::StatusOr<CleanResult> Container::Clean(const CleanOptions& options,
                                             const ProgressFn& progress) {
  PACKSTORE_RETURN_IF_ERROR(RequireWriter("clean"));
  absl::MutexLock lock(&writer_mu_);
  CleanResult result;
  std::vector<std::string> keys;
  PACKSTORE_RETURN_IF_ERROR(loose_.ForEach(
      [&](const std::string& key) {
        keys.push_back(key);
        return absl::OkStatus();
      },
      [](const std::string&) {}));
  PACKSTORE_ASSIGN_OR_RETURN(auto packed, index_->LookupMany(keys));
  for (size_t i = 0; i < keys.size(); ++i) {
    Report(progress, "clean loose", i, keys.size());
    if (!packed[i]) continue;
    PACKSTORE_RETURN_IF_ERROR(loose_.Delete(keys[i]));
    ++result.loose_deleted;
  }
  PACKSTORE_ASSIGN_OR_RETURN(result.sandbox_deleted,
                             loose_.CleanSandbox(options.foreign_sandbox_age_seconds));

  // duplicates/<key>.<hex>: copies disk-objectstore set aside after a rename
  // race. A copy of an object that exists is dropped; a good copy of a
  // missing object becomes the object; a bad copy stays for inspection.
  std::string duplicates = JoinPath(dir_, "duplicates");
  PACKSTORE_ASSIGN_OR_RETURN(std::vector<std::string> names, ListDir(duplicates));
  for (const std::string& name : names) {
    std::string key = name.substr(0, name.find('.'));
    std::string path = JoinPath(duplicates, name);
    if (!CheckKey(key).ok()) continue;
    PACKSTORE_ASSIGN_OR_RETURN(bool present, Has(key));
    if (!present) {
      PACKSTORE_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDONLY));
      FdSource source(fd.get());
      uint64_t size = 0;
      PACKSTORE_ASSIGN_OR_RETURN(std::string actual, HashSource(config_.hash_type, source, &size));
      if (actual != key) continue;
      PACKSTORE_ASSIGN_OR_RETURN(fd, OpenFile(path, O_RDONLY));
      FdSource again(fd.get());
      PACKSTORE_RETURN_IF_ERROR(loose_.Write(again).status());
    }
    PACKSTORE_RETURN_IF_ERROR(Unlink(path));
    ++result.duplicates_resolved;
  }
  if (options.vacuum) {
    Report(progress, "vacuum", 0, 0);
    PACKSTORE_RETURN_IF_ERROR(index_->Vacuum());
  }
  PACKSTORE_RETURN_IF_ERROR(index_->Checkpoint());
  return result;
}

absl::StatusOr<uint64_t> Container::Delete(const std::vector<std::string>& keys) {
  PACKSTORE_RETURN_IF_ERROR(RequireWriter("delete"));
  for (const std::string& key : keys) PACKSTORE_RETURN_IF_ERROR(CheckKey(key));
  absl::MutexLock lock(&writer_mu_);
  std::set<std::string> existed;
  PACKSTORE_ASSIGN_OR_RETURN(auto packed, index_->LookupMany(keys));
  for (size_t i = 0; i < keys.size(); ++i) {
    if (packed[i] || loose_.Exists(keys[i])) existed.insert(keys[i]);
  }
  PACKSTORE_RETURN_IF_ERROR(index_->DeleteRows(keys).status());
  for (const std::string& key : keys) PACKSTORE_RETURN_IF_ERROR(loose_.Delete(key));
  return existed.size();
}

absl::StatusOr<RepackResult> Container::Repack(const RepackOptions& options,
                                               const ProgressFn& progress) {
  PACKSTORE_RETURN_IF_ERROR(RequireWriter("repack"));
  absl::MutexLock lock(&writer_mu_);
  PACKSTORE_ASSIGN_OR_RETURN(PackListing listing, packs_->List());
  pack_writer_->Reset();
  RepackResult result;
  for (size_t p = 0; p < listing.ids.size(); ++p) {
    int64_t id = listing.ids[p];
    Report(progress, "repack", p, listing.ids.size());
    if (id < 0) continue;
    std::vector<IndexRow> rows;
    PACKSTORE_RETURN_IF_ERROR(index_->ForEachRow(id, [&](const IndexRow& row) {
      rows.push_back(row);
      return absl::OkStatus();
    }));
    absl::StatusOr<uint64_t> listed_size = PathSize(packs_->PathFor(id));
    // Gone since the listing: a pack without rows that an earlier failed
    // commit left, removed by this repack's first commit (CommitRows).
    if (absl::IsNotFound(listed_size.status()) && rows.empty()) continue;
    PACKSTORE_ASSIGN_OR_RETURN(uint64_t file_size, std::move(listed_size));
    if (rows.empty()) {
      PACKSTORE_RETURN_IF_ERROR(packs_->Remove(id));
      ++result.packs_removed;
      result.bytes_reclaimed += file_size;
      continue;
    }
    uint64_t live = 0;
    for (const IndexRow& row : rows) live += row.location.length;
    if (live == file_size && !options.compress) continue;

    std::shared_ptr<const StoredFile> old;
    {
      absl::ReaderMutexLock layout(&packs_->layout_mu());
      PACKSTORE_ASSIGN_OR_RETURN(old, packs_->Get(id));
    }
    pack_writer_->UseFreshPack();
    std::vector<IndexRow> moved;
    absl::Status status;
    for (const IndexRow& row : rows) {
      const PackedLocation& loc = row.location;
      bool compress = loc.compressed;
      ObjectReader reader(row.key, old, loc.offset, loc.length, loc.size, loc.compressed,
                          config_.codec.kind);
      if (options.compress) {
        if (*options.compress == CompressMode::kAuto) {
          // Sample the decoded content, as for any other object.
          std::vector<uint64_t> offsets = SampleOffsets(loc.size);
          std::string sample;
          for (uint64_t offset : offsets) {
            size_t piece = offsets.size() == 1 ? loc.size : kSamplePieceSize;
            std::string buf(piece, '\0');
            if (status.ok()) status = reader.Seek(offset);
            if (status.ok()) status = reader.Read(buf.data(), piece).status();
            sample += buf;
          }
          if (status.ok()) status = reader.Seek(0);
          compress = SampleIsCompressible(sample);
        } else {
          compress = *options.compress == CompressMode::kYes;
        }
      }
      if (!status.ok()) break;
      IndexRow copy;
      if (compress == loc.compressed) {
        // Same encoding: copy the stored bytes as they are.
        ObjectReader raw(row.key, old, loc.offset, loc.length, loc.length, false,
                         config_.codec.kind);
        internal::ReaderSource source(raw);
        auto pos = pack_writer_->BeginObject();
        if (!pos.ok()) {
          status = pos.status();
          break;
        }
        auto buf = std::make_unique_for_overwrite<char[]>(kChunk);
        while (status.ok()) {
          auto n = source.Read(buf.get(), kChunk);
          if (!n.ok()) status = n.status();
          if (!status.ok() || *n == 0) break;
          status = pack_writer_->Write(std::string_view(buf.get(), *n));
        }
        copy = IndexRow{row.key, PackedLocation{pos->pack_id, pos->offset,
                                                pack_writer_->EndObject(), loc.size,
                                                loc.compressed}};
      } else {
        internal::ReaderSource source(reader);
        auto appended = AppendObject(source, compress);
        if (!appended.ok()) {
          status = appended.status();
          break;
        }
        if (appended->key != row.key) {
          status = absl::DataLossError(StrCat(
              "repack stopped: packed object ", row.key, " in pack ", id,
              " is corrupt (its content hashes to ", appended->key, ")"));
          break;
        }
        copy = std::move(*appended);
      }
      if (!status.ok()) break;
      moved.push_back(std::move(copy));
    }
    const std::set<int64_t> synced = pack_writer_->touched();
    if (status.ok()) status = pack_writer_->Commit();
    if (!status.ok()) {
      AbandonAppends();
      return status;
    }
    PACKSTORE_RETURN_IF_ERROR(CommitRows(synced, [&] { return index_->MoveRows(moved); }));
    PACKSTORE_RETURN_IF_ERROR(packs_->Remove(id));
    uint64_t new_size = 0;
    for (const IndexRow& row : moved) new_size += row.location.length;
    ++result.packs_rewritten;
    result.objects_moved += moved.size();
    if (file_size > new_size) result.bytes_reclaimed += file_size - new_size;
  }
  pack_writer_->Reset();
  Report(progress, "repack", listing.ids.size(), listing.ids.size());
  return result;
}

absl::StatusOr<ImportResult> Container::Import(Container& source, const ProgressFn& progress) {
  PACKSTORE_RETURN_IF_ERROR(RequireWriter("import"));
  if (source.config().hash_type != config_.hash_type) {
    return absl::InvalidArgumentError(StrCat(
        "cannot import from a ", HashTypeName(source.config().hash_type),
        " container into a ", HashTypeName(config_.hash_type), " one: keys would differ"));
  }
  std::vector<std::string> keys;
  PACKSTORE_RETURN_IF_ERROR(source.ListKeys("", [&](std::string_view key) {
    keys.emplace_back(key);
    return true;
  }));
  ImportResult result;
  // Small objects travel in batches (one fdatasync and transaction each);
  // big ones stream one by one.
  constexpr uint64_t kSmall = 1 << 20;
  constexpr uint64_t kBatchBytes = 64 << 20;
  std::vector<std::string> batch;
  std::vector<std::string> batch_keys;
  uint64_t batch_bytes = 0;
  auto check = [](const std::string& expected, const std::string& actual) -> absl::Status {
    if (expected == actual) return absl::OkStatus();
    return absl::DataLossError(StrCat("source object ", expected,
                                            " is corrupt: its content hashes to ", actual));
  };
  auto flush = [&]() -> absl::Status {
    if (batch.empty()) return absl::OkStatus();
    std::vector<std::string_view> views(batch.begin(), batch.end());
    PACKSTORE_ASSIGN_OR_RETURN(auto written, PutPacked(views, CompressMode::kNo));
    for (size_t i = 0; i < written.size(); ++i) {
      PACKSTORE_RETURN_IF_ERROR(check(batch_keys[i], written[i].key));
    }
    batch.clear();
    batch_keys.clear();
    batch_bytes = 0;
    return absl::OkStatus();
  };
  for (size_t i = 0; i < keys.size(); ++i) {
    Report(progress, "import", i, keys.size());
    PACKSTORE_ASSIGN_OR_RETURN(bool present, Has(keys[i]));
    if (present) {
      ++result.already_present;
      continue;
    }
    auto reader = source.OpenObject(keys[i]);
    if (absl::IsNotFound(reader.status())) continue;  // deleted meanwhile
    if (!reader.ok()) return reader.status();
    result.bytes += (*reader)->size();
    ++result.imported;
    if ((*reader)->size() <= kSmall) {
      PACKSTORE_ASSIGN_OR_RETURN(std::string content, (*reader)->ReadRest());
      batch_bytes += content.size();
      batch.push_back(std::move(content));
      batch_keys.push_back(keys[i]);
      if (batch_bytes >= kBatchBytes) PACKSTORE_RETURN_IF_ERROR(flush());
      continue;
    }
    internal::ReaderSource content(**reader);
    PACKSTORE_ASSIGN_OR_RETURN(WrittenObject written, PutPackedStream(content, CompressMode::kNo));
    PACKSTORE_RETURN_IF_ERROR(check(keys[i], written.key));
  }
  PACKSTORE_RETURN_IF_ERROR(flush());
  Report(progress, "import", keys.size(), keys.size());
  return result;
}

absl::Status Container::ValidatePack(int64_t id, bool has_lock_file, ValidateReport& report,
                                     const ProgressFn& progress, uint64_t total) {
  std::shared_ptr<const StoredFile> file;
  uint64_t file_size = 0;
  std::vector<IndexRow> rows;
  {
    // The rows and the file are taken together, so a concurrent repack
    // cannot pair them wrongly.
    absl::ReaderMutexLock layout(&packs_->layout_mu());
    PACKSTORE_RETURN_IF_ERROR(index_->ForEachRow(id, [&](const IndexRow& row) {
      rows.push_back(row);
      return absl::OkStatus();
    }));
    if (rows.empty()) {
      if (!has_lock_file && PathExists(packs_->PathFor(id))) {
        report.issues.push_back({ValidateIssue::Kind::kOrphanPack, StrCat("packs/", id),
                                 "no index row points into this pack file"});
      }
      return absl::OkStatus();
    }
    auto got = packs_->Get(id);
    if (!got.ok()) {
      report.issues.push_back({ValidateIssue::Kind::kMissingPack, StrCat("packs/", id),
                               StrCat(rows.size(), " objects point into a missing file")});
      return absl::OkStatus();
    }
    file = std::move(*got);
    PACKSTORE_ASSIGN_OR_RETURN(file_size, PathSize(packs_->PathFor(id)));
  }
  uint64_t previous_end = 0;
  std::string previous_key;
  for (const IndexRow& row : rows) {
    const PackedLocation& loc = row.location;
    Report(progress, "validate packed", report.loose_checked + report.packed_checked, total);
    ++report.packed_checked;
    if (loc.offset < previous_end) {
      report.issues.push_back({ValidateIssue::Kind::kOverlap, row.key,
                               StrCat("overlaps ", previous_key, " in pack ", id)});
    }
    if (loc.offset + loc.length > previous_end) {
      previous_end = loc.offset + loc.length;
      previous_key = row.key;
    }
    if (loc.offset + loc.length > file_size) {
      report.issues.push_back({ValidateIssue::Kind::kPastEndOfPack, row.key,
                               StrCat("ends at byte ", loc.offset + loc.length, " of pack ",
                                            id, ", which has ", file_size)});
      continue;
    }
    if (!loc.compressed && loc.length != loc.size) {
      report.issues.push_back({ValidateIssue::Kind::kSizeMismatch, row.key,
                               StrCat("uncompressed but length ", loc.length,
                                            " differs from size ", loc.size)});
      continue;
    }
    ObjectReader reader(row.key, file, loc.offset, loc.length, loc.size, loc.compressed,
                        config_.codec.kind);
    internal::ReaderSource source(reader);
    uint64_t size = 0;
    auto actual = HashSource(config_.hash_type, source, &size);
    if (!actual.ok()) {
      report.issues.push_back(
          {ValidateIssue::Kind::kCorruptPacked, row.key, std::string(actual.status().message())});
    } else if (*actual != row.key) {
      report.issues.push_back({ValidateIssue::Kind::kCorruptPacked, row.key,
                               StrCat("content in pack ", id, " hashes to ", *actual)});
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ValidateReport> Container::Validate(const ProgressFn& progress) {
  ValidateReport report;
  std::vector<std::string> loose_keys;
  PACKSTORE_RETURN_IF_ERROR(loose_.ForEach(
      [&](const std::string& key) {
        loose_keys.push_back(key);
        return absl::OkStatus();
      },
      [&](const std::string& path) {
        report.issues.push_back({ValidateIssue::Kind::kStrayFile, path,
                                 "not an object file name for this container"});
      }));
  // The index first: the pack checks below trust its rows and would only
  // fail on a damaged file, hiding the loose objects' results.
  PACKSTORE_ASSIGN_OR_RETURN(std::vector<std::string> index_problems, index_->CheckIntegrity());
  if (!index_problems.empty()) {
    const size_t n = index_problems.size();
    std::string detail = StrCat("SQLite's check found ", n, n == 1 ? " problem" : " problems",
                                " (the first: ", index_problems.front(),
                                "); its rows cannot be trusted, so no pack was checked");
    report.issues.push_back({ValidateIssue::Kind::kCorruptIndex, "packs.idx", std::move(detail)});
  }
  uint64_t total = loose_keys.size();
  if (index_problems.empty()) {
    PACKSTORE_ASSIGN_OR_RETURN(IndexTotals totals, index_->Totals());
    total += totals.count;
  }
  for (const std::string& key : loose_keys) {
    Report(progress, "validate loose", report.loose_checked, total);
    auto fd = loose_.Open(key);
    if (absl::IsNotFound(fd.status())) continue;  // packed and cleaned meanwhile
    if (!fd.ok()) return fd.status();
    ++report.loose_checked;
    FdSource source(fd->get());
    uint64_t size = 0;
    PACKSTORE_ASSIGN_OR_RETURN(std::string actual, HashSource(config_.hash_type, source, &size));
    if (actual != key) {
      report.issues.push_back({ValidateIssue::Kind::kCorruptLoose, key,
                               StrCat("content hashes to ", actual)});
    }
  }
  if (!index_problems.empty()) {
    Report(progress, "validate", total, total);
    return report;
  }

  PACKSTORE_ASSIGN_OR_RETURN(PackListing listing, packs_->List());
  std::set<int64_t> locked;
  for (const std::string& lock : listing.locks) {
    locked.insert(*ParsePackName(std::string_view(lock).substr(0, lock.size() - 5)));
  }
  std::set<int64_t> ids(listing.ids.begin(), listing.ids.end());
  PACKSTORE_ASSIGN_OR_RETURN(auto lengths, index_->LengthPerPack());
  for (const auto& [id, length] : lengths) ids.insert(id);
  for (int64_t id : ids) {
    PACKSTORE_RETURN_IF_ERROR(ValidatePack(id, locked.contains(id), report, progress, total));
  }
  for (const std::string& stray : listing.strays) {
    report.issues.push_back({ValidateIssue::Kind::kStrayFile, JoinPath("packs", stray),
                             "not a pack file name"});
  }
  Report(progress, "validate", total, total);
  return report;
}

absl::StatusOr<StoreCounts> Container::Counts() {
  StoreCounts counts;
  PACKSTORE_ASSIGN_OR_RETURN(IndexTotals totals, index_->Totals());
  counts.packed_objects = totals.count;
  counts.packed_bytes = totals.total_size;
  counts.packed_stored_bytes = totals.total_length;
  PACKSTORE_ASSIGN_OR_RETURN(PackListing listing, packs_->List());
  for (int64_t id : listing.ids) {
    auto size = PathSize(packs_->PathFor(id));
    if (!size.ok()) continue;  // removed by a repack meanwhile
    ++counts.pack_files;
    counts.pack_file_bytes += *size;
  }
  counts.hole_bytes = counts.pack_file_bytes > counts.packed_stored_bytes
                          ? counts.pack_file_bytes - counts.packed_stored_bytes
                          : 0;
  PACKSTORE_RETURN_IF_ERROR(loose_.ForEach(
      [&](const std::string& key) {
        auto size = loose_.Size(key);
        if (size.ok()) {
          ++counts.loose_objects;
          counts.loose_bytes += *size;
        }
        return absl::OkStatus();
      },
      [](const std::string&) {}));
  for (const char* name : {"packs.idx", "packs.idx-wal", "packs.idx-shm"}) {
    auto size = PathSize(JoinPath(dir_, name));
    if (size.ok()) counts.index_bytes += *size;
  }
  return counts;
}

}  // namespace packstore
