// Every write path of the engine against every file-system fault
// (server/cache/fault_injection.h, and server/store/sqlite_fault_vfs.h for
// packs.idx): EIO, ENOSPC, EDQUOT and short writes, injected into each
// call the path makes in turn.
//
// For each path a dry run counts the calls the operation makes per op
// (open, write, sync, rename, link, unlink, truncate, mmap), counting only
// calls on the container's own files. Then, for each op, each of the calls
// chosen by SampleCalls (all of them when an op makes at most
// kAllCallsUpTo; otherwise the first three, the last two and three spread
// between) fails once with each errno, and for writes also short (then
// EIO) and short alone. After each fault:
//   - the call returns the errno's status code (RESOURCE_EXHAUSTED for
//     ENOSPC and EDQUOT, INTERNAL for EIO) with a message that names the
//     container file or packs.idx and the error; or succeeds, only where
//     the engine rightly tolerates the fault (Tolerated) and for a short
//     write alone, which the file layer completes;
//   - every object acknowledged before reads back with its content, and no
//     packed put that failed left an object behind (no index row for bytes
//     not known durable);
//   - the same operation, retried with the fault cleared, succeeds;
//   - Validate is clean, and again after closing and reopening.
// Each case starts from a copy of the same container (a few objects loose
// and packed) as the dry run, so that the Nth call is the same call; the
// test checks every armed fault was reached.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <set>

#include "common/status_util.h"
#include "common/str_cat.h"
#include "gtest/gtest.h"
#include "server/cache/fault_injection.h"
#include "server/store/container.h"
#include "server/store/file_io.h"
#include "server/store/sqlite_fault_vfs.h"
#include "tests/store/test_util.h"

namespace packstore {
namespace {

using ::packstore::testing::RandomBytes;
using ::packstore::testing::Sha;
using ::packstore::testing::TempDir;
using ::packstore::testing::TextBytes;

constexpr FaultOp kAllOps[] = {FaultOp::kOpen,   FaultOp::kWrite,  FaultOp::kSync,
                               FaultOp::kRename, FaultOp::kLink,   FaultOp::kUnlink,
                               FaultOp::kTruncate, FaultOp::kMmap};
constexpr int kErrors[] = {EIO, ENOSPC, EDQUOT};
// Small enough that a batch spans packs (rollover, several fdatasyncs).
constexpr int64_t kPackTarget = 64 << 10;
constexpr uint64_t kAllCallsUpTo = 8;

// Which calls of an op that makes `count` of them are failed: every one
// when there are few; otherwise the first three (nothing written yet, the
// first data), the last two (the commit and what follows it) and three
// spread between (one more turn of a loop already covered).
std::vector<uint64_t> SampleCalls(uint64_t count) {
  std::set<uint64_t> picked;
  if (count <= kAllCallsUpTo) {
    for (uint64_t n = 1; n <= count; ++n) picked.insert(n);
  } else {
    for (uint64_t n : {uint64_t{1}, uint64_t{2}, uint64_t{3}, count / 4, count / 2,
                       3 * count / 4, count - 1, count}) {
      picked.insert(n);
    }
  }
  return {picked.begin(), picked.end()};
}

std::string Describe(const FaultSpec& spec) {
  std::string what = spec.short_write ? "short write" : std::string(FaultOpName(spec.op));
  std::string error = spec.error == 0 ? "nothing" : std::string(strerrorname_np(spec.error));
  return StrCat(what, " #", spec.nth, " then ", error);
}

// A status message that a person can act on: it names the file (or the
// index) and the error.
bool NamesWhatFailed(std::string_view message) {
  bool names_file = false;
  // "pack" covers packs/N, "pack N" and packs.idx.
  for (std::string_view where : {"pack", "loose", "sandbox", "duplicates"}) {
    names_file = names_file || message.find(where) != std::string_view::npos;
  }
  bool names_error = false;
  for (std::string_view error : {"Input/output error", "No space left", "Disk quota exceeded",
                                 "disk I/O error", "database or disk is full",
                                 "unable to open"}) {
    names_error = names_error || message.find(error) != std::string_view::npos;
  }
  return names_file && names_error;
}

// One write path: how to set up each case, run it, and what it may shrug off.
struct Scenario {
  // Unfaulted setup for case `i` (fresh objects each case).
  std::function<void(int i)> prepare = [](int) {};
  // The operation under test for case `i`; run again as the retry. Records
  // what it acknowledged when it succeeds.
  std::function<absl::Status(int i)> run;
  // Checks after a failed run (besides the acknowledged objects).
  std::function<void(int i)> after_failure = [](int) {};
  // Acknowledged objects a failed run may have removed (a delete's).
  std::function<std::set<std::string>()> in_doubt = [] { return std::set<std::string>(); };
  // Unfaulted cleanup after the retry succeeded.
  std::function<void(int i)> cleanup = [](int) {};
  // Faults the operation rightly survives with success.
  std::function<bool(FaultOp op, const std::string& path)> tolerated =
      [](FaultOp op, const std::string& path) {
        // An mmap failure falls back to pread; a pack lock that cannot be
        // removed after a commit is removed by the next append (tested in
        // LockThatCannotBeRemovedIsRetried).
        return op == FaultOp::kMmap ||
               (op == FaultOp::kUnlink && std::string_view(path).ends_with(".lock"));
      };
};

class FaultInjectionTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ASSERT_TRUE(InstallSqliteFaultVfs().ok()); }

  void SetUp() override { Create({}); }
  void TearDown() override { FaultInjector::Disarm(); }

  void Create(InitOptions options) {
    store_.reset();
    options.pack_size_target = kPackTarget;
    std::filesystem::remove_all(dir());
    ASSERT_TRUE(Container::Init(dir(), options).ok());
    Reopen();
  }
  void Reopen() {
    store_.reset();
    auto opened = Container::Open(dir());
    ASSERT_TRUE(opened.ok()) << opened.status();
    store_ = std::move(*opened);
  }
  std::string dir() const { return tmp_.Sub("store"); }

  // The state every case of a matrix starts from: a few objects, loose and
  // packed, acknowledged.
  void SaveBaseline() {
    std::vector<std::string> packed = {TextBytes(501, 4000), RandomBytes(502, 6000),
                                       RandomBytes(503, 100)};
    std::vector<std::string_view> views(packed.begin(), packed.end());
    ASSERT_TRUE(store_->PutPacked(views).ok());
    for (const std::string& p : packed) acked_[Sha(p)] = p;
    for (uint64_t seed : {504, 505}) {
      std::string content = TextBytes(seed, 3000);
      ASSERT_TRUE(Ack(store_->PutLoose(content), content).ok());
    }
    store_.reset();
    std::filesystem::copy(dir(), baseline(), std::filesystem::copy_options::recursive);
    baseline_acked_ = acked_;
    Reopen();
  }
  void RestoreBaseline() {
    store_.reset();
    std::filesystem::remove_all(dir());
    std::filesystem::copy(baseline(), dir(), std::filesystem::copy_options::recursive);
    acked_ = baseline_acked_;
    Reopen();
  }
  std::string baseline() const { return tmp_.Sub("baseline"); }
  // Counted and faulted calls are those on the container's own files.
  std::string filter() const { return dir() + "/"; }

  absl::Status Ack(absl::StatusOr<WrittenObject> written, std::string_view content) {
    if (!written.ok()) return written.status();
    EXPECT_EQ(written->key, Sha(content));
    acked_[written->key] = std::string(content);
    return absl::OkStatus();
  }

  // Every acknowledged object reads back whole and hashes to its key.
  void VerifyAcked(const std::set<std::string>& except = {}) {
    for (const auto& [key, content] : acked_) {
      if (except.contains(key)) continue;
      auto got = store_->Get(key);
      ASSERT_TRUE(got.ok()) << key << ": " << got.status();
      ASSERT_EQ(got->size(), content.size()) << key;
      ASSERT_TRUE(*got == content) << key;
      ASSERT_EQ(Sha(*got), key);
    }
  }

  bool Present(const std::string& key) {
    auto has = store_->Has(key);
    EXPECT_TRUE(has.ok()) << has.status();
    return has.ok() && *has;
  }

  struct MatrixStats {
    uint64_t cases = 0;
    uint64_t failed = 0;
    uint64_t tolerated = 0;
  };

  // Runs `s` against every sampled fault; see the file comment.
  MatrixStats RunMatrix(Scenario& s) {
    MatrixStats stats;
    SaveBaseline();
    if (HasFatalFailure()) return stats;
    int i = 0;
    RestoreBaseline();
    if (HasFatalFailure()) return stats;
    s.prepare(i);
    FaultInjector::StartCounting(filter());
    absl::Status dry = s.run(i);
    FaultInjector::Disarm();
    EXPECT_TRUE(dry.ok()) << dry;
    if (!dry.ok()) return stats;
    std::map<FaultOp, uint64_t> counts;
    for (FaultOp op : kAllOps) counts[op] = FaultInjector::Calls(op);
    s.cleanup(i);

    std::vector<FaultSpec> faults;
    for (FaultOp op : kAllOps) {
      for (uint64_t n : SampleCalls(counts[op])) {
        for (int error : kErrors) {
          faults.push_back({.op = op, .nth = n, .error = error, .path_contains = filter()});
        }
        if (op == FaultOp::kWrite) {
          for (int error : {EIO, 0}) {
            faults.push_back({.op = op, .nth = n, .error = error, .short_write = true,
                              .path_contains = filter()});
          }
        }
      }
    }
    EXPECT_GT(counts[FaultOp::kWrite], 0u);
    EXPECT_GT(counts[FaultOp::kSync], 0u);

    for (const FaultSpec& spec : faults) {
      ++i;
      SCOPED_TRACE(StrCat("case ", i, ": ", Describe(spec)));
      RestoreBaseline();
      if (HasFatalFailure()) return stats;
      s.prepare(i);
      if (HasFatalFailure()) return stats;
      FaultInjector::Arm(spec);
      absl::Status status = s.run(i);
      const uint64_t injected = FaultInjector::Injected();
      const std::string path = FaultInjector::LastFaultPath();
      FaultInjector::Disarm();
      ++stats.cases;
      SCOPED_TRACE(StrCat("fault in ", path, "; status: ", status.ToString()));
      EXPECT_GT(injected, 0u) << "the operation no longer makes the call the dry run counted";

      if (spec.short_write && spec.error == 0) {
        EXPECT_TRUE(status.ok()) << "a short write alone must be completed by a retry";
      } else if (status.ok()) {
        EXPECT_TRUE(injected == 0 || s.tolerated(spec.op, path))
            << "the fault was injected and ignored";
        ++stats.tolerated;
      } else {
        ++stats.failed;
        absl::StatusCode expected = spec.error == EIO ? absl::StatusCode::kInternal
                                                      : absl::StatusCode::kResourceExhausted;
        EXPECT_EQ(status.code(), expected);
        EXPECT_TRUE(NamesWhatFailed(std::string(status.message())));
        s.after_failure(i);
      }
      VerifyAcked(status.ok() ? std::set<std::string>() : s.in_doubt());
      if (HasFatalFailure()) return stats;
      if (!status.ok()) {
        absl::Status retry = s.run(i);
        EXPECT_TRUE(retry.ok()) << "retry after the fault cleared: " << retry;
        if (!retry.ok()) return stats;
      }
      s.cleanup(i);
      VerifyAcked();
      testing::ExpectValid(*store_);
      Reopen();
      if (HasFatalFailure()) return stats;
      testing::ExpectValid(*store_);
      VerifyAcked();
      if (HasFatalFailure()) return stats;
    }
    std::string counted;
    for (const auto& [op, n] : counts) counted += StrCat(" ", FaultOpName(op), "=", n);
    std::cout << "calls per op:" << counted << "; " << stats.cases << " faults: " << stats.failed
              << " failed the call, " << stats.tolerated << " tolerated\n";
    return stats;
  }

  // In memory where there is a tmpfs: the matrices make thousands of
  // fsyncs, which the injector sits in front of anyway.
  TempDir tmp_{::access("/dev/shm", W_OK) == 0 ? "/dev/shm"
                                               : std::filesystem::temp_directory_path().string()};
  std::unique_ptr<Container> store_;
  std::map<std::string, std::string> acked_;
  std::map<std::string, std::string> baseline_acked_;
};

// Content for case `i` whose loose prefix folder does not exist yet, so
// that every case takes the longest path (make the folder, sync loose/).
std::string FreshPrefixContent(const std::string& dir, int i, size_t size) {
  for (uint64_t seed = static_cast<uint64_t>(i) * 1000;; ++seed) {
    std::string content = RandomBytes(seed, size);
    if (!PathExists(dir + "/loose/" + Sha(content).substr(0, 2))) return content;
  }
}

TEST_F(FaultInjectionTest, PutLoose) {
  std::map<int, std::string> contents;
  Scenario s;
  s.prepare = [&](int i) { contents[i] = FreshPrefixContent(dir(), i, 3000); };
  s.run = [&](int i) { return Ack(store_->PutLoose(contents[i]), contents[i]); };
  RunMatrix(s);
}

TEST_F(FaultInjectionTest, PutLooseStreamed) {
  InitOptions options;
  options.loose_prefix_len = 0;  // every case renames into loose/ itself
  Create(options);
  // Larger than the engine's 1 MiB chunk: hashed and written in a pipeline.
  std::string content;
  Scenario s;
  s.prepare = [&](int i) { content = RandomBytes(static_cast<uint64_t>(i), (2 << 20) + 1000); };
  s.run = [&](int) {
    StringSource source(content);
    return Ack(store_->PutLoose(source), content);
  };
  RunMatrix(s);
}

// What the service's group commit calls: one batch, spanning packs, with a
// repeat and an object packed before.
TEST_F(FaultInjectionTest, PutPacked) {
  std::string earlier = TextBytes(99, 2000);
  ASSERT_TRUE(store_->PutPacked({earlier}).ok());
  acked_[Sha(earlier)] = earlier;
  std::vector<std::string> batch;
  Scenario s;
  s.prepare = [&](int i) {
    batch.clear();
    for (int j = 0; j < 24; ++j) batch.push_back(RandomBytes(i * 100 + j, 3000));
    batch.push_back(batch[3]);
    batch.push_back(earlier);
  };
  s.run = [&](int) -> absl::Status {
    std::vector<std::string_view> views(batch.begin(), batch.end());
    auto written = store_->PutPacked(views, CompressMode::kAuto);
    if (!written.ok()) return written.status();
    EXPECT_EQ(written->size(), batch.size());
    for (size_t j = 0; j < batch.size(); ++j) {
      EXPECT_EQ((*written)[j].key, Sha(batch[j]));
      acked_[Sha(batch[j])] = batch[j];
    }
    return absl::OkStatus();
  };
  s.after_failure = [&](int) {
    // None of a failed batch is there: rows follow durable bytes only.
    for (size_t j = 0; j + 1 < batch.size(); ++j) EXPECT_FALSE(Present(Sha(batch[j]))) << j;
  };
  RunMatrix(s);
}

TEST_F(FaultInjectionTest, PutPackedStream) {
  std::string content;
  Scenario s;
  s.prepare = [&](int i) { content = TextBytes(static_cast<uint64_t>(i), (1 << 20) + 300000); };
  s.run = [&](int) {
    StringSource source(content);
    return Ack(store_->PutPackedStream(source, CompressMode::kAuto), content);
  };
  s.after_failure = [&](int) { EXPECT_FALSE(Present(Sha(content))); };
  RunMatrix(s);
}

TEST_F(FaultInjectionTest, PackAllLoose) {
  std::string big;
  Scenario s;
  // The same objects every case: their keys decide the order they are
  // packed in, hence which calls the run makes.
  s.prepare = [&](int) {
    // Compressible small objects (compressed into the packs, spanning two)
    // and one big random one (stored as is, through the pipelined copy).
    for (int j = 0; j < 5; ++j) {
      std::string content = TextBytes(static_cast<uint64_t>(j), 40000);
      ASSERT_TRUE(Ack(store_->PutLoose(content), content).ok());
    }
    big = RandomBytes(7, (1 << 20) + 5000);
    ASSERT_TRUE(Ack(store_->PutLoose(big), big).ok());
  };
  s.run = [&](int) {
    PackOptions options;
    options.compress = CompressMode::kAuto;
    return store_->PackAllLoose(options).status();
  };
  s.cleanup = [&](int) {
    auto info = store_->Stat(Sha(big));
    ASSERT_TRUE(info.ok() && info->packed) << "packed after the retry";
  };
  RunMatrix(s);
}

TEST_F(FaultInjectionTest, Repack) {
  std::vector<std::string> live;
  Scenario s;
  // Eight objects appended to the baseline's pack, four of them deleted: the
  // repack rewrites that pack into a new file.
  s.prepare = [&](int i) {
    std::vector<std::string> objects;
    for (int j = 0; j < 8; ++j) objects.push_back(RandomBytes(i * 10 + j, 9000));
    std::vector<std::string_view> views(objects.begin(), objects.end());
    ASSERT_TRUE(store_->PutPacked(views).ok());
    std::vector<std::string> doomed;
    live.clear();
    for (int j = 0; j < 8; ++j) {
      if (j % 2 == 0) {
        doomed.push_back(Sha(objects[j]));
      } else {
        live.push_back(Sha(objects[j]));
        acked_[Sha(objects[j])] = objects[j];
      }
    }
    ASSERT_TRUE(store_->Delete(doomed).ok());
  };
  s.run = [&](int) { return store_->Repack({}).status(); };
  s.cleanup = [&](int) {
    auto counts = store_->Counts();
    ASSERT_TRUE(counts.ok());
    EXPECT_EQ(counts->hole_bytes, 0u) << "the retry reclaimed the holes";
  };
  RunMatrix(s);
}

TEST_F(FaultInjectionTest, Clean) {
  std::string duplicate_only;
  Scenario s;
  s.prepare = [&](int i) {
    std::vector<std::string> keys;
    for (int j = 0; j < 4; ++j) {
      std::string content = TextBytes(static_cast<uint64_t>(i * 10 + j), 5000);
      ASSERT_TRUE(Ack(store_->PutLoose(content), content).ok());
      keys.push_back(Sha(content));
    }
    PackOptions keep;
    keep.delete_loose = false;
    ASSERT_TRUE(store_->PackAllLoose(keep).ok());  // packed, loose copies left for clean
    // An abandoned sandbox file of ours, a duplicate of an object that
    // exists and a good duplicate of one that does not.
    ASSERT_TRUE(CreateFileAtomically(dir() + "/sandbox", dir() + "/sandbox/ps-" + RandomHex(16),
                                     "abandoned")
                    .ok());
    ASSERT_TRUE(CreateFileAtomically(dir() + "/duplicates",
                                     dir() + "/duplicates/" + keys[0] + "." + RandomHex(16),
                                     acked_[keys[0]])
                    .ok());
    duplicate_only = RandomBytes(static_cast<uint64_t>(i) + 5000, 4000);
    ASSERT_TRUE(CreateFileAtomically(dir() + "/duplicates",
                                     dir() + "/duplicates/" + Sha(duplicate_only) + "." +
                                         RandomHex(16),
                                     duplicate_only)
                    .ok());
  };
  s.run = [&](int) -> absl::Status {
    PACKSTORE_RETURN_IF_ERROR(store_->Clean({}).status());
    acked_[Sha(duplicate_only)] = duplicate_only;
    return absl::OkStatus();
  };
  s.cleanup = [&](int) {
    auto names = ListDir(dir() + "/duplicates");
    ASSERT_TRUE(names.ok());
    EXPECT_TRUE(names->empty()) << "duplicates resolved by the retry";
  };
  // Sandbox files that cannot be opened or removed are left for the next
  // clean: they hold nothing anyone acknowledged.
  Scenario defaults;
  s.tolerated = [&](FaultOp op, const std::string& path) {
    return defaults.tolerated(op, path) ||
           ((op == FaultOp::kOpen || op == FaultOp::kUnlink) &&
            path.find("/sandbox/ps-") != std::string::npos);
  };
  RunMatrix(s);
}

TEST_F(FaultInjectionTest, Delete) {
  std::vector<std::string> doomed;
  Scenario s;
  s.prepare = [&](int i) {
    doomed.clear();
    std::vector<std::string> packed = {RandomBytes(i * 10 + 1, 2000), RandomBytes(i * 10 + 2, 2000),
                                       RandomBytes(i * 10 + 3, 2000)};
    std::vector<std::string_view> views(packed.begin(), packed.end());
    ASSERT_TRUE(store_->PutPacked(views).ok());
    for (const std::string& p : packed) acked_[Sha(p)] = p;
    for (int j = 0; j < 3; ++j) {
      std::string content = TextBytes(static_cast<uint64_t>(i * 10 + j), 3000);
      ASSERT_TRUE(Ack(store_->PutLoose(content), content).ok());
      if (j < 2) doomed.push_back(Sha(content));
    }
    doomed.push_back(Sha(packed[0]));
    doomed.push_back(Sha(packed[1]));
    doomed.push_back(Sha("never stored"));
  };
  s.run = [&](int) -> absl::Status {
    auto existed = store_->Delete(doomed);
    if (!existed.ok()) return existed.status();
    for (const std::string& key : doomed) acked_.erase(key);
    return absl::OkStatus();
  };
  s.in_doubt = [&] { return std::set<std::string>(doomed.begin(), doomed.end()); };
  s.cleanup = [&](int) {
    for (const std::string& key : doomed) EXPECT_FALSE(Present(key));
  };
  RunMatrix(s);
}

TEST_F(FaultInjectionTest, Import) {
  std::unique_ptr<Container> source;
  std::map<std::string, std::string> incoming;
  Scenario s;
  // A fresh source each case, so that each case imports the same shape.
  s.prepare = [&](int i) {
    source.reset();
    std::filesystem::remove_all(tmp_.Sub("source"));
    ASSERT_TRUE(Container::Init(tmp_.Sub("source"), {}).ok());
    auto opened = Container::Open(tmp_.Sub("source"));
    ASSERT_TRUE(opened.ok());
    source = std::move(*opened);
    incoming.clear();
    std::vector<std::string> packed;
    for (int j = 0; j < 3; ++j) {
      std::string loose = TextBytes(static_cast<uint64_t>(i * 10 + j), 3000);
      ASSERT_TRUE(source->PutLoose(loose).ok());
      incoming[Sha(loose)] = loose;
      packed.push_back(RandomBytes(i * 10 + j, 30000));
      incoming[Sha(packed.back())] = packed.back();
    }
    std::vector<std::string_view> views(packed.begin(), packed.end());
    ASSERT_TRUE(source->PutPacked(views).ok());
    // Over the import's 1 MiB batch limit: streamed on its own.
    std::string big = RandomBytes(static_cast<uint64_t>(i) + 7000, (1 << 20) + 1000);
    ASSERT_TRUE(source->PutLoose(big).ok());
    incoming[Sha(big)] = big;
  };
  s.run = [&](int) -> absl::Status {
    auto result = store_->Import(*source);
    if (!result.ok()) return result.status();
    for (const auto& [key, content] : incoming) acked_[key] = content;
    return absl::OkStatus();
  };
  RunMatrix(s);
}

// fsyncgate: after a failed fdatasync the pages it should have written may
// be gone while the page cache says otherwise. The writer must not append
// to that pack again, nor index what it appended.
TEST_F(FaultInjectionTest, FailedSyncRetiresThePack) {
  std::string first = RandomBytes(1, 5000);
  ASSERT_TRUE(store_->PutPacked({first}).ok());
  auto where = store_->Stat(Sha(first));
  ASSERT_TRUE(where.ok() && where->packed);
  const int64_t pack = where->packed->pack_id;
  const std::string pack_path = dir() + "/packs/" + std::to_string(pack);
  auto size_before = PathSize(pack_path);
  ASSERT_TRUE(size_before.ok());

  std::string lost = RandomBytes(2, 5000);
  FaultInjector::Arm({.op = FaultOp::kSync, .nth = 1, .error = EIO, .path_contains = pack_path});
  auto failed = store_->PutPacked({lost});
  EXPECT_EQ(FaultInjector::Injected(), 1u);
  FaultInjector::Disarm();
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kInternal);
  EXPECT_NE(std::string(failed.status().message()).find("sync packs/" + std::to_string(pack)),
            std::string::npos)
      << failed.status();
  EXPECT_FALSE(Present(Sha(lost)));

  // The retry goes to another pack; the failed one is never written again.
  auto size_after_failure = PathSize(pack_path);
  ASSERT_TRUE(store_->PutPacked({lost}).ok());
  auto retried = store_->Stat(Sha(lost));
  ASSERT_TRUE(retried.ok() && retried->packed);
  EXPECT_NE(retried->packed->pack_id, pack);
  for (int j = 0; j < 5; ++j) ASSERT_TRUE(store_->PutPacked({RandomBytes(10 + j, 3000)}).ok());
  EXPECT_EQ(PathSize(pack_path).value(), size_after_failure.value());
  EXPECT_EQ(store_->Get(Sha(first)).value(), first);
  testing::ExpectValid(*store_);
  // A new writer may use the pack again: its tail is now only a hole.
  Reopen();
  testing::ExpectValid(*store_);
  EXPECT_EQ(store_->Get(Sha(lost)).value(), lost);
}

TEST_F(FaultInjectionTest, FailedWriteRetiresThePack) {
  ASSERT_TRUE(store_->PutPacked({RandomBytes(1, 5000)}).ok());
  const std::string pack_path = dir() + "/packs/0";
  FaultInjector::Arm({.op = FaultOp::kWrite,
                      .nth = 1,
                      .error = ENOSPC,
                      .short_write = true,
                      .path_contains = pack_path});
  std::string object = RandomBytes(2, 5000);
  auto failed = store_->PutPacked({object});
  EXPECT_EQ(FaultInjector::Injected(), 2u);  // the short write and its retry
  FaultInjector::Disarm();
  ASSERT_EQ(failed.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(std::string(failed.status().message()).find("append to packs/0"), std::string::npos)
      << failed.status();
  auto size = PathSize(pack_path);
  ASSERT_TRUE(store_->PutPacked({object}).ok());
  EXPECT_EQ(store_->Stat(Sha(object))->packed->pack_id, 1);
  EXPECT_EQ(PathSize(pack_path).value(), size.value());
  testing::ExpectValid(*store_);
}

// A disk that stays full: every packed put fails the same way, none leaves
// a pack file behind, reads go on, and the first put after space returns
// succeeds.
TEST_F(FaultInjectionTest, DiskThatStaysFull) {
  std::string kept = RandomBytes(1, 5000);
  ASSERT_TRUE(store_->PutPacked({kept}).ok());
  auto packs_before = ListDir(dir() + "/packs");
  FaultInjector::Arm({.op = FaultOp::kWrite, .nth = 1, .error = ENOSPC, .times = 0,
                      .path_contains = filter()});
  for (int j = 0; j < 5; ++j) {
    std::vector<std::string> batch = {RandomBytes(100 + j, 50000), RandomBytes(200 + j, 50000)};
    auto failed = store_->PutPacked({batch[0], batch[1]});
    EXPECT_EQ(failed.status().code(), absl::StatusCode::kResourceExhausted) << failed.status();
    auto loose = store_->PutLoose(batch[0]);
    EXPECT_EQ(loose.status().code(), absl::StatusCode::kResourceExhausted) << loose.status();
    EXPECT_EQ(store_->Get(Sha(kept)).value(), kept);
  }
  FaultInjector::Disarm();
  EXPECT_EQ(ListDir(dir() + "/packs")->size(), packs_before->size()) << "no orphan packs";
  ASSERT_TRUE(store_->PutPacked({RandomBytes(300, 50000)}).ok());
  testing::ExpectValid(*store_);
}

TEST_F(FaultInjectionTest, LockThatCannotBeRemovedIsRetried) {
  FaultInjector::Arm({.op = FaultOp::kUnlink, .nth = 1, .error = EIO, .path_contains = ".lock"});
  std::string first = RandomBytes(1, 5000);
  ASSERT_TRUE(store_->PutPacked({first}).ok());  // durable and indexed: the lock is not its business
  EXPECT_EQ(FaultInjector::Injected(), 1u);
  FaultInjector::Disarm();
  EXPECT_TRUE(PathExists(dir() + "/packs/0.lock"));
  std::string second = RandomBytes(2, 5000);
  ASSERT_TRUE(store_->PutPacked({second}).ok());
  EXPECT_EQ(store_->Stat(Sha(second))->packed->pack_id, 0);
  EXPECT_FALSE(PathExists(dir() + "/packs/0.lock"));
  testing::ExpectValid(*store_);
}

TEST_F(FaultInjectionTest, MmapFailureFallsBackToPread) {
  std::vector<std::string> objects;
  for (int j = 0; j < 4; ++j) objects.push_back(RandomBytes(j, 20000));
  std::vector<std::string_view> views(objects.begin(), objects.end());
  ASSERT_TRUE(store_->PutPacked(views).ok());
  Reopen();  // nothing mapped yet
  FaultInjector::Arm({.op = FaultOp::kMmap, .nth = 1, .times = 0, .path_contains = filter()});
  for (const std::string& object : objects) EXPECT_EQ(store_->Get(Sha(object)).value(), object);
  EXPECT_GT(FaultInjector::Injected(), 0u);
  FaultInjector::Disarm();
  EXPECT_GT(store_->CacheStats().mmap_failures, 0u);
  testing::ExpectValid(*store_);
}

// The injector itself: numbering, filters, short writes.
TEST(FaultInjectorTest, FailsTheNthMatchingCallAndCounts) {
  TempDir tmp;
  FaultInjector::Arm({.op = FaultOp::kOpen, .nth = 2, .error = EDQUOT, .path_contains = "/b"});
  EXPECT_TRUE(OpenFile(tmp.Sub("a"), O_WRONLY | O_CREAT).ok());
  EXPECT_TRUE(OpenFile(tmp.Sub("b1"), O_WRONLY | O_CREAT).ok());
  auto failed = OpenFile(tmp.Sub("b2"), O_WRONLY | O_CREAT);
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(OpenFile(tmp.Sub("b3"), O_WRONLY | O_CREAT).ok());
  EXPECT_EQ(FaultInjector::Calls(FaultOp::kOpen), 3u);
  EXPECT_EQ(FaultInjector::LastFaultPath(), tmp.Sub("b2"));
  FaultInjector::Disarm();

  auto fd = OpenFile(tmp.Sub("short"), O_RDWR | O_CREAT);
  ASSERT_TRUE(fd.ok());
  FaultInjector::Arm(
      {.op = FaultOp::kWrite, .nth = 1, .error = 0, .short_write = true, .path_contains = ""});
  std::string data = RandomBytes(3, 10001);
  EXPECT_TRUE(PwriteAll(fd->get(), data, 0).ok());
  EXPECT_EQ(FaultInjector::Calls(FaultOp::kWrite), 2u);  // half, then the rest
  FaultInjector::Disarm();
  std::string back(data.size(), '\0');
  ASSERT_TRUE(PreadExact(fd->get(), back.data(), back.size(), 0).ok());
  EXPECT_EQ(back, data);
}

}  // namespace
}  // namespace packstore
