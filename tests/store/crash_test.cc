// Crash tests: a child process writing, packing and repacking is killed
// with SIGKILL at many random instants; after recovery every acknowledged
// object reads back intact and validate is clean. Then one focused test per
// case of start-up recovery (docs/format.md, "Recovery"), each set up by
// hand in the state a crash leaves.
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/hasher.h"
#include "common/str_cat.h"
#include "gtest/gtest.h"
#include "server/store/container.h"
#include "server/store/file_io.h"
#include "tests/store/test_util.h"

namespace packstore {
namespace {

using ::packstore::testing::ExpectValid;
using ::packstore::testing::RandomBytes;
using ::packstore::testing::StatusText;
using ::packstore::testing::TempDir;
using ::packstore::testing::TextBytes;

using ::packstore::testing::Content;
using ::packstore::testing::Spec;
using ::packstore::testing::SpecText;

// Writes one whole line with a single write(): a line is either in the file
// or, if the child dies inside the call, at worst cut short (and the parser
// ignores an unterminated last line). Nothing is fsynced: the process is
// killed, the machine is not, and the kernel keeps what write() accepted.
void LogLine(int fd, const std::string& line) {
  std::string_view rest(line);
  while (!rest.empty()) {
    ssize_t n = ::write(fd, rest.data(), rest.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) ::_exit(4);
    rest.remove_prefix(static_cast<size_t>(n));
  }
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  for (size_t nl = text.find('\n'); nl != std::string::npos; nl = text.find('\n', start)) {
    lines.push_back(text.substr(start, nl - start));
    start = nl + 1;
  }
  return lines;  // an unterminated tail was cut by the kill: not acknowledged
}

CompressMode AnyCompressMode(std::mt19937_64& rng) {
  static constexpr CompressMode kModes[] = {CompressMode::kNo, CompressMode::kYes,
                                            CompressMode::kAuto};
  return kModes[rng() % 3];
}

// The child's workload: a random mix of every mutation, forever, logging
// intents before each call and acknowledgements after it returns OK:
//   I <key> <spec>   about to write this object
//   A <key> <spec>   written (the call returned OK)
//   X <key>          about to delete
//   D <key>          deleted
//   E <message>      an operation failed: the engine has a bug
// It only ever ends by SIGKILL (or _exit on error).
[[noreturn]] void RunCrashChild(const std::string& dir, int log_fd, int ready_fd,
                                uint64_t iteration, std::vector<std::string> deletable) {
  auto fail = [&](std::string_view what, const absl::Status& status) {
    LogLine(log_fd, StrCat("E ", what, ": ", status.ToString(), "\n"));
    ::_exit(3);
  };
  auto opened = Container::Open(dir, OpenMode::kWriter);
  if (!opened.ok()) fail("open", opened.status());
  Container& c = **opened;
  char ready = 'r';
  if (::write(ready_fd, &ready, 1) != 1) ::_exit(5);

  std::mt19937_64 rng(iteration * 7919 + 17);
  // Seeds unique across iterations, so no two objects ever share a key and
  // a deleted object never comes back by being written again.
  uint64_t next_seed = (iteration + 1) << 32;
  auto make_spec = [&](uint64_t min_size, uint64_t max_size) {
    Spec spec;
    spec.text = rng() % 2 == 0;
    spec.seed = next_seed++;
    spec.size = min_size + rng() % (max_size - min_size + 1);
    return spec;
  };
  auto check_key = [&](const std::string& expected, const std::string& got) {
    if (expected != got) {
      fail("put",
           absl::InternalError(StrCat("key ", got, " for an object whose key is ", expected)));
    }
  };
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    int op = static_cast<int>(rng() % 100);
    if (op < 28) {
      Spec spec = make_spec(1, 16 << 10);
      std::string content = Content(spec);
      std::string key = Hasher::Hash(HashType::kSha256, content);
      LogLine(log_fd, StrCat("I ", key, " ", SpecText(spec), "\n"));
      auto written = c.PutLoose(content);
      if (!written.ok()) fail("put loose", written.status());
      check_key(key, written->key);
      LogLine(log_fd, StrCat("A ", key, " ", SpecText(spec), "\n"));
      deletable.push_back(key);
    } else if (op < 52) {
      std::vector<Spec> specs(1 + rng() % 12);
      std::vector<std::string> contents;
      std::vector<std::string> keys;
      std::string intents;
      for (Spec& spec : specs) {
        spec = make_spec(1, 8 << 10);
        contents.push_back(Content(spec));
        keys.push_back(Hasher::Hash(HashType::kSha256, contents.back()));
        intents += StrCat("I ", keys.back(), " ", SpecText(spec), "\n");
      }
      LogLine(log_fd, intents);
      std::vector<std::string_view> views(contents.begin(), contents.end());
      auto written = c.PutPacked(views, AnyCompressMode(rng));
      if (!written.ok()) fail("put packed", written.status());
      std::string acks;
      for (size_t i = 0; i < specs.size(); ++i) {
        check_key(keys[i], (*written)[i].key);
        acks += StrCat("A ", keys[i], " ", SpecText(specs[i]), "\n");
        deletable.push_back(keys[i]);
      }
      LogLine(log_fd, acks);
    } else if (op < 60) {
      // Past the 128 KiB head, so the object takes the streaming path.
      Spec spec = make_spec(160 << 10, 400 << 10);
      std::string content = Content(spec);
      std::string key = Hasher::Hash(HashType::kSha256, content);
      LogLine(log_fd, StrCat("I ", key, " ", SpecText(spec), "\n"));
      StringSource source(content);
      auto written = c.PutPackedStream(source, AnyCompressMode(rng));
      if (!written.ok()) fail("put packed stream", written.status());
      check_key(key, written->key);
      LogLine(log_fd, StrCat("A ", key, " ", SpecText(spec), "\n"));
      deletable.push_back(key);
    } else if (op < 70) {
      PackOptions options;
      options.compress = AnyCompressMode(rng);
      options.delete_loose = rng() % 2 == 0;
      auto packed = c.PackAllLoose(options);
      if (!packed.ok()) fail("pack", packed.status());
      if (!packed->corrupt.empty()) {
        fail("pack", absl::DataLossError(StrCat("corrupt loose object ", packed->corrupt[0])));
      }
    } else if (op < 77) {
      CleanOptions options;
      options.vacuum = rng() % 8 == 0;
      auto cleaned = c.Clean(options);
      if (!cleaned.ok()) fail("clean", cleaned.status());
    } else if (op < 88) {
      if (deletable.empty()) continue;
      std::vector<std::string> doomed;
      std::string intents;
      for (size_t n = 1 + rng() % 4; n > 0 && !deletable.empty(); --n) {
        size_t i = rng() % deletable.size();
        doomed.push_back(deletable[i]);
        deletable[i] = deletable.back();
        deletable.pop_back();
        intents += StrCat("X ", doomed.back(), "\n");
      }
      LogLine(log_fd, intents);
      auto deleted = c.Delete(doomed);
      if (!deleted.ok()) fail("delete", deleted.status());
      if (*deleted != doomed.size()) {
        fail("delete", absl::InternalError(StrCat(*deleted, " of ", doomed.size(),
                                                  " acknowledged objects existed")));
      }
      std::string acks;
      for (const std::string& key : doomed) acks += StrCat("D ", key, "\n");
      LogLine(log_fd, acks);
    } else {
      RepackOptions options;
      // Recompressing rewrites every pack: rare, so the rest gets time.
      if (rng() % 10 == 0) options.compress = AnyCompressMode(rng);
      auto repacked = c.Repack(options);
      if (!repacked.ok()) fail("repack", repacked.status());
    }
  }
  ::_exit(0);
}

// What the parent knows of the container from the children's logs.
struct Model {
  std::map<std::string, Spec> live;  // acknowledged, not deleted
  std::set<std::string> deleted;     // deletion acknowledged
  // The last child was killed around these: either outcome is right.
  std::map<std::string, Spec> maybe_written;
  std::set<std::string> maybe_deleted;
  // Kills that landed inside a write or a delete, and objects whose write
  // completed but was never acknowledged: evidence the kills hit work.
  int interrupted_writes = 0;
  int interrupted_deletes = 0;
  int unacknowledged_but_present = 0;

  std::vector<std::string> LiveKeys() const {
    std::vector<std::string> keys;
    for (const auto& [key, spec] : live) keys.push_back(key);
    return keys;
  }
};

// Applies a child's log to the model. Fails on an error line.
void ApplyLog(const std::string& log, Model& model) {
  for (const std::string& line : Lines(log)) {
    std::istringstream in(line);
    std::string tag, key;
    in >> tag;
    ASSERT_NE(tag, "E") << "the child's engine call failed: " << line;
    in >> key;
    ASSERT_EQ(key.size(), 64u) << "malformed log line: " << line;
    if (tag == "I" || tag == "A") {
      std::string kind;
      Spec spec;
      in >> kind >> spec.seed >> spec.size;
      ASSERT_FALSE(in.fail()) << "malformed log line: " << line;
      spec.text = kind == "t";
      if (tag == "I") {
        model.maybe_written[key] = spec;
      } else {
        model.maybe_written.erase(key);
        model.live[key] = spec;
      }
    } else if (tag == "X") {
      model.maybe_deleted.insert(key);
    } else if (tag == "D") {
      ASSERT_EQ(model.live.erase(key), 1u) << "deleted an object never acknowledged: " << key;
      model.maybe_deleted.erase(key);
      model.deleted.insert(key);
    } else {
      FAIL() << "malformed log line: " << line;
    }
  }
}


// packs/ with each lock file's content: what a failure needs explained.
std::string DescribePacks(const std::string& dir) {
  std::string out = "packs/:";
  auto names = ListDir(JoinPath(dir, "packs"));
  if (!names.ok()) return out + " " + names.status().ToString();
  for (const std::string& name : *names) {
    std::string path = JoinPath(JoinPath(dir, "packs"), name);
    out += StrCat(" ", name, "(", PathSize(path).value_or(0), ")");
    if (std::string_view(name).ends_with(".lock")) {
      out += StrCat("=\"", ReadSmallFile(path).value_or("?"), "\"");
    }
  }
  return out + "\n";
}

// What recovery must leave behind: no sandbox file, no pack lock, no
// temporary pack of a repack.
void ExpectNoLeftovers(const std::string& dir) {
  auto sandbox = ListDir(JoinPath(dir, "sandbox"));
  ASSERT_TRUE(sandbox.ok()) << sandbox.status();
  for (const std::string& name : *sandbox) ADD_FAILURE() << "sandbox/" << name << " left behind";
  auto packs = ListDir(JoinPath(dir, "packs"));
  ASSERT_TRUE(packs.ok()) << packs.status();
  for (const std::string& name : *packs) {
    EXPECT_FALSE(std::string_view(name).ends_with(".lock"))
        << "packs/" << name << " left behind; " << DescribePacks(dir);
    EXPECT_NE(name, "-1") << "packs/-1 left behind";
  }
}

// Opens the container as the writer (which recovers it) and checks it
// against the model, settling the outcome of what the killed child was
// doing: an object it was writing may or may not exist, but if it exists
// it is whole and stays; one it was deleting may or may not be gone.
void RecoverAndCheck(const std::string& dir, Model& model) {
  auto opened = Container::Open(dir, OpenMode::kWriter);
  ASSERT_TRUE(opened.ok()) << opened.status();
  Container& c = **opened;
  ASSERT_NO_FATAL_FAILURE(ExpectNoLeftovers(dir));

  if (!model.maybe_written.empty()) ++model.interrupted_writes;
  if (!model.maybe_deleted.empty()) ++model.interrupted_deletes;
  for (const std::string& key : model.maybe_deleted) {
    auto has = c.Has(key);
    ASSERT_TRUE(has.ok()) << has.status();
    if (!*has) {
      model.live.erase(key);
      model.deleted.insert(key);
    }
  }
  model.maybe_deleted.clear();
  std::set<std::string> listed;
  PS_ASSERT_OK(c.ListKeys("", [&](std::string_view key) {
    listed.emplace(key);
    return true;
  }));
  for (const std::string& key : listed) {
    if (model.live.contains(key)) continue;
    ASSERT_FALSE(model.deleted.contains(key)) << "deleted object " << key << " came back";
    auto it = model.maybe_written.find(key);
    ASSERT_NE(it, model.maybe_written.end()) << "object " << key << " was never written";
    model.live[key] = it->second;  // it made it: from now on it must stay
    ++model.unacknowledged_but_present;
  }
  model.maybe_written.clear();
  for (const auto& [key, spec] : model.live) {
    EXPECT_TRUE(listed.contains(key)) << "acknowledged object " << key << " not listed";
  }

  std::set<std::string> seen;
  PS_ASSERT_OK(c.GetMany(
      model.LiveKeys(),
      [&](std::string_view key, const absl::StatusOr<std::string_view>& content) -> absl::Status {
        seen.emplace(key);
        const Spec& spec = model.live.at(std::string(key));
        if (!content.ok()) {
          ADD_FAILURE() << "acknowledged object " << key << " (" << SpecText(spec)
                        << ") unreadable: " << content.status();
        } else if (*content != Content(spec)) {
          ADD_FAILURE() << "acknowledged object " << key << " (" << SpecText(spec)
                        << ") reads back different bytes";
        }
        return absl::OkStatus();
      }));
  EXPECT_EQ(seen.size(), model.live.size());
  ASSERT_NO_FATAL_FAILURE(ExpectValid(c));
}

int CrashIterations() {
  // A soak run can ask for more kill points than the default ctest run.
  if (const char* env = std::getenv("PACKSTORE_CRASH_ITERATIONS")) return std::atoi(env);
#ifdef __SANITIZE_ADDRESS__
  // Everything runs several times slower under AddressSanitizer: fewer kill
  // points keep the suite's time in bounds and still cross every operation.
  return 30;
#else
  return 100;
#endif
}

TEST(CrashTest, WriterKilledAtRandomInstantsLosesNothingAcknowledged) {
  TempDir tmp;
  const std::string dir = tmp.Sub("c");
  InitOptions options;
  // Small packs, so that rollovers (and pack creation) happen all the time.
  options.pack_size_target = 64 << 10;
  PS_ASSERT_OK(Container::Init(dir, options));

  Model model;
  std::mt19937_64 rng(20240611);
  const int iterations = CrashIterations();
  for (int i = 0; i < iterations; ++i) {
    // One kill in four counts from the fork, and so often lands in the
    // child's own open and recovery; the rest count from when the child is
    // running its workload.
    const bool from_fork = i % 4 == 0;
    const int delay_us =
        from_fork ? static_cast<int>(rng() % 15000) : 1000 + static_cast<int>(rng() % 39000);
    SCOPED_TRACE(StrCat("kill point ", i, ": ", delay_us, " us after ",
                        from_fork ? "fork" : "the child opened the container"));
    std::string log_path = tmp.Sub(StrCat("ack-", i));
    auto log_fd = OpenFile(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
    ASSERT_TRUE(log_fd.ok()) << log_fd.status();
    int ready[2];
    ASSERT_EQ(::pipe2(ready, O_CLOEXEC), 0);
    std::vector<std::string> deletable = model.LiveKeys();

    // No Container is open in this process across the fork: the child opens
    // its own, as a separate process would.
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(ready[0]);
      RunCrashChild(dir, log_fd->get(), ready[1], static_cast<uint64_t>(i), std::move(deletable));
    }
    ::close(ready[1]);
    bool child_ready = true;
    if (!from_fork) {
      pollfd p{ready[0], POLLIN, 0};
      char byte = 0;
      child_ready = ::poll(&p, 1, 30000) == 1 && ::read(ready[0], &byte, 1) == 1;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(delay_us));
    ::kill(pid, SIGKILL);
    int wstatus = 0;
    ASSERT_EQ(::waitpid(pid, &wstatus, 0), pid);
    ::close(ready[0]);
    log_fd->Close().IgnoreError();

    auto log = ReadSmallFile(log_path);
    ASSERT_TRUE(log.ok()) << log.status();
    ASSERT_NO_FATAL_FAILURE(ApplyLog(*log, model)) << DescribePacks(dir);
    // The workload never ends by itself: any other end is a failure the log
    // (checked above) or this status explains.
    ASSERT_TRUE(child_ready) << "the child never opened the container";
    ASSERT_TRUE(WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGKILL)
        << "child ended with status " << wstatus;
    ASSERT_NO_FATAL_FAILURE(RecoverAndCheck(dir, model));
    Unlink(log_path).IgnoreError();
  }
  RecordProperty("interrupted_writes", model.interrupted_writes);
  RecordProperty("interrupted_deletes", model.interrupted_deletes);
  RecordProperty("unacknowledged_but_present", model.unacknowledged_but_present);
  RecordProperty("live_objects", static_cast<int>(model.live.size()));
  std::printf(
      "%d kill points: %d inside a write, %d inside a delete; %d unacknowledged "
      "objects survived; %zu live objects, %zu deleted\n",
      iterations, model.interrupted_writes, model.interrupted_deletes,
      model.unacknowledged_but_present, model.live.size(), model.deleted.size());
  EXPECT_GT(model.interrupted_writes, 0);
  // The workload must have done something for the kills to mean anything.
  EXPECT_GT(model.live.size(), 20u);
  EXPECT_GT(model.deleted.size(), 0u);
  auto c = Container::Open(dir);
  ASSERT_TRUE(c.ok()) << c.status();
  auto counts = (*c)->Counts();
  ASSERT_TRUE(counts.ok()) << counts.status();
  EXPECT_GT(counts->pack_files, 1u);
}

// --- Focused recovery cases ---

// packs.idx opened directly, as a crashed disk-objectstore (or a person)
// leaves it.
class IndexDb {
 public:
  explicit IndexDb(const std::string& dir) {
    int rc =
        sqlite3_open_v2(JoinPath(dir, "packs.idx").c_str(), &db_, SQLITE_OPEN_READWRITE, nullptr);
    EXPECT_EQ(rc, SQLITE_OK) << sqlite3_errstr(rc);
    sqlite3_busy_timeout(db_, 5000);
  }
  ~IndexDb() { sqlite3_close(db_); }
  IndexDb(const IndexDb&) = delete;
  IndexDb& operator=(const IndexDb&) = delete;

  void Exec(const std::string& sql) {
    char* error = nullptr;
    int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &error);
    EXPECT_EQ(rc, SQLITE_OK) << (error ? error : "") << " in " << sql;
    sqlite3_free(error);
  }

  int64_t Count(const std::string& where) {
    std::string sql = "SELECT count(*) FROM db_object WHERE " + where;
    sqlite3_stmt* stmt = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db_, sql.c_str(), -1, &stmt, nullptr), SQLITE_OK) << sql;
    int64_t count = -1;
    if (sqlite3_step(stmt) == SQLITE_ROW) count = sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    return count;
  }

  struct Row {
    std::string key;
    int64_t offset;
    int64_t length;
  };
  std::vector<Row> RowsOfPack(int64_t pack_id) {
    std::string sql =
        StrCat("SELECT hashkey, \"offset\", length FROM db_object WHERE pack_id = ", pack_id,
               " ORDER BY \"offset\"");
    sqlite3_stmt* stmt = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db_, sql.c_str(), -1, &stmt, nullptr), SQLITE_OK) << sql;
    std::vector<Row> rows;
    while (sqlite3_step(stmt) == SQLITE_ROW) {
      rows.push_back(Row{reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0)),
                         sqlite3_column_int64(stmt, 1), sqlite3_column_int64(stmt, 2)});
    }
    sqlite3_finalize(stmt);
    return rows;
  }

 private:
  sqlite3* db_ = nullptr;
};

std::unique_ptr<Container> OpenWriter(const std::string& dir) {
  auto opened = Container::Open(dir, OpenMode::kWriter);
  EXPECT_TRUE(opened.ok()) << opened.status();
  return opened.ok() ? std::move(*opened) : nullptr;
}

void WriteFile(const std::string& path, std::string_view content) {
  auto fd = OpenFile(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_TRUE(fd.ok()) << fd.status();
  PS_ASSERT_OK(WriteAll(fd->get(), content));
}

void AppendFile(const std::string& path, std::string_view content) {
  auto fd = OpenFile(path, O_WRONLY | O_APPEND);
  ASSERT_TRUE(fd.ok()) << fd.status();
  PS_ASSERT_OK(WriteAll(fd->get(), content));
}

uint64_t SizeOf(const std::string& path) {
  auto size = PathSize(path);
  EXPECT_TRUE(size.ok()) << size.status();
  return size.ok() ? *size : 0;
}

void ExpectReads(Container& c, const std::map<std::string, std::string>& objects) {
  for (const auto& [key, content] : objects) {
    auto got = c.Get(key);
    ASSERT_TRUE(got.ok()) << key << ": " << got.status();
    EXPECT_TRUE(*got == content) << key << " reads back different bytes";
  }
}

// Packs `contents` in one batch and records them in `objects`.
void PutPackedInto(Container& c, const std::vector<std::string>& contents,
                   std::map<std::string, std::string>& objects,
                   CompressMode compress = CompressMode::kNo) {
  std::vector<std::string_view> views(contents.begin(), contents.end());
  auto written = c.PutPacked(views, compress);
  ASSERT_TRUE(written.ok()) << written.status();
  for (size_t i = 0; i < contents.size(); ++i) objects[(*written)[i].key] = contents[i];
}

TEST(CrashRecoveryTest, BytesPastTheLastRowStayAsAHoleAndNewWritesGoAfterThem) {
  TempDir tmp;
  const std::string dir = tmp.Sub("c");
  PS_ASSERT_OK(Container::Init(dir, {}));
  std::map<std::string, std::string> objects;
  {
    auto c = OpenWriter(dir);
    ASSERT_NE(c, nullptr);
    ASSERT_NO_FATAL_FAILURE(
        PutPackedInto(*c, {RandomBytes(1, 1000), TextBytes(2, 3000), RandomBytes(3, 10)}, objects,
                      CompressMode::kAuto));
  }
  // An append whose commit never happened: bytes no row points to.
  const std::string pack = JoinPath(dir, "packs/0");
  ASSERT_NO_FATAL_FAILURE(AppendFile(pack, RandomBytes(99, 777)));
  const uint64_t size_with_garbage = SizeOf(pack);

  auto c = OpenWriter(dir);
  ASSERT_NE(c, nullptr);
  // Never truncated: a reader may have the pack mapped.
  EXPECT_EQ(SizeOf(pack), size_with_garbage);
  ASSERT_NO_FATAL_FAILURE(ExpectReads(*c, objects));
  ASSERT_NO_FATAL_FAILURE(ExpectValid(*c));

  std::string fresh = RandomBytes(4, 2000);
  std::map<std::string, std::string> added;
  ASSERT_NO_FATAL_FAILURE(PutPackedInto(*c, {fresh, TextBytes(5, 500)}, added));
  auto info = c->Stat(Hasher::Hash(HashType::kSha256, fresh));
  ASSERT_TRUE(info.ok()) << info.status();
  ASSERT_TRUE(info->packed.has_value());
  EXPECT_EQ(info->packed->pack_id, 0);
  EXPECT_EQ(info->packed->offset, size_with_garbage);
  objects.insert(added.begin(), added.end());
  ASSERT_NO_FATAL_FAILURE(ExpectReads(*c, objects));
  ASSERT_NO_FATAL_FAILURE(ExpectValid(*c));
  auto counts = c->Counts();
  ASSERT_TRUE(counts.ok()) << counts.status();
  EXPECT_EQ(counts->hole_bytes, 777u);

  c.reset();
  c = OpenWriter(dir);
  ASSERT_NE(c, nullptr);
  ASSERT_NO_FATAL_FAILURE(ExpectReads(*c, objects));
  ASSERT_NO_FATAL_FAILURE(ExpectValid(*c));
}

TEST(CrashRecoveryTest, PackFilesWithoutRowsAreRemovedAtOpen) {
  TempDir tmp;
  const std::string dir = tmp.Sub("c");
  InitOptions options;
  options.pack_size_target = 4096;
  PS_ASSERT_OK(Container::Init(dir, options));
  std::map<std::string, std::string> objects;
  {
    auto c = OpenWriter(dir);
    ASSERT_NE(c, nullptr);
    // Two objects of 3000 bytes: both go to pack 0 (the check is made
    // before each object), which is then full.
    ASSERT_NO_FATAL_FAILURE(
        PutPackedInto(*c, {RandomBytes(1, 3000), RandomBytes(2, 3000)}, objects));
  }
  ASSERT_FALSE(PathExists(JoinPath(dir, "packs/1")));
  // The first object of a new pack, written and synced, but its rows were
  // never committed; and an unborn pack further on.
  ASSERT_NO_FATAL_FAILURE(WriteFile(JoinPath(dir, "packs/1"), RandomBytes(3, 5000)));
  ASSERT_NO_FATAL_FAILURE(WriteFile(JoinPath(dir, "packs/7"), ""));

  auto c = OpenWriter(dir);
  ASSERT_NE(c, nullptr);
  EXPECT_FALSE(PathExists(JoinPath(dir, "packs/1")));
  EXPECT_FALSE(PathExists(JoinPath(dir, "packs/7")));
  EXPECT_TRUE(PathExists(JoinPath(dir, "packs/0")));
  ASSERT_NO_FATAL_FAILURE(ExpectReads(*c, objects));
  ASSERT_NO_FATAL_FAILURE(ExpectValid(*c));

  // The next pack is made afresh: the abandoned bytes are gone, not a prefix.
  std::string fresh = RandomBytes(4, 100);
  ASSERT_NO_FATAL_FAILURE(PutPackedInto(*c, {fresh}, objects));
  auto info = c->Stat(Hasher::Hash(HashType::kSha256, fresh));
  ASSERT_TRUE(info.ok()) << info.status();
  ASSERT_TRUE(info->packed.has_value());
  EXPECT_EQ(info->packed->pack_id, 1);
  EXPECT_EQ(info->packed->offset, 0u);
  EXPECT_EQ(SizeOf(JoinPath(dir, "packs/1")), 100u);
  ASSERT_NO_FATAL_FAILURE(ExpectReads(*c, objects));
  ASSERT_NO_FATAL_FAILURE(ExpectValid(*c));
}

TEST(CrashRecoveryTest, StalePackstoreLockIsRemovedAndAForeignLockIsHonoured) {
  TempDir tmp;
  const std::string dir = tmp.Sub("c");
  PS_ASSERT_OK(Container::Init(dir, {}));
  std::map<std::string, std::string> objects;
  {
    auto c = OpenWriter(dir);
    ASSERT_NE(c, nullptr);
    ASSERT_NO_FATAL_FAILURE(PutPackedInto(*c, {RandomBytes(1, 1000)}, objects));
  }
  const std::string lock = JoinPath(dir, "packs/0.lock");

  // Left by a packstore writer that died holding it.
  ASSERT_NO_FATAL_FAILURE(WriteFile(lock, "packstore 12345\n"));
  {
    auto c = OpenWriter(dir);
    ASSERT_NE(c, nullptr);
    EXPECT_FALSE(PathExists(lock));
    ASSERT_NO_FATAL_FAILURE(PutPackedInto(*c, {RandomBytes(2, 1000)}, objects));
    ASSERT_NO_FATAL_FAILURE(ExpectReads(*c, objects));
    ASSERT_NO_FATAL_FAILURE(ExpectValid(*c));
  }

  // disk-objectstore's lock is an empty file: its packer may be appending
  // right now, so the lock stays and packstore keeps out of that pack. A
  // foreign packer's new pack (a file with a lock and no rows yet) stays too.
  ASSERT_NO_FATAL_FAILURE(WriteFile(lock, ""));
  ASSERT_NO_FATAL_FAILURE(WriteFile(JoinPath(dir, "packs/1"), RandomBytes(3, 300)));
  ASSERT_NO_FATAL_FAILURE(WriteFile(JoinPath(dir, "packs/1.lock"), ""));
  auto c = OpenWriter(dir);
  ASSERT_NE(c, nullptr);
  EXPECT_TRUE(PathExists(lock));
  EXPECT_TRUE(PathExists(JoinPath(dir, "packs/1")));
  EXPECT_TRUE(PathExists(JoinPath(dir, "packs/1.lock")));
  auto refused = c->PutPacked({RandomBytes(4, 1000)});
  EXPECT_TRUE(absl::IsUnavailable(refused.status())) << refused.status();
  std::string loose = RandomBytes(5, 1000);
  auto written = c->PutLoose(loose);
  ASSERT_TRUE(written.ok()) << written.status();
  objects[written->key] = loose;
  auto packed = c->PackAllLoose({});
  EXPECT_TRUE(absl::IsUnavailable(packed.status())) << StatusText(packed);
  ASSERT_NO_FATAL_FAILURE(ExpectReads(*c, objects));
  ASSERT_NO_FATAL_FAILURE(ExpectValid(*c));
  // The refused writes left the foreign locks alone.
  auto content = ReadSmallFile(lock);
  ASSERT_TRUE(content.ok()) << content.status();
  EXPECT_EQ(*content, "");
  EXPECT_TRUE(PathExists(JoinPath(dir, "packs/1.lock")));

  // The foreign packer is done: its pack now has rows and no lock.
  PS_ASSERT_OK(Unlink(lock));
  std::string fresh = RandomBytes(6, 1000);
  ASSERT_NO_FATAL_FAILURE(PutPackedInto(*c, {fresh}, objects));
  PS_ASSERT_OK(c->PackAllLoose({}).status());
  auto info = c->Stat(written->key);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_TRUE(info->packed.has_value());
  ASSERT_NO_FATAL_FAILURE(ExpectReads(*c, objects));
}

TEST(CrashRecoveryTest, AbandonedSandboxFilesAreRemovedAtOpen) {
  TempDir tmp;
  const std::string dir = tmp.Sub("c");
  PS_ASSERT_OK(Container::Init(dir, {}));
  const std::string abandoned = JoinPath(dir, "sandbox/ps-0123456789abcdef0123456789abcdef");
  const std::string held = JoinPath(dir, "sandbox/ps-fedcba9876543210fedcba9876543210");
  const std::string foreign = JoinPath(dir, "sandbox/tmp3k9x_e1q");
  ASSERT_NO_FATAL_FAILURE(WriteFile(abandoned, RandomBytes(1, 4000)));
  ASSERT_NO_FATAL_FAILURE(WriteFile(held, RandomBytes(2, 4000)));
  ASSERT_NO_FATAL_FAILURE(WriteFile(foreign, RandomBytes(3, 4000)));
  // A loose write in progress (in another process) holds its file's flock.
  auto held_fd = OpenFile(held, O_RDONLY);
  ASSERT_TRUE(held_fd.ok()) << held_fd.status();
  ASSERT_EQ(::flock(held_fd->get(), LOCK_EX | LOCK_NB), 0);

  {
    auto c = OpenWriter(dir);
    ASSERT_NE(c, nullptr);
    EXPECT_FALSE(PathExists(abandoned));
    EXPECT_TRUE(PathExists(held));
    // disk-objectstore's sandbox files carry no lock: only age tells.
    EXPECT_TRUE(PathExists(foreign));
    ASSERT_NO_FATAL_FAILURE(ExpectValid(*c));
  }

  held_fd = UniqueFd();  // the writer died
  timespec old[2] = {{::time(nullptr) - 2 * 3600, 0}, {::time(nullptr) - 2 * 3600, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, foreign.c_str(), old, 0), 0);
  auto c = OpenWriter(dir);
  ASSERT_NE(c, nullptr);
  ASSERT_NO_FATAL_FAILURE(ExpectNoLeftovers(dir));
  ASSERT_NO_FATAL_FAILURE(ExpectValid(*c));
}

// Where disk-objectstore's repack of pack 0 died (it copies the live
// objects to packs/-1, moves their rows to -1, removes the old file, hard
// links -1 back to the old id, moves the rows back, removes -1).
enum class RepackCrash {
  kRowsMovedOldPackPresent,
  kOldPackRemoved,
  kHardLinkedBack,
  kRowsMovedBack,
};

class InterruptedRepackTest : public ::testing::TestWithParam<RepackCrash> {};

TEST_P(InterruptedRepackTest, RecoveryLeavesNoRowOnPackMinusOne) {
  TempDir tmp;
  const std::string dir = tmp.Sub("c");
  InitOptions options;
  options.pack_size_target = 20000;
  PS_ASSERT_OK(Container::Init(dir, options));
  std::map<std::string, std::string> objects;
  std::string doomed = RandomBytes(2, 5000);
  {
    auto c = OpenWriter(dir);
    ASSERT_NE(c, nullptr);
    // Four objects fill pack 0; the next batch goes to pack 1.
    ASSERT_NO_FATAL_FAILURE(PutPackedInto(
        *c, {RandomBytes(1, 5000), doomed, RandomBytes(3, 5000), TextBytes(4, 5000)}, objects));
    ASSERT_NO_FATAL_FAILURE(
        PutPackedInto(*c, {TextBytes(5, 5000), TextBytes(6, 7000)}, objects, CompressMode::kYes));
    std::string doomed_key = Hasher::Hash(HashType::kSha256, doomed);
    auto deleted = c->Delete({doomed_key});
    ASSERT_TRUE(deleted.ok()) << deleted.status();
    ASSERT_EQ(*deleted, 1u);
    objects.erase(doomed_key);
  }

  // disk-objectstore's repack of pack 0, by hand, up to the crash.
  const std::string pack0 = JoinPath(dir, "packs/0");
  const std::string pack_tmp = JoinPath(dir, "packs/-1");
  {
    IndexDb db(dir);
    std::vector<IndexDb::Row> rows = db.RowsOfPack(0);
    ASSERT_EQ(rows.size(), 3u);
    ASSERT_EQ(db.Count("pack_id = 1"), 2);
    auto old = ReadSmallFile(pack0);
    ASSERT_TRUE(old.ok()) << old.status();
    std::string copied;
    std::string sql = "BEGIN;";
    for (const IndexDb::Row& row : rows) {
      sql += StrCat("UPDATE db_object SET pack_id = -1, \"offset\" = ", copied.size(),
                    " WHERE hashkey = '", row.key, "';");
      copied += old->substr(row.offset, row.length);
    }
    sql += "COMMIT;";
    ASSERT_NO_FATAL_FAILURE(WriteFile(pack_tmp, copied));
    db.Exec(sql);
    ASSERT_EQ(db.Count("pack_id = -1"), 3);
    if (GetParam() != RepackCrash::kRowsMovedOldPackPresent) PS_ASSERT_OK(Unlink(pack0));
    if (GetParam() == RepackCrash::kHardLinkedBack || GetParam() == RepackCrash::kRowsMovedBack) {
      PS_ASSERT_OK(Link(pack_tmp, pack0));
    }
    if (GetParam() == RepackCrash::kRowsMovedBack) {
      db.Exec("UPDATE db_object SET pack_id = 0 WHERE pack_id = -1");
    }
  }

  auto c = OpenWriter(dir);
  ASSERT_NE(c, nullptr);
  {
    IndexDb db(dir);
    EXPECT_EQ(db.Count("pack_id = -1"), 0);
    EXPECT_EQ(db.Count("pack_id < 0"), 0);
    EXPECT_EQ(db.Count("1"), 5);
  }
  ASSERT_NO_FATAL_FAILURE(ExpectNoLeftovers(dir));
  ASSERT_NO_FATAL_FAILURE(ExpectReads(*c, objects));
  auto gone = c->Has(Hasher::Hash(HashType::kSha256, doomed));
  ASSERT_TRUE(gone.ok()) << gone.status();
  EXPECT_FALSE(*gone);
  ASSERT_NO_FATAL_FAILURE(ExpectValid(*c));

  // The container goes on working: writes, a repack, and a second open.
  ASSERT_NO_FATAL_FAILURE(PutPackedInto(*c, {RandomBytes(7, 9000), RandomBytes(8, 100)}, objects));
  PS_ASSERT_OK(c->Repack({}).status());
  ASSERT_NO_FATAL_FAILURE(ExpectReads(*c, objects));
  ASSERT_NO_FATAL_FAILURE(ExpectValid(*c));
  c.reset();
  c = OpenWriter(dir);
  ASSERT_NE(c, nullptr);
  ASSERT_NO_FATAL_FAILURE(ExpectReads(*c, objects));
  ASSERT_NO_FATAL_FAILURE(ExpectValid(*c));
}

INSTANTIATE_TEST_SUITE_P(CrashRecoveryTest, InterruptedRepackTest,
                         ::testing::Values(RepackCrash::kRowsMovedOldPackPresent,
                                           RepackCrash::kOldPackRemoved,
                                           RepackCrash::kHardLinkedBack,
                                           RepackCrash::kRowsMovedBack),
                         [](const ::testing::TestParamInfo<RepackCrash>& info) {
                           switch (info.param) {
                             case RepackCrash::kRowsMovedOldPackPresent:
                               return "RowsMovedOldPackPresent";
                             case RepackCrash::kOldPackRemoved:
                               return "OldPackRemoved";
                             case RepackCrash::kHardLinkedBack:
                               return "HardLinkedBack";
                             case RepackCrash::kRowsMovedBack:
                               return "RowsMovedBack";
                           }
                           return "Unknown";
                         });

}  // namespace
}  // namespace packstore
