// Daemon benchmark: packstored over its Unix socket, each figure next to
// the same calls made to a no-op gRPC server in the same run. The no-op
// server (bench/daemon_bench_noop.proto) uses the same gRPC, the callback
// API, a Unix socket in the same folder and a process of its own, and every
// channel gets the same arguments, so a ratio reads as "the share of what
// gRPC over this socket allows that the store keeps".
//
//   daemon_bench [--quick] [--out FILE.json] [--packstored PATH] [...]
//
// (--help lists every flag.) The run starts packstored on a fresh store in
// a temporary folder (under --dir, default TMPDIR or /tmp; removed at the
// end), the no-op server, and the client processes of row 1, all before
// this process creates any gRPC channel (gRPC and fork do not mix). Rows:
//
//   1. Put of distinct random 1 KiB objects, mode packed, from 16 client
//      processes each making synchronous unary calls for a fixed time, vs
//      a no-op unary call carrying the same payload from the same
//      processes. Calls that complete inside a common window count.
//   2. PutMany of 1 KiB objects, mode packed, batches of 1000 objects per
//      request message and several messages per call: objects/s (absolute
//      target), shown against the no-op unary rate of row 1.
//   3. GetMany of N of those objects in random key order: objects/s
//      (absolute target).
//   4. Get of one 1 GiB object (put once with PutStream, packed,
//      uncompressed; read warm) vs a no-op server stream of the same bytes
//      in 1 MiB messages.
//   5. PutStream of a 1 GiB object of random bytes in 1 MiB messages, mode
//      auto (so loose), vs a no-op client stream whose server hashes every
//      byte with SHA-256 and answers the digest.
//   6. The daemon's peak RSS (VmRSS sampled every 50 ms, and the kernel's
//      VmHWM) against its mapped-cache budget (--cache-max-mapped) plus
//      64 MiB.
//
// Baselines and store measurements alternate (baseline, store, baseline,
// store...) and each round's ratio is taken against the baseline measured
// next to it; the verdict holds the median of the rounds' ratios (or, for
// an absolute target, of the rounds' figures) against the target. Writes
// are durable, and the disk is flushed (sync) before each timed write, on
// both sides. Every answer is checked (keys, sizes, bytes); whatever costs
// more than a comparison (hashing, comparing bytes) runs before the timed
// parts, in a checking pass of its own, or on the warm-up calls of row 1.
//
// The exit code is 0 when the run completes, targets met or not (the
// SUMMARY line says which), and 1 when a store call failed or answered
// wrong data, when the daemon died, or when the benchmark itself could not
// run.
#include <grpcpp/grpcpp.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <numeric>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "bench/daemon_bench_noop.grpc.pb.h"
#include "bench/daemon_bench_noop_server.h"
#include "bench/daemon_bench_support.h"
#include "common/hasher.h"
#include "common/str_cat.h"
#include "packstore/v1/packstore.grpc.pb.h"

namespace packstore::bench {
namespace {

namespace v1 = ::packstore::v1;

// Targets from the issue that introduced this harness.
constexpr double kPutTargetRatio = 0.60;        // x no-op unary calls/s
constexpr double kPutManyTarget = 100000;       // objects/s
constexpr double kGetManyTarget = 200000;       // objects/s
constexpr double kGetTargetRatio = 0.80;        // x no-op server stream
constexpr double kPutStreamTargetRatio = 0.70;  // x no-op client stream + SHA-256
constexpr uint64_t kRssMargin = 64 * kMiB;      // over the cache budget

// Send and receive limit of every channel and of the no-op server.
constexpr uint64_t kMaxMessage = 64 * kMiB;
// The daemon refuses writes when its file system has less free space than
// this (its default reserve); the disk check counts it in.
constexpr uint64_t kDaemonFreeReserve = kGiB;
// Bound used to size the disk the unary Puts of row 1 may take.
constexpr double kUnaryCallsPerSecondBound = 20000;

// --- Flags ---

struct Flags {
  bool quick = false;
  std::string out;
  std::string packstored;
  std::vector<std::string> daemon_args;
  std::string parent_dir;
  bool noop_only = false;
  bool keep = false;
  // Rows to run (1 to 5; empty: all). Row 6 covers whatever ran.
  std::set<int> rows;
  int clients = 16;
  double seconds = 5;
  double warmup = 0.5;
  int rounds = 3;
  uint64_t object_size = kKiB;
  uint64_t putmany_objects = 100000;
  uint64_t putmany_batch = 1000;
  uint64_t putmany_messages = 10;
  uint64_t getmany_objects = 100000;
  uint64_t getmany_batch = 10000;
  uint64_t big_size = kGiB;
  uint64_t chunk = kMiB;
  uint64_t cache_max_mapped = 256 * kMiB;
};

constexpr char kUsage[] =
    "usage: daemon_bench [--quick] [--out FILE.json] [--packstored PATH] [flags]\n"
    "  --quick                 small sizes and short windows: a check that everything works\n"
    "                          (figures not meant to be compared), about 10 s\n"
    "  --out FILE.json         also write the results as JSON\n"
    "  --packstored PATH       the daemon (default: ../server/daemon/packstored next to\n"
    "                          this binary's folder)\n"
    "  --daemon-arg ARG        one more argument for packstored (repeatable)\n"
    "  --noop-only             measure the no-op baselines only (no daemon)\n"
    "  --rows LIST             run only these rows, e.g. 1,4 (row 3 needs row 2's objects,\n"
    "                          so 3 runs 2 too; row 6 covers whatever ran)\n"
    "  --dir PARENT            where the temporary folder is made (default TMPDIR or /tmp)\n"
    "  --keep                  keep the temporary folder (the store, the daemon's log)\n"
    "  --clients N             client processes of row 1 (default 16)\n"
    "  --seconds S             counted window of each row 1 measurement (default 5; quick 1)\n"
    "  --warmup S              warm-up before each window (default 0.5; quick 0.25)\n"
    "  --rounds N              baseline/store rounds per row (default 3; quick 2)\n"
    "  --object-size BYTES     small objects (default 1K; at least 16)\n"
    "  --putmany-objects N     PutMany objects per round (default 100000; quick 10000)\n"
    "  --putmany-batch N       objects per PutMany request message (default 1000)\n"
    "  --putmany-messages N    request messages per PutMany call (default 10)\n"
    "  --getmany-objects N     objects read by each GetMany pass (default 100000; quick\n"
    "                          10000); at most rounds x --putmany-objects\n"
    "  --getmany-batch N       keys per GetMany call (default 10000)\n"
    "  --big-size BYTES        the large object of rows 4 and 5 (default 1G; quick 64M)\n"
    "  --chunk BYTES           stream message size (default 1M; at most 4M)\n"
    "  --cache-max-mapped BYTES  the daemon's --cache-max-mapped (default 256M)\n"
    "Sizes take a K, M or G suffix (binary). Exit code 0 when the run completes.\n";

Flags ParseFlags(int argc, char** argv) {
  Flags flags;
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--quick") {
      flags.quick = true;
      flags.seconds = 1;
      flags.warmup = 0.25;
      flags.rounds = 2;
      flags.putmany_objects = 10000;
      flags.getmany_objects = 10000;
      flags.getmany_batch = 5000;
      flags.big_size = 64 * kMiB;
    }
  }
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (arg == "--quick") continue;
    if (arg == "--noop-only") {
      flags.noop_only = true;
      continue;
    }
    if (arg == "--keep") {
      flags.keep = true;
      continue;
    }
    std::string_view name = arg;
    std::optional<std::string_view> value;
    if (size_t eq = arg.find('='); eq != std::string_view::npos && arg.starts_with("--")) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
    }
    if (!value && i + 1 < argc) value = argv[++i];
    if (!value) Die(StrCat(name, " needs a value\n", kUsage));
    auto size = [&]() -> uint64_t {
      std::optional<uint64_t> n = ParseSize(*value);
      if (!n) Die(StrCat("bad value for ", name, ": ", *value));
      return *n;
    };
    auto seconds = [&]() -> double {
      std::optional<double> s = ParseSeconds(*value);
      if (!s) Die(StrCat("bad value for ", name, ": ", *value));
      return *s;
    };
    if (name == "--out") {
      flags.out = std::string(*value);
    } else if (name == "--packstored") {
      flags.packstored = std::string(*value);
    } else if (name == "--daemon-arg") {
      flags.daemon_args.emplace_back(*value);
    } else if (name == "--rows") {
      std::string list(*value);
      std::istringstream items(list);
      std::string item;
      while (std::getline(items, item, ',')) {
        int n = std::atoi(item.c_str());
        if (n < 1 || n > 6 || item != std::to_string(n)) Die("bad --rows: " + list);
        flags.rows.insert(n);
      }
    } else if (name == "--dir") {
      flags.parent_dir = std::string(*value);
    } else if (name == "--clients") {
      flags.clients = static_cast<int>(size());
    } else if (name == "--seconds") {
      flags.seconds = seconds();
    } else if (name == "--warmup") {
      flags.warmup = seconds();
    } else if (name == "--rounds") {
      flags.rounds = static_cast<int>(size());
    } else if (name == "--object-size") {
      flags.object_size = size();
    } else if (name == "--putmany-objects") {
      flags.putmany_objects = size();
    } else if (name == "--putmany-batch") {
      flags.putmany_batch = size();
    } else if (name == "--putmany-messages") {
      flags.putmany_messages = size();
    } else if (name == "--getmany-objects") {
      flags.getmany_objects = size();
    } else if (name == "--getmany-batch") {
      flags.getmany_batch = size();
    } else if (name == "--big-size") {
      flags.big_size = size();
    } else if (name == "--chunk") {
      flags.chunk = size();
    } else if (name == "--cache-max-mapped") {
      flags.cache_max_mapped = size();
    } else {
      Die(StrCat("unknown argument ", arg, "\n", kUsage));
    }
  }
  if (flags.clients < 1 || flags.clients > 256) Die("--clients must be 1 to 256");
  if (flags.rounds < 1 || flags.rounds > 100) Die("--rounds must be 1 to 100");
  // Objects carry a 16-byte name that keeps them distinct (duplicates
  // would be stored once and skew every rate).
  if (flags.object_size < 16 || flags.object_size > 4 * kMiB) {
    Die("--object-size must be 16 bytes to 4 MiB");
  }
  if (flags.putmany_objects == 0 || flags.putmany_batch == 0 || flags.putmany_messages == 0 ||
      flags.getmany_objects == 0 || flags.getmany_batch == 0) {
    Die("object counts and batch sizes must be positive");
  }
  if (flags.getmany_objects > flags.putmany_objects * static_cast<uint64_t>(flags.rounds)) {
    Die("--getmany-objects must be at most --rounds x --putmany-objects (it reads what PutMany "
        "wrote)");
  }
  if (flags.chunk == 0 || flags.chunk > kNoopMaxChunk) Die("--chunk must be 1 byte to 4 MiB");
  if (flags.big_size == 0) Die("--big-size must be positive");
  if (flags.parent_dir.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    flags.parent_dir = tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
  }
  return flags;
}

// --- Data ---

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Small object `index` of `stream` (a worker, or PutMany): a 16-byte name,
// then pseudo-random bytes seeded by it. Distinct names give distinct
// objects; the same name always gives the same bytes.
void FillObject(char* out, size_t size, uint64_t stream, uint64_t index) {
  std::memcpy(out, &stream, 8);
  std::memcpy(out + 8, &index, 8);
  uint64_t state = stream * 0x100000001b3ULL ^ (index + 0x5bd1e995ULL);
  for (size_t i = 16; i < size; i += 8) {
    uint64_t v = SplitMix64(state);
    std::memcpy(out + i, &v, std::min<size_t>(8, size - i));
  }
}

// Deterministic random bytes of any length, generated as they are sent so
// that a GiB-sized object never sits in memory: 1 MiB block k is the
// pattern read from offset k % 4096, so nothing repeats within 4 GiB and
// every byte costs one memcpy, far less than what is measured. Different
// seeds give different objects.
class PatternBytes {
 public:
  static constexpr size_t kBlock = kMiB;
  static constexpr size_t kShifts = 4096;

  explicit PatternBytes(uint64_t seed) : pattern_(kBlock + kShifts, '\0') {
    uint64_t state = seed * 0x2545f4914f6cdd1dULL + 1;
    for (size_t i = 0; i + 8 <= pattern_.size(); i += 8) {
      uint64_t v = SplitMix64(state);
      std::memcpy(pattern_.data() + i, &v, 8);
    }
  }

  void Fill(uint64_t position, char* buf, size_t n) const {
    while (n > 0) {
      uint64_t block = position / kBlock;
      size_t within = static_cast<size_t>(position % kBlock);
      size_t take = std::min(n, kBlock - within);
      std::memcpy(buf, pattern_.data() + block % kShifts + within, take);
      buf += take;
      position += take;
      n -= take;
    }
  }

 private:
  std::string pattern_;
};

std::string Sha256Hex(std::string_view data) { return Hasher::Hash(HashType::kSha256, data); }

// --- gRPC helpers ---

std::chrono::system_clock::time_point After(double seconds) {
  return std::chrono::system_clock::now() +
         std::chrono::microseconds(static_cast<int64_t>(seconds * 1e6));
}

// The same arguments for every channel, to the daemon and to the no-op
// server alike.
std::shared_ptr<grpc::Channel> Connect(const std::string& socket_path) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(static_cast<int>(kMaxMessage));
  args.SetMaxSendMessageSize(static_cast<int>(kMaxMessage));
  return grpc::CreateCustomChannel("unix:" + socket_path, grpc::InsecureChannelCredentials(), args);
}

std::string Describe(const grpc::Status& status) {
  static constexpr const char* kCodes[] = {"OK",
                                           "CANCELLED",
                                           "UNKNOWN",
                                           "INVALID_ARGUMENT",
                                           "DEADLINE_EXCEEDED",
                                           "NOT_FOUND",
                                           "ALREADY_EXISTS",
                                           "PERMISSION_DENIED",
                                           "RESOURCE_EXHAUSTED",
                                           "FAILED_PRECONDITION",
                                           "ABORTED",
                                           "OUT_OF_RANGE",
                                           "UNIMPLEMENTED",
                                           "INTERNAL",
                                           "UNAVAILABLE",
                                           "DATA_LOSS",
                                           "UNAUTHENTICATED"};
  int code = static_cast<int>(status.error_code());
  std::string name = code >= 0 && code <= 16 ? kCodes[code] : StrCat("code ", code);
  return StrCat(name, ": ", status.error_message());
}

// Ends a server stream early (the answer was already wrong): cancels it and
// reads what is left, so that the call ends before its reader goes away.
template <typename Reader, typename Message>
void CancelAndDrain(grpc::ClientContext& context, Reader& reader, Message& message) {
  context.TryCancel();
  while (reader.Read(&message)) {
  }
  reader.Finish();
}

// A long deadline for calls that move a lot of data: a wedged daemon ends
// the run instead of hanging it.
constexpr double kCallDeadline = 900;

// --- Client processes of row 1 ---
//
// Each is this binary run as "--role unary-client". Commands arrive one per
// line on stdin, answers leave on stdout:
//   prepare noop|store  -> "ready" once connected and one checked call made,
//                          or "error MESSAGE"
//   go START END        -> calls back to back until CLOCK_MONOTONIC END
//                          (nanoseconds), then "done COUNT ERRORS CHECKED
//                          WRONG FIRST_ERROR": COUNT calls completed OK
//                          within [START, END]; answers of calls completing
//                          before START (the warm-up) are CHECKED, WRONG of
//                          them had a wrong key or size
//   quit
int RunUnaryClient(int id, uint64_t size, const std::string& noop_socket,
                   const std::string& store_socket) {
  SetProgramName(StrCat("daemon_bench client ", id));
  std::unique_ptr<Noop::Stub> noop;
  std::unique_ptr<v1::ObjectStore::Stub> store;
  std::shared_ptr<grpc::Channel> noop_channel;
  std::shared_ptr<grpc::Channel> store_channel;
  EchoRequest echo;
  echo.mutable_data()->resize(size);
  v1::PutRequest put;
  put.mutable_options()->set_mode(v1::PUT_MODE_PACKED);
  put.mutable_options()->set_compression(v1::COMPRESSION_NO);
  put.mutable_data()->resize(size);
  const uint64_t stream = 1000 + static_cast<uint64_t>(id);
  uint64_t counter = 0;
  bool to_store = false;

  // One call with a fresh payload; on a store call with `check`, *wrong is
  // set when the answer is not the payload's key and size.
  auto call = [&](bool check, bool* wrong) -> grpc::Status {
    grpc::ClientContext context;
    context.set_deadline(After(60));
    if (to_store) {
      FillObject(put.mutable_data()->data(), size, stream, counter++);
      v1::PutResponse response;
      grpc::Status status = store->Put(&context, put, &response);
      if (status.ok() && check) {
        *wrong =
            response.object().size() != size || response.object().key() != Sha256Hex(put.data());
      }
      return status;
    }
    FillObject(echo.mutable_data()->data(), size, stream, counter++);
    EchoResponse response;
    return noop->Echo(&context, echo, &response);
  };
  auto reply = [](const std::string& line) {
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
  };

  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream words(line);
    std::string command;
    words >> command;
    if (command == "quit") break;
    if (command == "prepare") {
      std::string target;
      words >> target;
      to_store = target == "store";
      if (to_store && store_socket.empty()) {
        reply("error no store socket");
        continue;
      }
      std::shared_ptr<grpc::Channel>& channel = to_store ? store_channel : noop_channel;
      if (channel == nullptr) {
        channel = Connect(to_store ? store_socket : noop_socket);
        if (to_store) {
          store = v1::ObjectStore::NewStub(channel);
        } else {
          noop = Noop::NewStub(channel);
        }
      }
      if (!channel->WaitForConnected(After(10))) {
        reply("error cannot connect within 10 s");
        continue;
      }
      bool wrong = false;
      grpc::Status status = call(true, &wrong);
      if (!status.ok()) {
        reply("error " + Describe(status));
      } else if (wrong) {
        reply("error Put answered a wrong key or size");
      } else {
        reply("ready");
      }
    } else if (command == "go") {
      int64_t start = 0;
      int64_t end = 0;
      words >> start >> end;
      uint64_t count = 0, errors = 0, checked = 0, wrong_answers = 0;
      std::string first_error;
      while (true) {
        bool wrong = false;
        const bool check = to_store && MonotonicNanos() < start;
        grpc::Status status = call(check, &wrong);
        int64_t now = MonotonicNanos();
        if (!status.ok()) {
          ++errors;
          if (first_error.empty()) first_error = Describe(status);
        } else if (now >= start && now <= end) {
          ++count;
        }
        if (status.ok() && check) {
          ++checked;
          if (wrong) ++wrong_answers;
        }
        if (now >= end) break;
        // A dead server fails calls at once: do not spin on it.
        if (!status.ok()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      for (char& c : first_error) {
        if (c == '\n') c = ' ';
      }
      reply(
          StrCat("done ", count, " ", errors, " ", checked, " ", wrong_answers, " ", first_error));
    } else {
      reply("error unknown command " + command);
    }
  }
  return 0;
}

// --- The coordinator ---

struct Env {
  Flags flags;
  std::string self;
  std::string work;
  std::string noop_socket;
  std::string store_socket;
  std::string store_dir;
  std::string daemon_log;
  std::string packstored;
  Child noop_server;
  Child daemon;
  std::vector<Child> clients;
  std::unique_ptr<RssSampler> rss;
  std::shared_ptr<grpc::Channel> noop_channel;
  std::shared_ptr<grpc::Channel> store_channel;
  std::unique_ptr<Noop::Stub> noop;
  std::unique_ptr<v1::ObjectStore::Stub> store;
  bool with_daemon = false;
  std::vector<std::string> notes;
  bool store_failed = false;
};

Env* g_env = nullptr;

std::string LogTail(const std::string& path, size_t lines) {
  std::ifstream in(path);
  std::vector<std::string> all;
  std::string line;
  while (std::getline(in, line)) all.push_back(line);
  size_t first = all.size() > lines ? all.size() - lines : 0;
  std::string out;
  for (size_t i = first; i < all.size(); ++i) out += "  | " + all[i] + "\n";
  return out;
}

void CleanUpOnDeath() {
  Env* env = g_env;
  KillAllChildren();
  if (env == nullptr) return;
  if (!env->daemon_log.empty()) {
    std::string tail = LogTail(env->daemon_log, 30);
    if (!tail.empty()) std::fprintf(stderr, "packstored's log (last lines):\n%s", tail.c_str());
  }
  if (!env->work.empty()) {
    if (env->flags.keep) {
      std::fprintf(stderr, "kept %s\n", env->work.c_str());
    } else {
      std::error_code ignored;
      std::filesystem::remove_all(env->work, ignored);
    }
  }
}

// Names what runs now, for the progress shown on stderr and for the RSS
// peaks, which are kept per row ("row 1, round 2: Put" counts as "row 1").
void Phase(Env& env, const std::string& name) {
  if (env.rss != nullptr) env.rss->SetPhase(name.substr(0, name.find_first_of(",:")));
  std::fprintf(stderr, "  %s\n", name.c_str());
}

// Durable writes of one measurement must not pay for the dirty pages of
// the one before: flushed before every timed write, baseline or store.
void SettleDisk() { ::sync(); }

// Fails the run's exit code and the row when the store misbehaves, without
// stopping the rows that do not depend on it.
void StoreFailure(Env& env, Row& row, const std::string& what) {
  env.store_failed = true;
  row.verdict = Verdict::kFailed;
  row.note = row.note.empty() ? what : row.note + "; " + what;
  std::fprintf(stderr, "  store failure (%s): %s\n", row.id.c_str(), what.c_str());
}

// Phase() for a store measurement: false (and the row failed) when the
// daemon has exited, whose calls would only wait for connections.
bool StorePhase(Env& env, Row& row, const std::string& name) {
  if (Exited(env.daemon)) {
    if (row.verdict != Verdict::kFailed) {
      StoreFailure(env, row,
                   StrCat("packstored exited during the run (",
                          DescribeWaitStatus(*env.daemon.wait_status), ")"));
    }
    return false;
  }
  Phase(env, name);
  return true;
}

bool Selected(const Env& env, int row) {
  return env.flags.rows.empty() || env.flags.rows.contains(row);
}

Row Unselected(Row row) {
  row.selected = false;
  row.verdict = Verdict::kNotRun;
  row.note = "left out (--rows)";
  return row;
}

void SetVerdict(Row& row, double judged, double threshold, bool at_least) {
  row.judged = judged;
  row.threshold = threshold;
  if (row.verdict == Verdict::kFailed) return;
  bool met = at_least ? judged >= threshold : judged <= threshold;
  row.verdict = met ? Verdict::kMet : Verdict::kMissed;
}

// -- Start-up --

void StartChildren(Env& env) {
  const Flags& f = env.flags;
  env.noop_server = Spawn({env.self, "--role", "noop-server", "--socket", env.noop_socket,
                           "--max-message", std::to_string(kMaxMessage)},
                          /*pipes=*/true, "", SIGKILL);
  if (env.with_daemon) {
    std::vector<std::string> argv = {env.packstored,       "--store",
                                     env.store_dir,        "--init",
                                     "--socket",           env.store_socket,
                                     "--cache-max-mapped", StrCat(f.cache_max_mapped / kMiB, "MiB"),
                                     "--auto-pack",        "false",
                                     "--log-level",        "warn"};
    for (const std::string& a : f.daemon_args) argv.push_back(a);
    std::string command;
    for (const std::string& a : argv) command += (command.empty() ? "" : " ") + a;
    env.notes.push_back("daemon command: " + command);
    env.daemon = Spawn(argv, /*pipes=*/false, env.daemon_log, SIGTERM);
  }
  for (int i = 0; i < f.clients; ++i) {
    std::vector<std::string> argv = {env.self,
                                     "--role",
                                     "unary-client",
                                     "--id",
                                     std::to_string(i),
                                     "--size",
                                     std::to_string(f.object_size),
                                     "--noop-socket",
                                     env.noop_socket};
    if (env.with_daemon) {
      argv.push_back("--store-socket");
      argv.push_back(env.store_socket);
    }
    env.clients.push_back(Spawn(argv, /*pipes=*/true, "", SIGKILL));
  }
}

void WaitForNoopServer(Env& env) {
  std::optional<std::string> line = ReadLine(env.noop_server, 30);
  if (!line || *line != "ready") Die("the no-op server did not start");
  env.noop_channel = Connect(env.noop_socket);
  env.noop = Noop::NewStub(env.noop_channel);
  grpc::ClientContext context;
  context.set_deadline(After(10));
  EchoRequest request;
  EchoResponse response;
  grpc::Status status = env.noop->Echo(&context, request, &response);
  if (!status.ok()) Die("the no-op server does not answer: " + Describe(status));
}

// Polls Status until the daemon answers. Its socket does not exist until
// it listens; a fresh channel per attempt avoids gRPC's reconnect backoff.
v1::StatusResponse WaitForDaemon(Env& env) {
  Stopwatch watch;
  std::string last_error = "its socket did not appear";
  while (watch.Seconds() < 60) {
    if (Exited(env.daemon)) {
      Die(StrCat("packstored exited before serving (", DescribeWaitStatus(*env.daemon.wait_status),
                 ")"));
    }
    struct stat st;
    if (::stat(env.store_socket.c_str(), &st) == 0) {
      auto channel = Connect(env.store_socket);
      auto stub = v1::ObjectStore::NewStub(channel);
      grpc::ClientContext context;
      context.set_deadline(After(2));
      context.set_wait_for_ready(true);
      v1::StatusResponse response;
      grpc::Status status = stub->Status(&context, v1::StatusRequest(), &response);
      if (status.ok()) {
        env.notes.push_back(StrCat("packstored answered Status ", Fixed(watch.Seconds(), 2),
                                   " s after it was started (version \"", response.version(),
                                   "\")"));
        env.store_channel = Connect(env.store_socket);
        env.store = v1::ObjectStore::NewStub(env.store_channel);
        return response;
      }
      last_error = Describe(status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  Die("packstored did not answer Status within 60 s: " + last_error);
}

// -- Row 1: unary Put vs no-op unary --

struct Window {
  double calls_per_second = 0;
  uint64_t errors = 0;
  uint64_t checked = 0;
  uint64_t wrong = 0;
  std::string first_error;
};

Window UnaryWindow(Env& env, bool to_store) {
  const Flags& f = env.flags;
  SettleDisk();
  for (Child& c : env.clients) {
    if (!WriteLine(c, to_store ? "prepare store" : "prepare noop")) {
      Die("a client process of row 1 is gone");
    }
  }
  Window w;
  for (Child& c : env.clients) {
    std::optional<std::string> line = ReadLine(c, 60);
    if (!line) Die("a client process of row 1 did not answer prepare");
    if (*line != "ready") {
      if (!to_store) Die("no-op Echo: " + *line);
      ++w.errors;
      if (w.first_error.empty()) w.first_error = *line;
    }
  }
  if (w.errors > 0) return w;
  const int64_t start = MonotonicNanos() + 50000000 + static_cast<int64_t>(f.warmup * 1e9);
  const int64_t end = start + static_cast<int64_t>(f.seconds * 1e9);
  for (Child& c : env.clients) WriteLine(c, StrCat("go ", start, " ", end));
  uint64_t total = 0;
  for (Child& c : env.clients) {
    std::optional<std::string> line = ReadLine(c, f.warmup + f.seconds + 120);
    if (!line) Die("a client process of row 1 did not report");
    std::istringstream words(*line);
    std::string done;
    uint64_t count = 0, errors = 0, checked = 0, wrong = 0;
    words >> done >> count >> errors >> checked >> wrong;
    if (done != "done") Die("a client process of row 1 answered: " + *line);
    std::string first_error;
    std::getline(words, first_error);
    total += count;
    w.errors += errors;
    w.checked += checked;
    w.wrong += wrong;
    if (w.first_error.empty() && !first_error.empty()) w.first_error = first_error.substr(1);
  }
  if (!to_store && w.errors > 0) Die("no-op Echo calls failed: " + w.first_error);
  w.calls_per_second = static_cast<double>(total) / f.seconds;
  return w;
}

Row PutUnaryRow(Env& env) {
  const Flags& f = env.flags;
  Row row;
  row.id = "put_unary";
  row.label = "1. Put";
  row.measurement = StrCat("1. Put ", Bytes(f.object_size), ", packed, ", f.clients,
                           f.clients == 1 ? " process" : " processes", " (sync unary)");
  row.unit = "calls/s";
  row.baseline_name = StrCat("no-op unary ", Bytes(f.object_size));
  row.target = StrCat(">= ", Fixed(kPutTargetRatio, 2), "x no-op");
  if (!Selected(env, 1)) return Unselected(row);
  for (int r = 0; r < f.rounds; ++r) {
    Phase(env, StrCat("row 1, round ", r + 1, ": no-op unary"));
    row.baseline.push_back(UnaryWindow(env, false).calls_per_second);
    if (!env.with_daemon) continue;
    if (!StorePhase(env, row, StrCat("row 1, round ", r + 1, ": Put"))) break;
    Window w = UnaryWindow(env, true);
    row.store.push_back(w.calls_per_second);
    row.ratios.push_back(w.calls_per_second / row.baseline.back());
    if (w.errors > 0) {
      StoreFailure(
          env, row,
          StrCat(w.errors, " Put calls failed in round ", r + 1, ", first: ", w.first_error));
    }
    if (w.wrong > 0) {
      StoreFailure(
          env, row,
          StrCat(w.wrong, " of ", w.checked, " checked Put answers had a wrong key or size"));
    }
    if (r == 0) {
      env.notes.push_back(StrCat("row 1: ", w.checked,
                                 " Put answers of the first round's warm-up checked against "
                                 "the payloads' SHA-256"));
    }
  }
  if (env.with_daemon) {
    SetVerdict(row, Median(row.ratios), kPutTargetRatio, true);
  } else {
    row.verdict = Verdict::kNotRun;
  }
  return row;
}

// -- Row 2: PutMany --

// Puts objects [first, first + count) of the PutMany stream; every answer
// is checked against `keys`. Returns an error, or "" and the time taken.
std::string PutManyRound(Env& env, uint64_t first, uint64_t count,
                         const std::vector<std::string>& keys, double* seconds) {
  const Flags& f = env.flags;
  const uint64_t per_call = f.putmany_batch * f.putmany_messages;
  const size_t size = f.object_size;
  Stopwatch watch;
  for (uint64_t call_first = first; call_first < first + count; call_first += per_call) {
    const uint64_t call_end = std::min(first + count, call_first + per_call);
    grpc::ClientContext context;
    context.set_deadline(After(kCallDeadline));
    auto stream = env.store->PutMany(&context);
    std::string reader_error;
    uint64_t answered = call_first;
    std::thread reader([&] {
      v1::PutManyResponse response;
      while (stream->Read(&response)) {
        for (const v1::ObjectRef& ref : response.objects()) {
          if (answered >= call_end) {
            if (reader_error.empty()) reader_error = "PutMany answered more objects than sent";
            continue;
          }
          if (reader_error.empty() && (ref.key() != keys[answered] || ref.size() != size)) {
            reader_error = StrCat("PutMany answered key ", ref.key(), " size ", ref.size(),
                                  " for object ", answered, " (expected ", keys[answered], ")");
          }
          ++answered;
        }
      }
    });
    v1::PutManyRequest request;
    request.mutable_options()->set_mode(v1::PUT_MODE_PACKED);
    request.mutable_options()->set_compression(v1::COMPRESSION_NO);
    bool write_ok = true;
    for (uint64_t i = call_first; i < call_end && write_ok;) {
      request.clear_objects();
      for (uint64_t j = 0; j < f.putmany_batch && i < call_end; ++j, ++i) {
        std::string* object = request.add_objects();
        object->resize(size);
        FillObject(object->data(), size, 1, i);
      }
      write_ok = stream->Write(request);
      request.clear_options();
    }
    stream->WritesDone();
    reader.join();
    grpc::Status status = stream->Finish();
    if (!status.ok()) return "PutMany: " + Describe(status);
    if (!reader_error.empty()) return reader_error;
    if (answered != call_end) {
      return StrCat("PutMany answered ", answered - call_first, " of ", call_end - call_first,
                    " objects");
    }
  }
  *seconds = watch.Seconds();
  return "";
}

Row PutManyRow(Env& env, double noop_unary_rate, std::vector<std::string>* keys, bool* ok) {
  const Flags& f = env.flags;
  *ok = false;
  Row row;
  row.id = "put_many";
  row.label = "2. PutMany";
  row.measurement = StrCat("2. PutMany ", Bytes(f.object_size), ", packed, ", f.putmany_batch,
                           " objects/message, ", f.putmany_messages, " messages/call");
  row.unit = "obj/s";
  row.baseline_name = StrCat("no-op unary ", Bytes(f.object_size), " (row 1, median)");
  if (noop_unary_rate > 0) row.baseline = {noop_unary_rate};
  row.target = StrCat(">= ", Grouped(kPutManyTarget), " obj/s");
  if (!Selected(env, 2) && !Selected(env, 3)) return Unselected(row);
  if (!env.with_daemon) {
    row.verdict = Verdict::kNotRun;
    return row;
  }
  // The keys every answer is checked against, computed before timing.
  const uint64_t total = f.putmany_objects * static_cast<uint64_t>(f.rounds);
  keys->resize(total);
  std::string object(f.object_size, '\0');
  for (uint64_t i = 0; i < total; ++i) {
    FillObject(object.data(), object.size(), 1, i);
    (*keys)[i] = Sha256Hex(object);
  }
  for (int r = 0; r < f.rounds; ++r) {
    if (!StorePhase(env, row, StrCat("row 2, round ", r + 1, ": PutMany"))) return row;
    SettleDisk();
    double seconds = 0;
    std::string error =
        PutManyRound(env, r * f.putmany_objects, f.putmany_objects, *keys, &seconds);
    if (!error.empty()) {
      StoreFailure(env, row, StrCat("round ", r + 1, ": ", error));
      return row;
    }
    row.store.push_back(static_cast<double>(f.putmany_objects) / seconds);
    if (noop_unary_rate > 0) row.ratios.push_back(row.store.back() / noop_unary_rate);
  }
  SetVerdict(row, Median(row.store), kPutManyTarget, true);
  if (!row.ratios.empty()) {
    row.ratio_text = StrCat(Fixed(Median(row.ratios), 1), "x no-op unary (median)");
  }
  *ok = true;
  return row;
}

// -- Row 3: GetMany --

// Counts one piece of a GetMany answer; with `verify`, checks it (see
// GetManyPass). Returns an error, or "".
std::string CheckPiece(const v1::ObjectPiece& piece, uint64_t size, bool verify, uint64_t* objects,
                       uint64_t* bytes, uint64_t* split_objects,
                       std::unordered_set<std::string>& seen,
                       std::unordered_map<std::string, std::string>& partial) {
  if (piece.missing()) return "GetMany reported a stored key missing: " + piece.key();
  *bytes += piece.data().size();
  const bool last = piece.offset() + piece.data().size() == piece.size();
  if (last) ++*objects;
  if (!verify) return "";
  if (piece.size() != size) {
    return StrCat("GetMany: object ", piece.key(), " has size ", piece.size());
  }
  std::string content;
  if (piece.offset() == 0 && last) {
    content = piece.data();
  } else {
    std::string& so_far = partial[piece.key()];
    if (so_far.size() != piece.offset()) return "GetMany: pieces out of order for " + piece.key();
    so_far += piece.data();
    if (!last) return "";
    ++*split_objects;
    content = std::move(so_far);
    partial.erase(piece.key());
  }
  if (Sha256Hex(content) != piece.key()) return "GetMany: wrong bytes for " + piece.key();
  if (!seen.insert(piece.key()).second) return "GetMany: sent twice: " + piece.key();
  return "";
}

// One pass over `requests`; with `verify`, every object is hashed and must
// match its key, and each must come exactly once.
std::string GetManyPass(Env& env, const std::vector<v1::GetManyRequest>& requests,
                        uint64_t expected, bool verify, double* seconds, uint64_t* messages,
                        uint64_t* split_objects) {
  const uint64_t size = env.flags.object_size;
  uint64_t objects = 0;
  uint64_t bytes = 0;
  *messages = 0;
  *split_objects = 0;
  std::unordered_set<std::string> seen;
  std::unordered_map<std::string, std::string> partial;
  Stopwatch watch;
  for (const v1::GetManyRequest& request : requests) {
    grpc::ClientContext context;
    context.set_deadline(After(kCallDeadline));
    auto reader = env.store->GetMany(&context, request);
    v1::GetManyResponse response;
    std::string error;
    while (error.empty() && reader->Read(&response)) {
      ++*messages;
      for (const v1::ObjectPiece& piece : response.pieces()) {
        error = CheckPiece(piece, size, verify, &objects, &bytes, split_objects, seen, partial);
        if (!error.empty()) break;
      }
    }
    if (!error.empty()) {
      CancelAndDrain(context, *reader, response);
      return error;
    }
    grpc::Status status = reader->Finish();
    if (!status.ok()) return "GetMany: " + Describe(status);
  }
  *seconds = watch.Seconds();
  if (objects != expected || bytes != expected * size) {
    return StrCat("GetMany delivered ", objects, " objects and ", bytes, " bytes for ", expected,
                  " objects of ", size);
  }
  if (verify) {
    for (const v1::GetManyRequest& request : requests) {
      for (const std::string& key : request.keys()) {
        if (!seen.contains(key)) return "GetMany did not send " + key;
      }
    }
  }
  return "";
}

Row GetManyRow(Env& env, double noop_unary_rate, const std::vector<std::string>& keys,
               bool have_objects) {
  const Flags& f = env.flags;
  Row row;
  row.id = "get_many";
  row.label = "3. GetMany";
  row.measurement = StrCat("3. GetMany ", Grouped(static_cast<double>(f.getmany_objects)), " x ",
                           Bytes(f.object_size), " packed, random key order, ",
                           Grouped(static_cast<double>(f.getmany_batch)), " keys/call");
  row.unit = "obj/s";
  row.baseline_name = StrCat("no-op unary ", Bytes(f.object_size), " (row 1, median)");
  if (noop_unary_rate > 0) row.baseline = {noop_unary_rate};
  row.target = StrCat(">= ", Grouped(kGetManyTarget), " obj/s");
  if (!Selected(env, 3)) return Unselected(row);
  if (!env.with_daemon || !have_objects) {
    row.verdict = Verdict::kNotRun;
    if (env.with_daemon) row.note = "PutMany failed";
    return row;
  }
  std::vector<std::string> chosen(keys.begin(), keys.begin() + f.getmany_objects);
  std::shuffle(chosen.begin(), chosen.end(), std::mt19937_64(11));
  std::vector<v1::GetManyRequest> requests;
  for (uint64_t first = 0; first < chosen.size(); first += f.getmany_batch) {
    v1::GetManyRequest& request = requests.emplace_back();
    for (uint64_t i = first; i < std::min<uint64_t>(chosen.size(), first + f.getmany_batch); ++i) {
      request.add_keys(chosen[i]);
    }
  }
  if (!StorePhase(env, row, "row 3: GetMany, checking pass")) return row;
  double seconds = 0;
  uint64_t messages = 0, split = 0;
  std::string error = GetManyPass(env, requests, chosen.size(), true, &seconds, &messages, &split);
  if (!error.empty()) {
    StoreFailure(env, row, error);
    return row;
  }
  env.notes.push_back(StrCat(
      "row 3: GetMany sent ", Fixed(static_cast<double>(chosen.size()) / messages, 1),
      " objects per response message on average; ", split, " objects came in more than one piece"));
  for (int r = 0; r < f.rounds; ++r) {
    if (!StorePhase(env, row, StrCat("row 3, pass ", r + 1, ": GetMany"))) return row;
    error = GetManyPass(env, requests, chosen.size(), false, &seconds, &messages, &split);
    if (!error.empty()) {
      StoreFailure(env, row, error);
      return row;
    }
    row.store.push_back(static_cast<double>(chosen.size()) / seconds);
    if (noop_unary_rate > 0) row.ratios.push_back(row.store.back() / noop_unary_rate);
  }
  SetVerdict(row, Median(row.store), kGetManyTarget, true);
  if (!row.ratios.empty()) {
    row.ratio_text = StrCat(Fixed(Median(row.ratios), 1), "x no-op unary (median)");
  }
  return row;
}

// -- Rows 4 and 5: one large object --

// Streams `size` bytes of `pattern` to the no-op server, which hashes them.
// Returns the digest it answered.
std::string NoopUpload(Env& env, const PatternBytes& pattern, uint64_t size, double* seconds) {
  grpc::ClientContext context;
  context.set_deadline(After(kCallDeadline));
  Digest digest;
  Stopwatch watch;
  auto writer = env.noop->ClientStream(&context, &digest);
  Chunk message;
  for (uint64_t done = 0; done < size;) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(env.flags.chunk, size - done));
    message.mutable_data()->resize(n);
    pattern.Fill(done, message.mutable_data()->data(), n);
    if (!writer->Write(message)) break;
    done += n;
  }
  writer->WritesDone();
  grpc::Status status = writer->Finish();
  *seconds = watch.Seconds();
  if (!status.ok()) Die("no-op ClientStream: " + Describe(status));
  if (digest.bytes() != size) Die("the no-op server hashed the wrong number of bytes");
  return digest.sha256();
}

// PutStream of `size` bytes of `pattern`. Returns an error, or "" with the
// stored object in *ref.
std::string StoreUpload(Env& env, const PatternBytes& pattern, uint64_t size, v1::PutMode mode,
                        v1::Compression compression, double* seconds, v1::ObjectRef* ref) {
  grpc::ClientContext context;
  context.set_deadline(After(kCallDeadline));
  v1::PutStreamResponse response;
  Stopwatch watch;
  auto writer = env.store->PutStream(&context, &response);
  v1::PutStreamRequest message;
  message.mutable_options()->set_mode(mode);
  message.mutable_options()->set_compression(compression);
  uint64_t sent = 0;
  uint64_t messages = 0;
  bool finish_sent = false;
  while (sent < size) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(env.flags.chunk, size - sent));
    message.mutable_data()->resize(n);
    pattern.Fill(sent, message.mutable_data()->data(), n);
    const bool last = sent + n == size;
    if (last) message.set_finish_write(true);
    if (!writer->Write(message)) break;
    sent += n;
    ++messages;
    finish_sent = last;
    message.clear_options();
  }
  const bool writes_done = writer->WritesDone();
  grpc::Status status = writer->Finish();
  *seconds = watch.Seconds();
  if (!status.ok()) {
    // What this side did, to tell a client problem from a server one.
    return StrCat("PutStream: ", Describe(status), " (the client had written ", messages,
                  " messages, ", sent, " of ", size, " bytes, finish_write ",
                  finish_sent ? "included" : "not sent", "; WritesDone ",
                  writes_done ? "ok" : "failed", ")");
  }
  *ref = response.object();
  return "";
}

std::string NoopDownload(Env& env, uint64_t size, double* seconds) {
  grpc::ClientContext context;
  context.set_deadline(After(kCallDeadline));
  ServerStreamRequest request;
  request.set_bytes(size);
  request.set_chunk(env.flags.chunk);
  uint64_t bytes = 0;
  Stopwatch watch;
  auto reader = env.noop->ServerStream(&context, request);
  Chunk message;
  while (reader->Read(&message)) bytes += message.data().size();
  grpc::Status status = reader->Finish();
  *seconds = watch.Seconds();
  if (!status.ok()) Die("no-op ServerStream: " + Describe(status));
  if (bytes != size) Die("the no-op server sent the wrong number of bytes");
  return "";
}

struct GetShape {
  uint64_t messages = 0;
  uint64_t min_chunk = UINT64_MAX;
  uint64_t max_chunk = 0;
  v1::ObjectInfo info;
};

// Get of the whole object `key`. With `expect`, its bytes are hashed here
// and must match the key, and compared with the bytes that were put.
std::string StoreDownload(Env& env, const std::string& key, uint64_t size,
                          const PatternBytes* expect, double* seconds, GetShape* shape) {
  grpc::ClientContext context;
  context.set_deadline(After(kCallDeadline));
  v1::GetRequest request;
  request.set_key(key);
  uint64_t bytes = 0;
  std::optional<Hasher> hasher;
  std::string expected;
  if (expect != nullptr) hasher.emplace(HashType::kSha256);
  Stopwatch watch;
  auto reader = env.store->Get(&context, request);
  v1::GetResponse message;
  bool first = true;
  std::string error;
  while (error.empty() && reader->Read(&message)) {
    if (first) {
      shape->info = message.info();
      first = false;
    }
    const std::string& data = message.data();
    bytes += data.size();
    ++shape->messages;
    if (!data.empty()) {
      shape->min_chunk = std::min<uint64_t>(shape->min_chunk, data.size());
      shape->max_chunk = std::max<uint64_t>(shape->max_chunk, data.size());
    }
    if (expect != nullptr) {
      if (bytes > size) {
        error = "Get sent more bytes than the object has";
        break;
      }
      hasher->Update(data);
      expected.resize(data.size());
      expect->Fill(bytes - data.size(), expected.data(), data.size());
      if (data != expected)
        error = StrCat("Get sent wrong bytes near offset ", bytes - data.size());
    }
  }
  if (!error.empty()) {
    CancelAndDrain(context, *reader, message);
    return error;
  }
  grpc::Status status = reader->Finish();
  *seconds = watch.Seconds();
  if (!status.ok()) return "Get: " + Describe(status);
  if (bytes != size) return StrCat("Get sent ", bytes, " bytes of ", size);
  if (hasher && hasher->HexDigest() != key) return "Get sent wrong bytes";
  return "";
}

double MiBPerSecond(uint64_t bytes, double seconds) {
  return static_cast<double>(bytes) / kMiB / seconds;
}

// What the disk allows a durable write of the same bytes: `size` bytes of
// `pattern` written to a new file beside the store with write(2) in 1 MiB
// pieces, then fdatasync. The file is kept to the end of the run: a removed
// file's blocks would be reused, and a virtual disk may rewrite blocks it
// has seen faster than it writes fresh ones, which the store never gets.
double DiskWriteSeconds(Env& env, const PatternBytes& pattern, uint64_t size, int round) {
  const std::string path = StrCat(env.work, "/disk-baseline-", round);
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) DieErrno("create " + path);
  std::string buffer(kMiB, '\0');
  const auto start = std::chrono::steady_clock::now();
  for (uint64_t done = 0; done < size;) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(buffer.size(), size - done));
    pattern.Fill(done, buffer.data(), n);
    for (size_t written = 0; written < n;) {
      const ssize_t w = ::write(fd, buffer.data() + written, n - written);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) DieErrno("write " + path);
      written += static_cast<size_t>(w);
    }
    done += n;
  }
  if (::fdatasync(fd) != 0) DieErrno("fdatasync " + path);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ::close(fd);
  return seconds;
}

Row PutStreamRow(Env& env, std::vector<double>* noop_rates, Row* disk_row) {
  const Flags& f = env.flags;
  Row row;
  row.id = "put_stream";
  row.label = "5. PutStream";
  row.measurement = StrCat("5. PutStream ", Bytes(f.big_size), ", ", Bytes(f.chunk),
                           " messages, mode auto (loose)");
  row.unit = "MiB/s";
  row.baseline_name = "no-op client stream, server SHA-256";
  row.target = StrCat(">= ", Fixed(kPutStreamTargetRatio, 2), "x no-op");
  disk_row->id = "put_stream_disk";
  disk_row->label = "PutStream against the disk";
  disk_row->measurement = "   the same PutStream, against the disk";
  disk_row->unit = "MiB/s";
  disk_row->baseline_name = "write + fdatasync of the same bytes to a new file beside the store";
  if (!Selected(env, 5)) {
    *disk_row = Unselected(*disk_row);
    return Unselected(row);
  }
  for (int r = 0; r < f.rounds; ++r) {
    // A different object each round: a second put of the same bytes could
    // be cheaper than the first.
    PatternBytes pattern(100 + static_cast<uint64_t>(r));
    Phase(env, StrCat("row 5, round ", r + 1, ": no-op client stream"));
    SettleDisk();
    double noop_seconds = 0;
    std::string digest = NoopUpload(env, pattern, f.big_size, &noop_seconds);
    row.baseline.push_back(MiBPerSecond(f.big_size, noop_seconds));
    if (!env.with_daemon) continue;
    if (!StorePhase(env, row, StrCat("row 5, round ", r + 1, ": PutStream"))) {
      *noop_rates = row.baseline;
      return row;
    }
    SettleDisk();
    double seconds = 0;
    v1::ObjectRef ref;
    std::string error = StoreUpload(env, pattern, f.big_size, v1::PUT_MODE_AUTO,
                                    v1::COMPRESSION_UNSPECIFIED, &seconds, &ref);
    if (error.empty() && (ref.key() != digest || ref.size() != f.big_size)) {
      error =
          StrCat("PutStream answered key ", ref.key(), " size ", ref.size(), ", expected ", digest);
    }
    if (!error.empty()) {
      StoreFailure(env, row, StrCat("round ", r + 1, ": ", error));
      *noop_rates = row.baseline;
      return row;
    }
    row.store.push_back(MiBPerSecond(f.big_size, seconds));
    row.ratios.push_back(noop_seconds / seconds);
    Phase(env, StrCat("row 5, round ", r + 1, ": write + fdatasync of the same bytes"));
    SettleDisk();
    const double disk_seconds = DiskWriteSeconds(env, pattern, f.big_size, r);
    disk_row->baseline.push_back(MiBPerSecond(f.big_size, disk_seconds));
    disk_row->store.push_back(row.store.back());
    disk_row->ratios.push_back(disk_seconds / seconds);
    if (r == 0) {
      // Untimed: where auto mode put it.
      grpc::ClientContext context;
      context.set_deadline(After(60));
      v1::StatRequest request;
      request.add_keys(digest);
      v1::StatResponse response;
      grpc::Status status = env.store->Stat(&context, request, &response);
      if (!status.ok() || response.stats_size() != 1 || !response.stats(0).found()) {
        StoreFailure(env, row,
                     "Stat does not find the object PutStream stored: " +
                         (status.ok() ? std::string("not found") : Describe(status)));
      } else if (response.stats(0).info().packed()) {
        env.notes.push_back("row 5: mode auto stored the large object in a pack, not loose");
      } else {
        env.notes.push_back("row 5: mode auto stored the large object loose (Stat: packed=false)");
      }
    }
  }
  *noop_rates = row.baseline;
  if (env.with_daemon) {
    SetVerdict(row, Median(row.ratios), kPutStreamTargetRatio, true);
  } else {
    row.verdict = Verdict::kNotRun;
  }
  return row;
}

// Row 4, and the put that sets it up (an information row).
std::vector<Row> GetRows(Env& env, const std::vector<double>& noop_upload_rates) {
  const Flags& f = env.flags;
  Row setup;
  setup.id = "put_stream_packed";
  setup.label = "PutStream packed (sets up 4)";
  setup.measurement =
      StrCat("   PutStream ", Bytes(f.big_size), ", packed, uncompressed (sets up 4)");
  setup.unit = "MiB/s";
  setup.baseline_name = "no-op client stream, server SHA-256 (row 5, median)";
  if (!noop_upload_rates.empty()) setup.baseline = {Median(noop_upload_rates)};
  Row row;
  row.id = "get";
  row.label = "4. Get";
  row.measurement = StrCat("4. Get ", Bytes(f.big_size), " packed, warm");
  row.unit = "MiB/s";
  row.baseline_name = StrCat("no-op server stream, ", Bytes(f.chunk), " messages");
  row.target = StrCat(">= ", Fixed(kGetTargetRatio, 2), "x no-op");
  if (!Selected(env, 4)) return {Unselected(setup), Unselected(row)};

  std::string key;
  if (env.with_daemon) {
    if (!StorePhase(env, setup, "row 4: PutStream, packed")) {
      row.verdict = Verdict::kNotRun;
      row.note = "the packed PutStream failed";
      return {setup, row};
    }
    PatternBytes pattern(200);
    SettleDisk();
    double seconds = 0;
    v1::ObjectRef ref;
    std::string error = StoreUpload(env, pattern, f.big_size, v1::PUT_MODE_PACKED,
                                    v1::COMPRESSION_NO, &seconds, &ref);
    if (error.empty() && ref.size() != f.big_size) error = "PutStream answered a wrong size";
    if (!error.empty()) {
      StoreFailure(env, setup, error);
      row.verdict = Verdict::kNotRun;
      row.note = "the packed PutStream failed";
      return {setup, row};
    }
    setup.store = {MiBPerSecond(f.big_size, seconds)};
    if (!setup.baseline.empty()) setup.ratios = {setup.store[0] / setup.baseline[0]};
    key = ref.key();

    if (!StorePhase(env, row, "row 4: Get, checking pass")) return {setup, row};
    GetShape shape;
    error = StoreDownload(env, key, f.big_size, &pattern, &seconds, &shape);
    if (error.empty() && (!shape.info.packed() || shape.info.compressed())) {
      error = StrCat("the object is stored packed=", shape.info.packed(),
                     " compressed=", shape.info.compressed(), ", expected packed, uncompressed");
    }
    if (!error.empty()) {
      StoreFailure(env, row, error);
      return {setup, row};
    }
    env.notes.push_back(StrCat("row 4: Get sent ", shape.messages, " messages, data chunks of ",
                               Bytes(shape.min_chunk), " to ", Bytes(shape.max_chunk)));
  }
  for (int r = 0; r < f.rounds; ++r) {
    Phase(env, StrCat("row 4, round ", r + 1, ": no-op server stream"));
    double noop_seconds = 0;
    NoopDownload(env, f.big_size, &noop_seconds);
    row.baseline.push_back(MiBPerSecond(f.big_size, noop_seconds));
    if (!env.with_daemon) continue;
    if (!StorePhase(env, row, StrCat("row 4, round ", r + 1, ": Get"))) return {setup, row};
    double seconds = 0;
    GetShape shape;
    std::string error = StoreDownload(env, key, f.big_size, nullptr, &seconds, &shape);
    if (!error.empty()) {
      StoreFailure(env, row, StrCat("round ", r + 1, ": ", error));
      return {setup, row};
    }
    row.store.push_back(MiBPerSecond(f.big_size, seconds));
    row.ratios.push_back(noop_seconds / seconds);
  }
  if (env.with_daemon) {
    SetVerdict(row, Median(row.ratios), kGetTargetRatio, true);
  } else {
    row.verdict = Verdict::kNotRun;
    setup.verdict = Verdict::kNotRun;
  }
  return {setup, row};
}

// -- Row 6: the daemon's memory --

std::string MemoryText(const ProcMemory& m) {
  return StrCat(MiB(m.rss), " (RssAnon ", MiB(m.anon), ", RssFile ", MiB(m.file), ")");
}

std::vector<Row> RssRows(Env& env, const ProcMemory& final_memory) {
  const Flags& f = env.flags;
  const uint64_t limit = f.cache_max_mapped + kRssMargin;
  Row row;
  row.id = "daemon_rss";
  row.label = "6. daemon RSS";
  row.measurement = "6. packstored peak RSS over the run";
  row.unit = "MiB";
  row.baseline_name = StrCat("cache budget --cache-max-mapped ", Bytes(f.cache_max_mapped));
  row.target = StrCat("<= ", MiB(limit), " (budget + ", Bytes(kRssMargin), ")");
  if (!env.with_daemon || env.rss == nullptr) {
    row.verdict = Verdict::kNotRun;
    return {row};
  }
  if (env.daemon.wait_status) {
    StoreFailure(env, row, "packstored exited during the run: its peak is unknown");
    return {row};
  }
  RssSampler::Peak peak = env.rss->overall();
  const uint64_t highest = std::max(peak.at_peak.rss, final_memory.hwm);
  row.store = {static_cast<double>(highest) / kMiB};
  row.store_text = StrCat(MiB(highest), " (at the sampled peak: RssAnon ", MiB(peak.at_peak.anon),
                          ", RssFile ", MiB(peak.at_peak.file), ")");
  row.note = StrCat("the highest of ", peak.samples, " VmRSS samples (", MiB(peak.at_peak.rss),
                    ") and of VmHWM at the end (", MiB(final_memory.hwm), "); largest RssAnon ",
                    MiB(peak.max_anon), ", largest RssFile ", MiB(peak.max_file));
  SetVerdict(row, static_cast<double>(highest) / kMiB, static_cast<double>(limit) / kMiB, false);
  std::vector<Row> rows = {row};
  for (const auto& [phase, p] : env.rss->phases()) {
    Row r;
    r.id = "daemon_rss_" + phase;
    for (char& c : r.id) {
      if (c == ' ' || c == ',' || c == ':') c = '_';
    }
    r.measurement = "   peak RSS during " + phase;
    r.unit = "MiB";
    r.store = {static_cast<double>(p.at_peak.rss) / kMiB};
    r.store_text = MemoryText(p.at_peak);
    rows.push_back(r);
  }
  return rows;
}

// -- The run --

uint64_t FreeBytes(const std::string& path) {
  struct statvfs st;
  if (::statvfs(path.c_str(), &st) != 0) DieErrno("statvfs " + path);
  return static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
}

// Disk the run needs: the store's objects (small ones twice over for the
// index; row 4's large object twice, as the daemon writes a large packed
// object loose first and keeps that copy until a clean), the daemon's
// free-space reserve, and a margin.
uint64_t DiskNeeded(const Flags& f) {
  const double rounds = f.rounds;
  double small =
      rounds * static_cast<double>(f.putmany_objects) * static_cast<double>(f.object_size) +
      kUnaryCallsPerSecondBound * f.seconds * rounds * static_cast<double>(f.object_size);
  // Row 4's object twice, row 5's objects and the disk baseline's files.
  double big = static_cast<double>(f.big_size) * (2 + 2 * rounds);
  return static_cast<uint64_t>(2 * small + big) + kDaemonFreeReserve + 256 * kMiB;
}

double SecondsNeeded(const Flags& f, bool with_daemon) {
  const double rounds = f.rounds;
  const double sides = with_daemon ? 2 : 1;
  const double big_mib = static_cast<double>(f.big_size) / kMiB;
  double t = 3;                                        // start-up
  t += rounds * sides * (f.seconds + f.warmup + 0.3);  // row 1
  if (with_daemon) {
    t += rounds * static_cast<double>(f.putmany_objects) / 40000;         // row 2
    t += (rounds + 1) * static_cast<double>(f.getmany_objects) / 100000;  // row 3
    t += 3 * big_mib / 400;                                               // row 4 put, check
  }
  t += rounds * (sides + 1) * big_mib / 400;  // row 5 and its disk baseline
  t += rounds * sides * big_mib / 800;  // row 4
  return t;
}

void BlockStopSignalsAndWatch() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::thread([set] {
    int signal_number = 0;
    sigwait(&set, &signal_number);
    Die(StrCat("interrupted by signal ", signal_number));
  }).detach();
}

void AddStatusNotes(Env& env) {
  grpc::ClientContext context;
  context.set_deadline(After(30));
  v1::StatusResponse s;
  grpc::Status status = env.store->Status(&context, v1::StatusRequest(), &s);
  if (!status.ok()) {
    env.notes.push_back("final Status failed: " + Describe(status));
    return;
  }
  const v1::StoreCounts& c = s.counts();
  env.notes.push_back(StrCat("store at the end: ", c.packed_objects(), " packed objects (",
                             MiB(c.packed_bytes()), ") in ", c.pack_files(), " packs, ",
                             c.loose_objects(), " loose (", MiB(c.loose_bytes()), "), index ",
                             MiB(c.index_bytes())));
  const v1::CacheStats& k = s.cache();
  env.notes.push_back(StrCat("region cache: mapped peak ", MiB(k.mapped_bytes_peak()), " of limit ",
                             MiB(k.mapped_bytes_limit()), ", windows peak ", k.windows_peak(),
                             ", hits ", k.hits(), ", misses ", k.misses(), ", evictions ",
                             k.evictions(), ", pread fallbacks ", k.fallbacks()));
  std::string rpcs;
  for (const v1::MethodStats& m : s.rpcs()) {
    if (m.calls() == 0) continue;
    rpcs += StrCat(rpcs.empty() ? "" : ", ", m.method(), " ", m.calls());
    if (m.errors() > 0) rpcs += StrCat(" (", m.errors(), " errors)");
  }
  if (!rpcs.empty()) env.notes.push_back("calls the daemon counted: " + rpcs);
}

void WriteJson(const Env& env, const std::vector<Row>& rows, int met, int judged,
               const std::vector<std::string>& missed, const std::vector<std::string>& failed) {
  const Flags& f = env.flags;
  Json j;
  j.BeginObject();
  j.Key("benchmark").String("daemon_bench");
  j.Key("quick").Bool(f.quick);
  j.Key("noop_only").Bool(!env.with_daemon);
  j.Key("config").BeginObject();
  j.Key("clients").Integer(f.clients);
  j.Key("seconds").Number(f.seconds);
  j.Key("warmup_seconds").Number(f.warmup);
  j.Key("rounds").Integer(f.rounds);
  j.Key("object_size").Integer(static_cast<int64_t>(f.object_size));
  j.Key("putmany_objects_per_round").Integer(static_cast<int64_t>(f.putmany_objects));
  j.Key("putmany_batch").Integer(static_cast<int64_t>(f.putmany_batch));
  j.Key("putmany_messages").Integer(static_cast<int64_t>(f.putmany_messages));
  j.Key("getmany_objects").Integer(static_cast<int64_t>(f.getmany_objects));
  j.Key("getmany_batch").Integer(static_cast<int64_t>(f.getmany_batch));
  j.Key("big_size").Integer(static_cast<int64_t>(f.big_size));
  j.Key("chunk").Integer(static_cast<int64_t>(f.chunk));
  j.Key("cache_max_mapped").Integer(static_cast<int64_t>(f.cache_max_mapped));
  j.Key("nproc").Integer(static_cast<int64_t>(std::thread::hardware_concurrency()));
  j.EndObject();
  j.Key("rows").BeginArray();
  for (const Row& r : rows) AppendRowJson(j, r);
  j.EndArray();
  j.Key("notes").BeginArray();
  for (const std::string& n : env.notes) j.String(n);
  j.EndArray();
  j.Key("summary").BeginObject();
  j.Key("met").Integer(met);
  j.Key("targets").Integer(judged);
  j.Key("missed").BeginArray();
  for (const std::string& m : missed) j.String(m);
  j.EndArray();
  j.Key("failed").BeginArray();
  for (const std::string& m : failed) j.String(m);
  j.EndArray();
  j.Key("store_failed").Bool(env.store_failed);
  j.EndObject();
  j.EndObject();
  std::ofstream out(f.out, std::ios::trunc);
  out << j.text();
  if (!out.good()) Die("cannot write " + f.out);
}

int Run(const Flags& flags) {
  Env env;
  env.flags = flags;
  g_env = &env;
  SetDieHook(CleanUpOnDeath);
  ::signal(SIGPIPE, SIG_IGN);
  BlockStopSignalsAndWatch();
  const Flags& f = env.flags;
  env.self = SelfExe();
  env.with_daemon = !f.noop_only;
  if (env.with_daemon) {
    env.packstored = !f.packstored.empty() ? f.packstored
                                           : (std::filesystem::path(env.self).parent_path() / ".." /
                                              "server" / "daemon" / "packstored")
                                                 .lexically_normal()
                                                 .string();
    if (::access(env.packstored.c_str(), X_OK) != 0) {
      Die(StrCat("no packstored at ", env.packstored,
                 ": build it (ninja -C <build> packstored), pass --packstored PATH, or measure "
                 "the baselines alone with --noop-only"));
    }
  }

  std::string tmpl = f.parent_dir + "/daemon_bench.XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) DieErrno("mkdtemp " + tmpl);
  env.work = tmpl;
  env.noop_socket = env.work + "/noop.sock";
  env.store_socket = env.work + "/packstored.sock";
  env.store_dir = env.work + "/store";
  env.daemon_log = env.with_daemon ? env.work + "/packstored.log" : "";
  if (env.store_socket.size() >= 100) {
    Die(StrCat("socket path too long for a Unix socket: ", env.store_socket, " (use --dir)"));
  }
  const uint64_t needed = DiskNeeded(f);
  const uint64_t free_bytes = FreeBytes(env.work);
  std::printf("daemon_bench: work folder %s\n", env.work.c_str());
  std::printf("daemon_bench: this run needs about %s free there (%s available), takes about %s s\n",
              MiB(needed).c_str(), MiB(free_bytes).c_str(),
              Grouped(SecondsNeeded(f, env.with_daemon)).c_str());
  std::fflush(stdout);
  if (free_bytes < needed) Die("not enough free disk space (see --dir, --big-size, --rounds)");

  // Every process is started before this one creates a gRPC channel.
  StartChildren(env);
  if (env.with_daemon) {
    env.rss = std::make_unique<RssSampler>(env.daemon.pid, std::chrono::milliseconds(50));
  }
  Phase(env, "start-up");
  WaitForNoopServer(env);
  if (env.with_daemon) WaitForDaemon(env);

  Row put_unary = PutUnaryRow(env);
  const double noop_unary = Median(put_unary.baseline);
  std::vector<std::string> keys;
  bool have_objects = false;
  Row put_many = PutManyRow(env, noop_unary, &keys, &have_objects);
  Row get_many = GetManyRow(env, noop_unary, keys, have_objects);
  keys = {};
  std::vector<double> noop_upload_rates;
  Row put_stream_disk;
  Row put_stream = PutStreamRow(env, &noop_upload_rates, &put_stream_disk);
  std::vector<Row> get_rows = GetRows(env, noop_upload_rates);
  Phase(env, "end");

  ProcMemory final_memory;
  bool daemon_died = false;
  if (env.with_daemon) {
    if (Exited(env.daemon)) {
      daemon_died = true;
      env.store_failed = true;
      env.notes.push_back(StrCat("FAILURE: packstored exited during the run (",
                                 DescribeWaitStatus(*env.daemon.wait_status), ")"));
    } else {
      AddStatusNotes(env);
      final_memory = ReadProcMemory(env.daemon.pid);
    }
    env.rss->Stop();
  }
  std::vector<Row> rss_rows = RssRows(env, final_memory);

  // Stop everything: clients, then the daemon (timed), then the no-op server.
  for (Child& c : env.clients) WriteLine(c, "quit");
  for (Child& c : env.clients) {
    bool killed = false;
    Stop(c, SIGTERM, 5, &killed);
  }
  env.noop.reset();
  env.noop_channel.reset();
  env.store.reset();
  env.store_channel.reset();
  if (env.with_daemon && !daemon_died) {
    bool killed = false;
    double seconds = Stop(env.daemon, SIGTERM, 30, &killed);
    if (killed) {
      env.notes.push_back("packstored did not exit within 30 s of SIGTERM: killed");
    } else {
      env.notes.push_back(StrCat("packstored exited ", Fixed(seconds, 2), " s after SIGTERM (",
                                 DescribeWaitStatus(*env.daemon.wait_status), ")"));
    }
  }
  {
    bool killed = false;
    Stop(env.noop_server, SIGTERM, 5, &killed);
  }

  std::vector<Row> rows = {put_unary, put_many, get_many};
  rows.push_back(get_rows[1]);
  rows.push_back(put_stream);
  rows.push_back(put_stream_disk);
  rows.push_back(get_rows[0]);
  for (const Row& r : rss_rows) rows.push_back(r);

  std::printf("\n");
  PrintTable(rows);
  std::printf("\n");
  for (const Row& r : rows) {
    if (!r.note.empty() && r.selected) {
      std::printf("%s: %s\n", r.measurement.c_str(), r.note.c_str());
    }
  }
  for (const std::string& n : env.notes) std::printf("note: %s\n", n.c_str());
  if (env.with_daemon) {
    std::string tail = LogTail(env.daemon_log, 20);
    if (!tail.empty())
      std::printf("packstored's log (warnings and errors, last lines):\n%s", tail.c_str());
  }
  int met = 0, judged = 0;
  std::vector<std::string> missed, failed, not_run;
  for (const Row& r : rows) {
    if (!r.selected) continue;
    if (r.verdict == Verdict::kMet) ++met;
    if (!r.target.empty()) ++judged;
    const std::string& short_name = r.label.empty() ? r.measurement : r.label;
    if (r.verdict == Verdict::kMissed) missed.push_back(short_name);
    if (r.verdict == Verdict::kFailed) failed.push_back(short_name);
    if (r.verdict == Verdict::kNotRun && !r.target.empty()) not_run.push_back(short_name);
  }
  std::string summary = env.with_daemon
                            ? StrCat("SUMMARY: ", met, " of ", judged, " targets met")
                            : std::string("SUMMARY: no-op baselines only, no target judged");
  for (size_t i = 0; i < missed.size(); ++i) summary += (i == 0 ? "; missed: " : ", ") + missed[i];
  for (size_t i = 0; i < failed.size(); ++i) summary += (i == 0 ? "; FAILED: " : ", ") + failed[i];
  if (env.with_daemon) {
    for (size_t i = 0; i < not_run.size(); ++i) {
      summary += (i == 0 ? "; not run: " : ", ") + not_run[i];
    }
  }
  std::printf("\n%s\n", summary.c_str());
  if (!f.out.empty()) {
    WriteJson(env, rows, met, judged, missed, failed);
    std::printf("results written to %s\n", f.out.c_str());
  }
  std::fflush(stdout);

  if (f.keep) {
    std::printf("kept %s\n", env.work.c_str());
  } else {
    std::error_code error;
    std::filesystem::remove_all(env.work, error);
    if (error) {
      std::fprintf(stderr, "daemon_bench: could not remove %s: %s\n", env.work.c_str(),
                   error.message().c_str());
    }
  }
  env.work.clear();
  g_env = nullptr;
  return env.store_failed ? 1 : 0;
}

// The child roles: "--role noop-server --socket PATH --max-message BYTES"
// and "--role unary-client --id N --size BYTES --noop-socket PATH
// [--store-socket PATH]".
int RunRole(int argc, char** argv) {
  std::string role = argv[2];
  std::unordered_map<std::string, std::string> args;
  for (int i = 3; i + 1 < argc; i += 2) args[argv[i]] = argv[i + 1];
  auto get = [&](const std::string& name) -> std::string {
    auto it = args.find(name);
    return it == args.end() ? "" : it->second;
  };
  if (role == "noop-server") {
    SetProgramName("daemon_bench noop server");
    return RunNoopServer(get("--socket"), ParseSize(get("--max-message")).value_or(kMaxMessage));
  }
  if (role == "unary-client") {
    return RunUnaryClient(std::atoi(get("--id").c_str()), ParseSize(get("--size")).value_or(kKiB),
                          get("--noop-socket"), get("--store-socket"));
  }
  Die("unknown role " + role);
}

}  // namespace
}  // namespace packstore::bench

int main(int argc, char** argv) {
  if (argc >= 3 && std::string_view(argv[1]) == "--role") {
    return packstore::bench::RunRole(argc, argv);
  }
  return packstore::bench::Run(packstore::bench::ParseFlags(argc, argv));
}
