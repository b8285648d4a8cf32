// Concurrency: threads and processes writing loose objects and reading
// everything while another packs and cleans: no error, no wrong byte.
//
// Every object's content is regenerated from a small record (Spec), so a
// reader anywhere can check every byte it gets.
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "common/hasher.h"
#include "common/status_util.h"
#include "common/str_cat.h"
#include "gtest/gtest.h"
#include "server/store/container.h"
#include "server/store/file_io.h"
#include "server/store/object_reader.h"
#include "tests/store/test_util.h"

namespace packstore {
namespace {

using ::packstore::testing::ExpectValid;
using ::packstore::testing::RandomBytes;
using ::packstore::testing::TempDir;
using ::packstore::testing::TextBytes;
using Clock = std::chrono::steady_clock;

using ::packstore::testing::Content;
using ::packstore::testing::Spec;
using ::packstore::testing::SpecText;

struct Entry {
  std::string key;
  Spec spec;
};

// "<key> <t|r> <seed> <size>", as children and the parent exchange them.
std::string EntryLine(const Entry& entry) {
  return StrCat(entry.key, " ", SpecText(entry.spec), "\n");
}

bool ParseEntry(const std::string& line, Entry& entry) {
  std::istringstream in(line);
  std::string kind;
  in >> entry.key >> kind >> entry.spec.seed >> entry.spec.size;
  entry.spec.text = kind == "t";
  return !in.fail() && entry.key.size() == 64 && (kind == "t" || kind == "r");
}

CompressMode AnyCompressMode(std::mt19937_64& rng) {
  static constexpr CompressMode kModes[] = {CompressMode::kNo, CompressMode::kYes,
                                            CompressMode::kAuto};
  return kModes[rng() % 3];
}

// Checks what a read returned against the object's spec; returns an error
// describing the difference.
absl::Status CheckBytes(const Entry& entry, const absl::StatusOr<std::string_view>& got,
                        uint64_t offset = 0, std::optional<uint64_t> length = std::nullopt) {
  if (!got.ok()) {
    return absl::Status(
        got.status().code(),
        StrCat("reading ", entry.key, " (", SpecText(entry.spec), "): ", got.status().ToString()));
  }
  std::string content = Content(entry.spec);
  std::string_view expected = std::string_view(content).substr(offset);
  if (length) expected = expected.substr(0, *length);
  if (*got != expected) {
    return absl::DataLossError(StrCat("object ", entry.key, " (", SpecText(entry.spec), ") bytes [",
                                      offset, ", +", expected.size(),
                                      ") read back wrong: ", got->size(), " bytes"));
  }
  return absl::OkStatus();
}

// One random read of `entries` in every way the container offers: whole,
// a range, through a reader that seeks, and many at once.
absl::Status ReadAndCheck(Container& c, const std::vector<Entry>& entries, std::mt19937_64& rng) {
  if (entries.empty()) return absl::OkStatus();
  const Entry& one = entries[rng() % entries.size()];
  switch (rng() % 4) {
    case 0: {
      auto got = c.Get(one.key);
      if (!got.ok()) return CheckBytes(one, got.status());
      return CheckBytes(one, std::string_view(*got));
    }
    case 1: {
      uint64_t offset = rng() % (one.spec.size + 1);
      uint64_t length = rng() % (one.spec.size - offset + 1);
      auto got = c.GetRange(one.key, ByteRange{offset, length});
      if (!got.ok()) return CheckBytes(one, got.status());
      return CheckBytes(one, std::string_view(*got), offset, length);
    }
    case 2: {
      auto reader = c.OpenObject(one.key);
      if (!reader.ok()) return CheckBytes(one, reader.status());
      if ((*reader)->size() != one.spec.size) {
        return absl::DataLossError(
            StrCat("object ", one.key, " has size ", (*reader)->size(), ", not ", one.spec.size));
      }
      uint64_t offset = rng() % (one.spec.size + 1);
      PACKSTORE_RETURN_IF_ERROR((*reader)->Seek(offset));
      auto rest = (*reader)->ReadRest();
      if (!rest.ok()) return CheckBytes(one, rest.status());
      return CheckBytes(one, std::string_view(*rest), offset);
    }
    default: {
      std::map<std::string, const Entry*> wanted;
      std::vector<std::string> keys;
      for (size_t n = 1 + rng() % 16; n > 0; --n) {
        const Entry& e = entries[rng() % entries.size()];
        wanted[e.key] = &e;
        keys.push_back(e.key);
      }
      std::set<std::string> delivered;
      absl::Status first_error;
      PACKSTORE_RETURN_IF_ERROR(c.GetMany(
          keys, [&](std::string_view key, const absl::StatusOr<std::string_view>& content) {
            delivered.emplace(key);
            absl::Status checked = CheckBytes(*wanted.at(std::string(key)), content);
            if (first_error.ok()) first_error = checked;
            return absl::OkStatus();
          }));
      PACKSTORE_RETURN_IF_ERROR(first_error);
      if (delivered.size() != wanted.size()) {
        return absl::InternalError(StrCat("GetMany delivered ", delivered.size(), " of ",
                                          wanted.size(), " distinct keys"));
      }
      return absl::OkStatus();
    }
  }
}

// Objects acknowledged so far, shared by the threads of one test.
class Registry {
 public:
  void Add(const std::vector<Entry>& entries) {
    absl::MutexLock lock(&mu_);
    entries_.insert(entries_.end(), entries.begin(), entries.end());
  }
  std::vector<Entry> Snapshot() {
    absl::MutexLock lock(&mu_);
    return entries_;
  }

 private:
  absl::Mutex mu_;
  std::vector<Entry> entries_ ABSL_GUARDED_BY(mu_);
};

// Failures from worker threads, reported (a few, not thousands) on the
// test's thread.
class Failures {
 public:
  void Add(std::string_view who, const absl::Status& status) {
    if (status.ok()) return;
    absl::MutexLock lock(&mu_);
    ++count_;
    if (messages_.size() < 10) messages_.push_back(StrCat(who, ": ", status.ToString()));
  }
  void Report() {
    absl::MutexLock lock(&mu_);
    for (const std::string& m : messages_) ADD_FAILURE() << m;
    EXPECT_EQ(count_, 0) << "failures in worker threads (first ones above)";
  }

 private:
  absl::Mutex mu_;
  int count_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::string> messages_ ABSL_GUARDED_BY(mu_);
};


// Every entry reads back whole and exact.
void ExpectAllRead(Container& c, const std::vector<Entry>& entries) {
  std::map<std::string, const Entry*> by_key;
  for (const Entry& e : entries) by_key[e.key] = &e;
  std::vector<std::string> keys;
  for (const auto& [key, entry] : by_key) keys.push_back(key);
  size_t delivered = 0;
  PS_ASSERT_OK(
      c.GetMany(keys, [&](std::string_view key, const absl::StatusOr<std::string_view>& content) {
        ++delivered;
        absl::Status checked = CheckBytes(*by_key.at(std::string(key)), content);
        EXPECT_TRUE(checked.ok()) << checked;
        return absl::OkStatus();
      }));
  EXPECT_EQ(delivered, keys.size());
}

// The maintenance a writer runs while others write and read: objects put
// in packs and deleted again (so packs get holes and repack has work),
// pack, clean, repack. Returns packs rewritten by repack.
absl::StatusOr<uint64_t> MaintenanceRound(Container& c, std::mt19937_64& rng,
                                          uint64_t& next_doomed_seed) {
  std::vector<std::string> doomed;
  for (int i = 0; i < 4; ++i) doomed.push_back(RandomBytes(next_doomed_seed++, 1 + rng() % 20000));
  std::vector<std::string_view> views(doomed.begin(), doomed.end());
  PACKSTORE_ASSIGN_OR_RETURN(auto written, c.PutPacked(views, AnyCompressMode(rng)));
  std::vector<std::string> keys;
  for (const WrittenObject& w : written) keys.push_back(w.key);
  PACKSTORE_ASSIGN_OR_RETURN(uint64_t deleted, c.Delete(keys));
  if (deleted != keys.size()) {
    return absl::InternalError(StrCat("deleted ", deleted, " of ", keys.size()));
  }
  PackOptions pack;
  pack.compress = AnyCompressMode(rng);
  pack.delete_loose = rng() % 2 == 0;
  PACKSTORE_ASSIGN_OR_RETURN(PackResult packed, c.PackAllLoose(pack));
  if (!packed.corrupt.empty()) {
    return absl::DataLossError("loose object corrupt while packing: " + packed.corrupt[0]);
  }
  CleanOptions clean;
  clean.vacuum = rng() % 4 == 0;
  PACKSTORE_RETURN_IF_ERROR(c.Clean(clean).status());
  RepackOptions repack;
  if (rng() % 8 == 0) repack.compress = AnyCompressMode(rng);
  PACKSTORE_ASSIGN_OR_RETURN(RepackResult repacked, c.Repack(repack));
  return repacked.packs_rewritten;
}

TEST(ConcurrencyTest, ThreadsWriteAndReadWhileAnotherPacksCleansAndRepacks) {
  TempDir tmp;
  const std::string dir = tmp.Sub("c");
  InitOptions options;
  options.pack_size_target = 256 << 10;
  PS_ASSERT_OK(Container::Init(dir, options));
  auto opened = Container::Open(dir, OpenMode::kWriter);
  ASSERT_TRUE(opened.ok()) << opened.status();
  Container& c = **opened;

  Registry registry;
  Failures failures;
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> reads{0};
  std::vector<std::thread> threads;
  // A few objects every writer keeps writing, loose and packed, so the same
  // object is often in flight in several threads at once.
  std::vector<Spec> shared_specs;
  for (uint64_t i = 0; i < 8; ++i) shared_specs.push_back(Spec{i % 2 == 0, 1000 + i, 5000 * i});

  for (int w = 0; w < 4; ++w) {
    threads.emplace_back([&, w] {
      std::mt19937_64 rng(100 + w);
      uint64_t next_seed = (static_cast<uint64_t>(w) + 1) << 40;
      auto make_spec = [&](uint64_t max_size) {
        if (rng() % 10 == 0) return shared_specs[rng() % shared_specs.size()];
        return Spec{rng() % 2 == 0, next_seed++, rng() % (max_size + 1)};
      };
      while (!stop.load()) {
        int op = static_cast<int>(rng() % 10);
        std::vector<Spec> specs;
        if (op < 4) {
          specs.push_back(make_spec(48 << 10));
        } else if (op < 9) {
          for (size_t n = 1 + rng() % 8; n > 0; --n) specs.push_back(make_spec(16 << 10));
        } else {
          specs.push_back(Spec{rng() % 2 == 0, next_seed++, (150 << 10) + rng() % (150 << 10)});
        }
        std::vector<std::string> contents;
        for (const Spec& spec : specs) contents.push_back(Content(spec));
        absl::StatusOr<std::vector<WrittenObject>> written;
        auto as_list =
            [](absl::StatusOr<WrittenObject> one) -> absl::StatusOr<std::vector<WrittenObject>> {
          if (!one.ok()) return one.status();
          return std::vector<WrittenObject>{*one};
        };
        if (op < 4) {
          written = as_list(c.PutLoose(contents[0]));
        } else if (op < 9) {
          std::vector<std::string_view> views(contents.begin(), contents.end());
          written = c.PutPacked(views, AnyCompressMode(rng));
        } else {
          StringSource source(contents[0]);
          written = as_list(c.PutPackedStream(source, AnyCompressMode(rng)));
        }
        if (!written.ok()) {
          failures.Add(StrCat("writer ", w), written.status());
          continue;
        }
        std::vector<Entry> entries;
        for (size_t i = 0; i < specs.size(); ++i) {
          std::string key = Hasher::Hash(HashType::kSha256, contents[i]);
          if ((*written)[i].key != key || (*written)[i].size != specs[i].size) {
            failures.Add(
                StrCat("writer ", w),
                absl::InternalError(StrCat("put returned ", (*written)[i].key, " for ", key)));
          }
          entries.push_back(Entry{key, specs[i]});
        }
        registry.Add(entries);
      }
    });
  }
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      std::mt19937_64 rng(200 + r);
      while (!stop.load()) {
        std::vector<Entry> entries = registry.Snapshot();
        if (entries.empty()) {
          std::this_thread::yield();
          continue;
        }
        for (int i = 0; i < 20 && !stop.load(); ++i) {
          failures.Add(StrCat("reader ", r), ReadAndCheck(c, entries, rng));
          reads.fetch_add(1);
        }
      }
    });
  }
  std::atomic<int> maintenance_rounds{0};
  std::atomic<uint64_t> packs_rewritten{0};
  threads.emplace_back([&] {
    std::mt19937_64 rng(300);
    uint64_t next_doomed_seed = uint64_t{0xd00d} << 40;
    while (!stop.load()) {
      auto rewritten = MaintenanceRound(c, rng, next_doomed_seed);
      if (!rewritten.ok()) {
        failures.Add("maintenance", rewritten.status());
        continue;
      }
      packs_rewritten.fetch_add(*rewritten);
      maintenance_rounds.fetch_add(1);
    }
  });

  // Three seconds, and then until there was enough of everything (a
  // sanitizer build is several times slower) or a cap is reached.
  const Clock::time_point start = Clock::now();
  std::this_thread::sleep_for(std::chrono::seconds(3));
  while (Clock::now() - start < std::chrono::seconds(30) &&
         (registry.Snapshot().size() < 200 || reads.load() < 200 || maintenance_rounds.load() < 3 ||
          packs_rewritten.load() == 0)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  stop.store(true);
  for (std::thread& t : threads) t.join();
  failures.Report();

  std::vector<Entry> entries = registry.Snapshot();
  std::printf(
      "%zu objects written, %llu checked reads, %d maintenance rounds, %llu packs "
      "rewritten\n",
      entries.size(), static_cast<unsigned long long>(reads.load()), maintenance_rounds.load(),
      static_cast<unsigned long long>(packs_rewritten.load()));
  EXPECT_GE(entries.size(), 200u);
  EXPECT_GE(reads.load(), 200u);
  EXPECT_GE(maintenance_rounds.load(), 3);
  EXPECT_GT(packs_rewritten.load(), 0u);
  ASSERT_NO_FATAL_FAILURE(ExpectAllRead(c, entries));
  ASSERT_NO_FATAL_FAILURE(ExpectValid(c));
  // And once more with everything packed.
  PS_ASSERT_OK(c.PackAllLoose({}).status());
  ASSERT_NO_FATAL_FAILURE(ExpectAllRead(c, entries));
  ASSERT_NO_FATAL_FAILURE(ExpectValid(c));
}

// Writes lines with a single write(), so that lines from several processes
// appending to one file never interleave.
[[nodiscard]] bool WriteLines(int fd, const std::string& lines) {
  std::string_view rest(lines);
  while (!rest.empty()) {
    ssize_t n = ::write(fd, rest.data(), rest.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    rest.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// In a child: a report that cannot be written ends it.
void ReportOrDie(int fd, const std::string& lines) {
  if (!WriteLines(fd, lines)) ::_exit(4);
}

// Follows a file other processes append lines to.
class LineFollower {
 public:
  explicit LineFollower(std::string path) : path_(std::move(path)) {}
  // New complete entries since the last call.
  std::vector<Entry> Poll() {
    std::vector<Entry> out;
    auto text = ReadSmallFile(path_);
    if (!text.ok()) return out;
    while (true) {
      size_t nl = text->find('\n', offset_);
      if (nl == std::string::npos) break;
      Entry entry;
      if (ParseEntry(text->substr(offset_, nl - offset_), entry)) out.push_back(entry);
      offset_ = nl + 1;
    }
    return out;
  }

 private:
  std::string path_;
  size_t offset_ = 0;
};

// A child process: opens the container shared, writes loose objects and
// reads what everyone (the other children and the writer) has acknowledged
// until `deadline`. Reports each acknowledged object on `report_fd` (and in
// the shared log), or "E <message>" and exit status 1 on the first error.
[[noreturn]] void RunSharedChild(const std::string& dir, const std::string& shared_log,
                                 int report_fd, int child, Clock::time_point deadline) {
  auto fail = [&](std::string_view what, const absl::Status& status) {
    ReportOrDie(report_fd, StrCat("E child ", child, " ", what, ": ", status.ToString(), "\n"));
    ::_exit(1);
  };
  auto opened = Container::Open(dir, OpenMode::kShared);
  if (!opened.ok()) fail("open", opened.status());
  Container& c = **opened;
  auto refused = c.PutPacked({"a shared opener may not write packs"});
  if (!absl::IsFailedPrecondition(refused.status())) {
    fail("packed put", absl::InternalError("not refused: " + refused.status().ToString()));
  }
  auto log = OpenFile(shared_log, O_WRONLY | O_APPEND);
  if (!log.ok()) fail("open log", log.status());
  LineFollower follower(shared_log);
  std::vector<Entry> known;
  std::mt19937_64 rng(400 + child);
  uint64_t next_seed = (static_cast<uint64_t>(child) + 1) << 44;
  while (Clock::now() < deadline) {
    Spec spec{rng() % 2 == 0, next_seed++, 1 + rng() % (32 << 10)};
    std::string content = Content(spec);
    auto written = c.PutLoose(content);
    if (!written.ok()) fail("loose put", written.status());
    Entry entry{Hasher::Hash(HashType::kSha256, content), spec};
    if (written->key != entry.key) fail("loose put", absl::InternalError("wrong key"));
    ReportOrDie(report_fd, EntryLine(entry));
    ReportOrDie(log->get(), EntryLine(entry));
    for (Entry& e : follower.Poll()) known.push_back(std::move(e));
    for (int i = 0; i < 4; ++i) {
      absl::Status read = ReadAndCheck(c, known, rng);
      if (!read.ok()) fail("read", read);
    }
  }
  ::_exit(0);
}

TEST(ConcurrencyTest, SharedProcessesWriteLooseAndReadEachOtherWhileTheWriterMaintains) {
  TempDir tmp;
  const std::string dir = tmp.Sub("c");
  const std::string shared_log = tmp.Sub("acknowledged");
  InitOptions options;
  options.pack_size_target = 64 << 10;
  PS_ASSERT_OK(Container::Init(dir, options));
  PS_ASSERT_OK(OpenFile(shared_log, O_WRONLY | O_CREAT, 0644).status());

  // The children are forked before this process opens anything: each opens
  // its own container, as an unrelated process would.
  constexpr int kChildren = 3;
  const Clock::time_point deadline = Clock::now() + std::chrono::milliseconds(2500);
  std::vector<pid_t> pids;
  std::vector<int> report_fds;
  for (int i = 0; i < kChildren; ++i) {
    int fds[2];
    ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      for (int fd : report_fds) ::close(fd);
      ::close(fds[0]);
      RunSharedChild(dir, shared_log, fds[1], i, deadline);
    }
    ::close(fds[1]);
    pids.push_back(pid);
    report_fds.push_back(fds[0]);
  }

  // The children's reports are drained as they come, so no child ever
  // blocks on a full pipe.
  absl::Mutex reports_mu;
  std::vector<std::string> reports(kChildren);
  std::thread drain([&] {
    std::vector<pollfd> polls;
    for (int fd : report_fds) polls.push_back(pollfd{fd, POLLIN, 0});
    int open_pipes = kChildren;
    char buf[65536];
    while (open_pipes > 0) {
      if (::poll(polls.data(), polls.size(), 1000) <= 0) continue;
      for (int i = 0; i < kChildren; ++i) {
        if (polls[i].fd < 0 || polls[i].revents == 0) continue;
        ssize_t n = ::read(polls[i].fd, buf, sizeof(buf));
        if (n > 0) {
          absl::MutexLock lock(&reports_mu);
          reports[i].append(buf, static_cast<size_t>(n));
        } else if (n == 0 || errno != EINTR) {
          ::close(polls[i].fd);
          polls[i].fd = -1;
          --open_pipes;
        }
      }
    }
  });

  std::vector<Entry> parent_entries;
  int rounds = 0;
  uint64_t packs_rewritten = 0;
  // In a lambda, so that a failed assertion still reaches the waits below.
  auto run_writer = [&] {
    auto opened = Container::Open(dir, OpenMode::kWriter);
    ASSERT_TRUE(opened.ok()) << opened.status();
    Container& c = **opened;
    auto log = OpenFile(shared_log, O_WRONLY | O_APPEND);
    ASSERT_TRUE(log.ok()) << log.status();
    std::mt19937_64 rng(500);
    uint64_t next_seed = uint64_t{0xabc} << 40;
    uint64_t next_doomed_seed = uint64_t{0xd00d} << 40;
    while (Clock::now() < deadline + std::chrono::milliseconds(200)) {
      // Packed objects of the writer's own, which the children read too.
      std::vector<Spec> specs;
      for (size_t n = 1 + rng() % 6; n > 0; --n) {
        specs.push_back(Spec{rng() % 2 == 0, next_seed++, rng() % (24 << 10)});
      }
      std::vector<std::string> contents;
      for (const Spec& spec : specs) contents.push_back(Content(spec));
      std::vector<std::string_view> views(contents.begin(), contents.end());
      auto written = c.PutPacked(views, AnyCompressMode(rng));
      ASSERT_TRUE(written.ok()) << written.status();
      std::string lines;
      for (size_t i = 0; i < specs.size(); ++i) {
        parent_entries.push_back(Entry{(*written)[i].key, specs[i]});
        lines += EntryLine(parent_entries.back());
      }
      ASSERT_TRUE(WriteLines(log->get(), lines));
      auto rewritten = MaintenanceRound(c, rng, next_doomed_seed);
      ASSERT_TRUE(rewritten.ok()) << rewritten.status();
      packs_rewritten += *rewritten;
      ++rounds;
    }
  };
  run_writer();

  for (int i = 0; i < kChildren; ++i) {
    int wstatus = 0;
    ASSERT_EQ(::waitpid(pids[i], &wstatus, 0), pids[i]);
    EXPECT_TRUE(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0)
        << "child " << i << " ended with status " << wstatus;
  }
  drain.join();

  std::vector<Entry> entries = parent_entries;
  std::vector<size_t> per_child(kChildren);
  for (int i = 0; i < kChildren; ++i) {
    absl::MutexLock lock(&reports_mu);
    std::istringstream in(reports[i]);
    for (std::string line; std::getline(in, line);) {
      if (line.starts_with("E ")) {
        ADD_FAILURE() << line;
        continue;
      }
      Entry entry;
      ASSERT_TRUE(ParseEntry(line, entry)) << "malformed report: " << line;
      entries.push_back(entry);
      ++per_child[i];
    }
  }
  std::printf(
      "children wrote %zu, %zu, %zu loose objects; the writer %zu packed, in %d "
      "maintenance rounds that rewrote %llu packs\n",
      per_child[0], per_child[1], per_child[2], parent_entries.size(), rounds,
      static_cast<unsigned long long>(packs_rewritten));
  // Enough happened to mean something, even on a slow sanitizer build
  // sharing two cores with other tests.
  for (int i = 0; i < kChildren; ++i) EXPECT_GE(per_child[i], 5u) << "child " << i;
  EXPECT_GE(rounds, 2);
  EXPECT_GT(packs_rewritten, 0u);

  auto opened = Container::Open(dir, OpenMode::kWriter);
  ASSERT_TRUE(opened.ok()) << opened.status();
  ASSERT_NO_FATAL_FAILURE(ExpectAllRead(**opened, entries));
  ASSERT_NO_FATAL_FAILURE(ExpectValid(**opened));
  PS_ASSERT_OK((*opened)->PackAllLoose({}).status());
  ASSERT_NO_FATAL_FAILURE(ExpectAllRead(**opened, entries));
  ASSERT_NO_FATAL_FAILURE(ExpectValid(**opened));
}

int64_t RowsForKey(const std::string& dir, const std::string& key) {
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open_v2(JoinPath(dir, "packs.idx").c_str(), &db, SQLITE_OPEN_READONLY, nullptr),
            SQLITE_OK);
  std::string sql = StrCat("SELECT count(*) FROM db_object WHERE hashkey = '", key, "'");
  sqlite3_stmt* stmt = nullptr;
  EXPECT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr), SQLITE_OK);
  int64_t count = -1;
  if (sqlite3_step(stmt) == SQLITE_ROW) count = sqlite3_column_int64(stmt, 0);
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return count;
}

TEST(ConcurrencyTest, SameObjectWrittenByManyThreadsEndsWithOneRow) {
  TempDir tmp;
  const std::string dir = tmp.Sub("c");
  InitOptions options;
  options.pack_size_target = 64 << 10;
  PS_ASSERT_OK(Container::Init(dir, options));
  auto opened = Container::Open(dir, OpenMode::kWriter);
  ASSERT_TRUE(opened.ok()) << opened.status();
  Container& c = **opened;
  // Big enough to be streamed; small enough to go in batches.
  const std::string big = RandomBytes(77, 200000);
  const std::string small = TextBytes(78, 3000);
  const std::string big_key = Hasher::Hash(HashType::kSha256, big);
  const std::string small_key = Hasher::Hash(HashType::kSha256, small);

  // One thread first: a streamed object turns out to be packed already only
  // once it is written, here into a pack of its own (the first one is past
  // the target), which must not stay behind as a pack no row points at.
  for (int i = 0; i < 2; ++i) {
    StringSource source(big);
    auto written = c.PutPackedStream(source);
    ASSERT_TRUE(written.ok()) << written.status();
    EXPECT_EQ(written->key, big_key);
  }
  auto counts = c.Counts();
  ASSERT_TRUE(counts.ok()) << counts.status();
  EXPECT_EQ(counts->pack_files, 1u);
  EXPECT_EQ(counts->packed_objects, 1u);
  ASSERT_NO_FATAL_FAILURE(ExpectValid(c));

  Failures failures;
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(600 + t);
      auto expect_key = [&](const absl::StatusOr<WrittenObject>& w, const std::string& key) {
        if (!w.ok()) return failures.Add("put", w.status());
        if (w->key != key) failures.Add("put", absl::InternalError("wrong key " + w->key));
      };
      bool wrote_small = false;
      for (int i = 0; i < 25; ++i) {
        switch ((t + i) % 5) {
          case 0:
            expect_key(c.PutLoose(big), big_key);
            break;
          case 1:
            expect_key(c.PutLoose(small), small_key);
            break;
          case 2: {
            auto written = c.PutPacked({small, big, small}, AnyCompressMode(rng));
            if (!written.ok()) {
              failures.Add("put packed", written.status());
              break;
            }
            expect_key((*written)[0], small_key);
            expect_key((*written)[1], big_key);
            expect_key((*written)[2], small_key);
            break;
          }
          case 3: {
            StringSource source(big);
            expect_key(c.PutPackedStream(source, AnyCompressMode(rng)), big_key);
            break;
          }
          default:
            failures.Add("pack", c.PackAllLoose({}).status());
        }
        // The big object exists since the start; the small one once this
        // thread has written it.
        wrote_small = wrote_small || (t + i) % 5 == 1 || (t + i) % 5 == 2;
        bool read_big = i % 2 == 0 || !wrote_small;
        auto got = c.Get(read_big ? big_key : small_key);
        if (!got.ok()) {
          failures.Add("get", got.status());
        } else if (*got != (read_big ? big : small)) {
          failures.Add("get", absl::DataLossError("wrong bytes"));
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  failures.Report();

  PS_ASSERT_OK(c.PackAllLoose({}).status());
  PS_ASSERT_OK(c.Clean({}).status());
  EXPECT_EQ(RowsForKey(dir, big_key), 1);
  EXPECT_EQ(RowsForKey(dir, small_key), 1);
  counts = c.Counts();
  ASSERT_TRUE(counts.ok()) << counts.status();
  EXPECT_EQ(counts->packed_objects, 2u);
  EXPECT_EQ(counts->loose_objects, 0u);
  for (const auto& [key, content] : {std::pair{big_key, big}, std::pair{small_key, small}}) {
    auto got = c.Get(key);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_TRUE(*got == content);
  }
  ASSERT_NO_FATAL_FAILURE(ExpectValid(c));
  // Streamed duplicates appended to a pack with rows are holes, which a
  // repack reclaims.
  PS_ASSERT_OK(c.Repack({}).status());
  counts = c.Counts();
  ASSERT_TRUE(counts.ok()) << counts.status();
  EXPECT_EQ(counts->hole_bytes, 0u);
  ASSERT_NO_FATAL_FAILURE(ExpectValid(c));
}

// A reader in another process must not pair a row with an older file of
// the same pack id: a repack frees ids, and later packs reuse them.
TEST(ConcurrencyTest, SharedReaderInAnotherProcessFollowsARepack) {
  TempDir tmp;
  const std::string dir = tmp.Sub("c");
  PS_ASSERT_OK(Container::Init(dir, {}));
  const std::string a = RandomBytes(11, 3000);
  const std::string b = RandomBytes(12, 3000);
  const std::string d = RandomBytes(14, 2000);
  const std::string a_key = Hasher::Hash(HashType::kSha256, a);
  const std::string b_key = Hasher::Hash(HashType::kSha256, b);
  const std::string d_key = Hasher::Hash(HashType::kSha256, d);
  {
    auto writer = Container::Open(dir, OpenMode::kWriter);
    ASSERT_TRUE(writer.ok()) << writer.status();
    PS_ASSERT_OK((*writer)->PutPacked({a, b}).status());
  }
  int to_child[2], to_parent[2];
  ASSERT_EQ(::pipe2(to_child, O_CLOEXEC), 0);
  ASSERT_EQ(::pipe2(to_parent, O_CLOEXEC), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(to_child[1]);
    ::close(to_parent[0]);
    std::string problems;
    auto shared = Container::Open(dir, OpenMode::kShared);
    if (!shared.ok()) {
      ReportOrDie(to_parent[1], "shared open failed\n");
      ::_exit(1);
    }
    Container& c = **shared;
    auto check = [&](std::string_view what, const std::string& key, const std::string& want) {
      auto got = c.Get(key);
      if (!got.ok()) {
        problems += StrCat(what, ": ", got.status().ToString(), "; ");
      } else if (*got != want) {
        problems += StrCat(what, ": wrong bytes; ");
      }
    };
    check("a before the repack", a_key, a);  // opens pack 0
    ReportOrDie(to_parent[1], "r");
    char byte;
    if (::read(to_child[0], &byte, 1) != 1) ::_exit(2);
    check("a after the repack", a_key, a);
    check("d, in a new pack 0", d_key, d);
    absl::Status many = c.GetMany(
        {a_key, d_key}, [&](std::string_view key, const absl::StatusOr<std::string_view>& got) {
          if (!got.ok() || *got != (key == a_key ? a : d)) problems += "GetMany: wrong bytes; ";
          return absl::OkStatus();
        });
    if (!many.ok()) problems += "GetMany: " + many.ToString() + "; ";
    ReportOrDie(to_parent[1], problems);
    ::_exit(0);
  }
  ::close(to_child[0]);
  ::close(to_parent[1]);
  std::string problems;
  auto run_writer = [&] {
    char byte;
    ASSERT_EQ(::read(to_parent[0], &byte, 1), 1);
    auto writer = Container::Open(dir, OpenMode::kWriter);
    ASSERT_TRUE(writer.ok()) << writer.status();
    Container& c = **writer;
    // b's bytes become a hole; the repack copies a into pack 1 and removes
    // pack 0; d then starts a new pack 0.
    PS_ASSERT_OK(c.Delete({b_key}).status());
    auto repacked = c.Repack({});
    ASSERT_TRUE(repacked.ok()) << repacked.status();
    ASSERT_EQ(repacked->packs_rewritten, 1u);
    PS_ASSERT_OK(c.PutPacked({d}).status());
    auto info = c.Stat(d_key);
    ASSERT_TRUE(info.ok()) << info.status();
    ASSERT_TRUE(info->packed.has_value());
    ASSERT_EQ(info->packed->pack_id, 0);
    ASSERT_EQ(::write(to_child[1], "g", 1), 1);
    char buf[4096];
    for (ssize_t n; (n = ::read(to_parent[0], buf, sizeof(buf))) > 0;) {
      problems.append(buf, static_cast<size_t>(n));
    }
  };
  run_writer();
  ::close(to_child[1]);
  ::close(to_parent[0]);
  int wstatus = 0;
  ASSERT_EQ(::waitpid(pid, &wstatus, 0), pid);
  EXPECT_TRUE(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0) << wstatus;
  EXPECT_EQ(problems, "");
}

TEST(ConcurrencyTest, SecondWriterIsRefused) {
  TempDir tmp;
  const std::string dir = tmp.Sub("c");
  PS_ASSERT_OK(Container::Init(dir, {}));
  int go[2], result[2];
  ASSERT_EQ(::pipe2(go, O_CLOEXEC), 0);
  ASSERT_EQ(::pipe2(result, O_CLOEXEC), 0);
  const pid_t parent = ::getpid();
  const std::string content = RandomBytes(9, 5000);
  const std::string key = Hasher::Hash(HashType::kSha256, content);

  // Forked before the writer opens, so the child shares nothing with it.
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(go[1]);
    ::close(result[0]);
    char byte;
    if (::read(go[0], &byte, 1) != 1) ::_exit(2);
    std::string problems;
    auto writer = Container::Open(dir, OpenMode::kWriter);
    if (!absl::IsFailedPrecondition(writer.status())) {
      problems += "second writer open gave " + writer.status().ToString() + "; ";
    } else if (writer.status().ToString().find(StrCat("pid ", parent)) == std::string::npos) {
      problems += "refusal does not name the holder: " + writer.status().ToString() + "; ";
    }
    // Readers and loose writers stay welcome.
    auto shared = Container::Open(dir, OpenMode::kShared);
    if (!shared.ok()) {
      problems += "shared open failed: " + shared.status().ToString() + "; ";
    } else {
      auto got = (*shared)->Get(key);
      if (!got.ok() || *got != content) problems += "shared read failed; ";
      if (!(*shared)->PutLoose("from the child").ok()) problems += "shared loose write failed; ";
    }
    ReportOrDie(result[1], problems);
    ::_exit(0);
  }
  ::close(go[0]);
  ::close(result[1]);
  std::string problems;
  // In a lambda, so that a failed assertion still lets the child go and
  // reaches the wait below.
  auto run_writer = [&] {
    auto writer = Container::Open(dir, OpenMode::kWriter);
    ASSERT_TRUE(writer.ok()) << writer.status();
    PS_ASSERT_OK((*writer)->PutPacked({content}).status());
    // flock belongs to the open file description: a second open in the same
    // process is refused as well.
    auto again = Container::Open(dir, OpenMode::kWriter);
    EXPECT_TRUE(absl::IsFailedPrecondition(again.status())) << again.status();
    ASSERT_EQ(::write(go[1], "g", 1), 1);
    char buf[4096];
    for (ssize_t n; (n = ::read(result[0], buf, sizeof(buf))) > 0;) {
      problems.append(buf, static_cast<size_t>(n));
    }
  };
  run_writer();
  ::close(go[1]);
  ::close(result[0]);
  int wstatus = 0;
  ASSERT_EQ(::waitpid(pid, &wstatus, 0), pid);
  EXPECT_TRUE(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0) << wstatus;
  EXPECT_EQ(problems, "");
  // Closed: the next writer gets in, and sees the child's loose object.
  auto writer = Container::Open(dir, OpenMode::kWriter);
  ASSERT_TRUE(writer.ok()) << writer.status();
  auto got = (*writer)->Get(Hasher::Hash(HashType::kSha256, "from the child"));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, "from the child");
}

}  // namespace
}  // namespace packstore
