// fast_path_bench: the local fast path (descriptors passed over the
// daemon's socket, docs/protocol.md) against reading and hashing in the
// same process, and against gRPC, all measured in the same run.
//
//   1. Get of a 1 GiB uncompressed packed object through the fast path
//      (C++ client, GetTo) vs pread of the same bytes of the pack file in
//      this process (target >= 0.60x), and vs the gRPC stream (>= 2.5x).
//   2. GetMany of 20,000 packed 1 KiB objects in random key order through
//      the fast path vs GetMany over gRPC (>= 2x).
//   3. PutFile of a 1 GiB file by descriptor, in the daemon's default mode
//      (large objects loose), vs bare SHA-256 of the same bytes from the page
//      cache (>= 0.80x); shown against a durable write of the same bytes to a
//      new file too.
//   The Python client's figures for 1-3 (bench/fast_path_bench.py, run by
//   Debian's python3 with the package of the build), same baselines.
//
// Every answer is checked (keys, sizes, digests of what was read). Exit
// code 0 when the run completes, 1 when a store call fails or answers
// wrong data.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "bench/daemon_bench_support.h"
#include "common/hasher.h"
#include "packstore/client.h"

namespace packstore::bench {
namespace {

namespace ps = packstore::client;

constexpr double kGetVsPreadTarget = 0.60;
constexpr double kGetVsGrpcTarget = 2.5;
constexpr double kGetManyTarget = 2.0;
constexpr double kPutFileTarget = 0.80;
constexpr size_t kChunk = size_t{1} << 20;

struct Flags {
  uint64_t big_size = uint64_t{1} << 30;
  int objects = 20000;
  int rounds = 3;
  std::string packstored;
  std::string python = "/usr/bin/python3";
  std::string dir;
  bool quick = false;
};

void Usage() {
  std::printf(
      "usage: fast_path_bench [--quick] [--big-size BYTES] [--objects N] [--rounds N]\n"
      "                       [--packstored PATH] [--python PATH] [--dir PARENT]\n"
      "  --quick   a 64 MiB object, 2,000 small ones, 2 rounds: a check that it works\n");
}

Flags ParseFlags(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Die("missing value after " + arg);
      return argv[++i];
    };
    if (arg == "--quick") {
      f.quick = true;
      f.big_size = 64 << 20;
      f.objects = 2000;
      f.rounds = 2;
    } else if (arg == "--big-size") {
      std::optional<uint64_t> size = ParseSize(value());
      if (!size || *size < kChunk) Die("--big-size takes a size of at least 1M");
      f.big_size = *size;
    } else if (arg == "--objects") {
      f.objects = std::stoi(value());
    } else if (arg == "--rounds") {
      f.rounds = std::max(1, std::stoi(value()));
    } else if (arg == "--packstored") {
      f.packstored = value();
    } else if (arg == "--python") {
      f.python = value();
    } else if (arg == "--dir") {
      f.dir = value();
    } else if (arg == "--help" || arg == "-h") {
      Usage();
      std::exit(0);
    } else {
      Usage();
      Die("unknown argument " + arg);
    }
  }
  return f;
}

// Deterministic incompressible bytes.
void FillPattern(uint64_t seed, uint64_t position, char* out, size_t n) {
  std::mt19937_64 rng(seed * 1000003 + position / kChunk);
  for (size_t i = 0; i < n; i += 8) {
    const uint64_t v = rng();
    std::memcpy(out + i, &v, std::min<size_t>(8, n - i));
  }
}

// A file of `size` pattern bytes, left in the page cache.
void WriteFile(const std::string& path, uint64_t seed, uint64_t size, bool durable) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) DieErrno("create " + path);
  std::string buffer(kChunk, '\0');
  for (uint64_t done = 0; done < size;) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, size - done));
    FillPattern(seed, done, buffer.data(), n);
    if (::write(fd, buffer.data(), n) != static_cast<ssize_t>(n)) DieErrno("write " + path);
    done += n;
  }
  if (durable && ::fdatasync(fd) != 0) DieErrno("fdatasync " + path);
  ::close(fd);
}

// SHA-256 of a file read with pread in 1 MiB pieces.
std::string HashFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) DieErrno("open " + path);
  Hasher hasher(HashType::kSha256);
  std::string buffer(kChunk, '\0');
  for (off_t at = 0;; at += static_cast<off_t>(kChunk)) {
    const ssize_t n = ::pread(fd, buffer.data(), buffer.size(), at);
    if (n < 0) DieErrno("pread " + path);
    if (n == 0) break;
    hasher.Update(buffer.data(), static_cast<size_t>(n));
  }
  ::close(fd);
  return hasher.HexDigest();
}

// Work done on every byte read, the same for every reader: a sum of one
// word per 64 bytes (touches each cache line, costs far less than a copy).
struct Touch {
  uint64_t sum = 0;
  void operator()(std::string_view data) {
    for (size_t i = 0; i + 8 <= data.size(); i += 64) {
      uint64_t v;
      std::memcpy(&v, data.data() + i, 8);
      sum += v;
    }
  }
};

Row MakeRow(std::string id, std::string label, std::string measurement, std::string unit,
            std::string baseline_name) {
  Row row;
  row.id = std::move(id);
  row.label = std::move(label);
  row.measurement = std::move(measurement);
  row.unit = std::move(unit);
  row.baseline_name = std::move(baseline_name);
  return row;
}

double Mib(uint64_t bytes, double seconds) { return static_cast<double>(bytes) / (1 << 20) / seconds; }

struct Env {
  Flags flags;
  std::string work;
  std::string socket;
  std::string store;
  Child daemon;
  std::unique_ptr<ps::Client> fast;
  std::unique_ptr<ps::Client> grpc;
  bool failed = false;
  std::vector<std::string> notes;
};

void Fail(Env& env, Row& row, const std::string& what) {
  env.failed = true;
  row.verdict = Verdict::kFailed;
  row.note = what;
  std::fprintf(stderr, "  store failure (%s): %s\n", row.id.c_str(), what.c_str());
}

void Judge(Row& row, double judged, double threshold) {
  row.judged = judged;
  row.threshold = threshold;
  if (row.verdict != Verdict::kFailed) row.verdict = judged >= threshold ? Verdict::kMet : Verdict::kMissed;
}

std::unique_ptr<ps::Client> Connect(const Env& env, bool fast_path) {
  ps::ClientOptions options;
  options.socket = env.socket;
  options.fast_path = fast_path;
  options.timeout = std::chrono::seconds(600);
  absl::StatusOr<std::unique_ptr<ps::Client>> client = ps::Client::Connect(options);
  if (!client.ok()) Die(client.status().ToString());
  return *std::move(client);
}

void StartDaemon(Env& env) {
  std::string binary = env.flags.packstored;
  if (binary.empty()) {
    binary = (std::filesystem::path(SelfExe()).parent_path().parent_path() / "server" / "daemon" /
              "packstored")
                 .string();
  }
  env.daemon = Spawn({binary, "--store", env.store, "--init", "--socket", env.socket,
                      "--auto-pack", "false", "--log-level", "warn", "--free-disk-reserve", "256MiB"},
                     /*pipes=*/false, env.work + "/packstored.log", SIGTERM);
  for (int i = 0; i < 3000 && !std::filesystem::exists(env.socket); ++i) {
    if (Exited(env.daemon)) Die("packstored exited at start; see " + env.work + "/packstored.log");
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  env.fast = Connect(env, true);
  env.grpc = Connect(env, false);
  for (int i = 0; i < 300 && !env.fast->Status().ok(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

// Row 3 (it also stores row 1's object): PutFile of distinct files.
Row PutFileRow(Env& env, Row* disk_row) {
  const Flags& f = env.flags;
  Row row = MakeRow("cpp_put_file", "3. PutFile (C++)", "3. PutFile " + Bytes(f.big_size) + " by descriptor (C++), default mode (loose)", "MiB/s", "SHA-256 of the same bytes, page cache");
  row.target = ">= " + Fixed(kPutFileTarget, 2) + "x SHA-256";
  *disk_row = MakeRow("cpp_put_file_disk", "PutFile against the disk", "   the same PutFile, against the disk", "MiB/s", "write + fdatasync of the same bytes to a new file");
  for (int r = 0; r < f.rounds; ++r) {
    const std::string input = env.work + "/input-" + std::to_string(r);
    WriteFile(input, 10 + r, f.big_size, false);
    Stopwatch hash_time;
    const std::string digest = HashFile(input);
    const double hash_seconds = hash_time.Seconds();
    ::sync();
    Stopwatch put_time;
    absl::StatusOr<ps::ObjectRef> ref = env.fast->PutFile(input);
    const double put_seconds = put_time.Seconds();
    if (!ref.ok() || ref->key != digest || ref->size != f.big_size) {
      Fail(env, row, ref.ok() ? "PutFile answered a wrong key" : ref.status().ToString());
      return row;
    }
    row.baseline.push_back(Mib(f.big_size, hash_seconds));
    row.store.push_back(Mib(f.big_size, put_seconds));
    row.ratios.push_back(hash_seconds / put_seconds);
    ::sync();
    Stopwatch disk_time;
    WriteFile(env.work + "/disk-" + std::to_string(r), 10 + r, f.big_size, true);
    const double disk_seconds = disk_time.Seconds();
    disk_row->baseline.push_back(Mib(f.big_size, disk_seconds));
    disk_row->store.push_back(row.store.back());
    disk_row->ratios.push_back(disk_seconds / put_seconds);
  }
  Judge(row, Median(row.ratios), kPutFileTarget);
  return row;
}

// Row 1: Get of the big object, warm.
std::vector<Row> GetRows(Env& env, const std::string& key) {
  const Flags& f = env.flags;
  Row pread_row = MakeRow("cpp_get_vs_pread", "1. Get (C++) vs pread", "1. Get " + Bytes(f.big_size) + " packed, fast path (C++)", "MiB/s", "pread of the same pack bytes in this process");
  pread_row.target = ">= " + Fixed(kGetVsPreadTarget, 2) + "x pread";
  Row grpc_row = MakeRow("cpp_get_vs_grpc", "1. Get (C++) vs gRPC", "   the same Get, fast path vs gRPC stream (C++)", "MiB/s", "the same Get through gRPC (fast path off)");
  grpc_row.target = ">= " + Fixed(kGetVsGrpcTarget, 1) + "x gRPC";
  // The object opens pack 0 of the fresh store: bytes [0, size).
  const std::string pack = env.store + "/packs/0";
  const int fd = ::open(pack.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) DieErrno("open " + pack);
  std::string buffer(kChunk, '\0');
  auto read_pread = [&] {
    Touch touch;
    for (uint64_t done = 0; done < f.big_size; done += kChunk) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, f.big_size - done));
      if (::pread(fd, buffer.data(), n, static_cast<off_t>(done)) != static_cast<ssize_t>(n)) {
        DieErrno("pread " + pack);
      }
      touch(std::string_view(buffer.data(), n));
    }
    return touch.sum;
  };
  auto read_client = [&](ps::Client& client, uint64_t* sum) -> absl::Status {
    Touch touch;
    absl::StatusOr<uint64_t> size = client.GetTo(key, [&](std::string_view chunk) {
      touch(chunk);
      return absl::OkStatus();
    });
    if (!size.ok()) return size.status();
    if (*size != f.big_size) return absl::DataLossError("Get answered a wrong size");
    *sum = touch.sum;
    return absl::OkStatus();
  };
  const uint64_t expected = read_pread();  // warms the page cache
  for (int r = 0; r < f.rounds; ++r) {
    Stopwatch p;
    read_pread();
    const double pread_seconds = p.Seconds();
    uint64_t sum = 0;
    Stopwatch fast;
    absl::Status status = read_client(*env.fast, &sum);
    const double fast_seconds = fast.Seconds();
    if (status.ok() && sum != expected) status = absl::DataLossError("the fast path read other bytes");
    if (!status.ok()) {
      Fail(env, pread_row, status.ToString());
      break;
    }
    Stopwatch slow;
    status = read_client(*env.grpc, &sum);
    const double grpc_seconds = slow.Seconds();
    if (status.ok() && sum != expected) status = absl::DataLossError("gRPC read other bytes");
    if (!status.ok()) {
      Fail(env, grpc_row, status.ToString());
      break;
    }
    pread_row.baseline.push_back(Mib(f.big_size, pread_seconds));
    pread_row.store.push_back(Mib(f.big_size, fast_seconds));
    pread_row.ratios.push_back(pread_seconds / fast_seconds);
    grpc_row.baseline.push_back(Mib(f.big_size, grpc_seconds));
    grpc_row.store.push_back(pread_row.store.back());
    grpc_row.ratios.push_back(grpc_seconds / fast_seconds);
  }
  ::close(fd);
  if (!pread_row.ratios.empty()) Judge(pread_row, Median(pread_row.ratios), kGetVsPreadTarget);
  if (!grpc_row.ratios.empty()) Judge(grpc_row, Median(grpc_row.ratios), kGetVsGrpcTarget);
  return {pread_row, grpc_row};
}

// Row 2: bulk reads of small packed objects.
Row GetManyRow(Env& env, std::vector<std::string>* keys_out) {
  const Flags& f = env.flags;
  Row row = MakeRow("cpp_get_many", "2. GetMany (C++)", "2. GetMany " + std::to_string(f.objects) +
                         " x 1 KiB packed, random key order, fast path (C++)", "obj/s", "GetMany over gRPC (fast path off)");
  row.target = ">= " + Fixed(kGetManyTarget, 1) + "x gRPC";
  std::vector<std::string> objects(f.objects);
  for (int i = 0; i < f.objects; ++i) {
    objects[i].resize(1024);
    FillPattern(5000 + i, 0, objects[i].data(), 1024);
  }
  std::vector<std::string_view> views(objects.begin(), objects.end());
  absl::StatusOr<std::vector<ps::ObjectRef>> refs = env.fast->PutMany(views, {ps::PutMode::kPacked, ps::Compression::kNo});
  if (!refs.ok()) {
    Fail(env, row, refs.status().ToString());
    return row;
  }
  // Checking every answer must cost little next to what is measured.
  std::unordered_map<std::string_view, size_t> index;
  std::vector<std::string> keys;
  for (size_t i = 0; i < refs->size(); ++i) {
    index[(*refs)[i].key] = i;
    keys.push_back((*refs)[i].key);
  }
  std::shuffle(keys.begin(), keys.end(), std::mt19937_64(7));
  *keys_out = keys;
  auto read_all = [&](ps::Client& client) -> absl::Status {
    size_t seen = 0;
    absl::Status status = client.GetMany(keys, [&](const ps::ObjectPiece& piece) {
      auto it = index.find(piece.key);
      if (piece.missing || it == index.end() || piece.data != objects[it->second]) {
        return absl::DataLossError("GetMany answered wrong bytes for " + std::string(piece.key));
      }
      ++seen;
      return absl::OkStatus();
    });
    if (status.ok() && seen != keys.size()) status = absl::DataLossError("GetMany missed objects");
    return status;
  };
  for (int r = 0; r < f.rounds; ++r) {
    Stopwatch slow;
    absl::Status status = read_all(*env.grpc);
    const double grpc_seconds = slow.Seconds();
    Stopwatch fast;
    if (status.ok()) status = read_all(*env.fast);
    const double fast_seconds = fast.Seconds();
    if (!status.ok()) {
      Fail(env, row, status.ToString());
      return row;
    }
    row.baseline.push_back(keys.size() / grpc_seconds);
    row.store.push_back(keys.size() / fast_seconds);
    row.ratios.push_back(grpc_seconds / fast_seconds);
  }
  Judge(row, Median(row.ratios), kGetManyTarget);
  return row;
}

// The Python client's rows: bench/fast_path_bench.py prints one line of
// "name baseline store" per measurement and round.
std::vector<Row> PythonRows(Env& env, const std::string& big_key, const std::vector<std::string>& keys) {
  const Flags& f = env.flags;
  const std::string keyfile = env.work + "/keys.txt";
  {
    FILE* out = std::fopen(keyfile.c_str(), "w");
    for (const std::string& key : keys) std::fprintf(out, "%s\n", key.c_str());
    std::fclose(out);
  }
  const std::string input = env.work + "/input-python";
  WriteFile(input, 99, f.big_size, false);
  ::setenv("PYTHONPATH", PACKSTORE_PYTHON_PACKAGE_DIR, 1);
  Child child = Spawn({f.python, PACKSTORE_FAST_PATH_BENCH_PY, env.socket, big_key,
                       env.store + "/packs/0", std::to_string(f.big_size), keyfile, input,
                       std::to_string(f.rounds)},
                      /*pipes=*/true, "", SIGKILL);
  Row get = MakeRow("python_get_vs_pread", "1. Get (Python) vs pread", "1. Get " + Bytes(f.big_size) + " packed, fast path (Python)", "MiB/s", "os.preadv of the same pack bytes into the same 1 MiB buffer");
  get.target = ">= " + Fixed(kGetVsPreadTarget, 2) + "x pread";
  Row get_grpc = MakeRow("python_get_vs_grpc", "1. Get (Python) vs gRPC", "   the same Get, fast path vs gRPC (Python)", "MiB/s", "the same get through gRPC (fast_path=False)");
  get_grpc.target = ">= " + Fixed(kGetVsGrpcTarget, 1) + "x gRPC";
  Row many = MakeRow("python_get_many", "2. get_many (Python)", "2. get_many " + std::to_string(keys.size()) + " x 1 KiB, fast path (Python)", "obj/s", "get_many over gRPC (fast_path=False)");
  many.target = ">= " + Fixed(kGetManyTarget, 1) + "x gRPC";
  Row put = MakeRow("python_put_file", "3. put_file (Python)", "3. put_file " + Bytes(f.big_size) + " by descriptor (Python)", "MiB/s", "hashlib.sha256 of the same bytes, page cache");
  put.target = ">= " + Fixed(kPutFileTarget, 2) + "x SHA-256";
  std::map<std::string, Row*> rows = {
      {"get_pread", &get}, {"get_grpc", &get_grpc}, {"get_many", &many}, {"put_file", &put}};
  while (std::optional<std::string> line = ReadLine(child, 900)) {
    std::istringstream in(*line);
    std::string name;
    double baseline = 0, store = 0;
    in >> name >> baseline >> store;
    if (name == "error") {
      for (auto& [n, row] : rows) Fail(env, *row, line->substr(6));
      break;
    }
    auto it = rows.find(name);
    if (it == rows.end() || baseline <= 0 || store <= 0) continue;
    it->second->baseline.push_back(baseline);
    it->second->store.push_back(store);
    // Rates: higher is better on both sides.
    it->second->ratios.push_back(store / baseline);
  }
  bool killed = false;
  Stop(child, SIGTERM, 5, &killed);
  for (auto& [name, row] : rows) {
    if (row->ratios.empty() && row->verdict != Verdict::kFailed) Fail(env, *row, "no figures from Python");
    if (!row->ratios.empty()) {
      const double target = name == "get_pread" ? kGetVsPreadTarget
                            : name == "get_grpc" ? kGetVsGrpcTarget
                            : name == "get_many" ? kGetManyTarget
                                                 : kPutFileTarget;
      Judge(*row, Median(row->ratios), target);
    }
  }
  return {get, get_grpc, many, put};
}

int Run(int argc, char** argv) {
  SetProgramName("fast_path_bench");
  Env env;
  env.flags = ParseFlags(argc, argv);
  std::string parent = env.flags.dir.empty() ? std::filesystem::temp_directory_path().string()
                                             : env.flags.dir;
  std::string pattern = parent + "/fast_path_bench.XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) DieErrno("mkdtemp");
  env.work = pattern;
  env.socket = env.work + "/packstored.sock";
  env.store = env.work + "/store";
  SetDieHook([] { KillAllChildren(); });
  std::printf("fast_path_bench: work folder %s\n", env.work.c_str());
  StartDaemon(env);

  std::vector<Row> rows;
  Row disk_row;
  std::string big_key;
  // Row 1's object, stored first so that it starts pack 0: its bytes are
  // [0, size) of that file.
  {
    const std::string input = env.work + "/input-get";
    WriteFile(input, 1, env.flags.big_size, false);
    absl::StatusOr<ps::ObjectRef> ref =
        env.fast->PutFile(input, {ps::PutMode::kPacked, ps::Compression::kNo});
    if (!ref.ok()) Die("storing row 1's object: " + ref.status().ToString());
    big_key = ref->key;
  }
  std::printf("  put_file rows\n");
  Row put_row = PutFileRow(env, &disk_row);
  std::vector<Row> get_rows;
  std::vector<std::string> keys;
  Row many_row;
  if (!big_key.empty()) {
    std::printf("  get rows\n");
    get_rows = GetRows(env, big_key);
  }
  std::printf("  get_many rows\n");
  many_row = GetManyRow(env, &keys);
  rows.insert(rows.end(), get_rows.begin(), get_rows.end());
  rows.push_back(many_row);
  rows.push_back(put_row);
  rows.push_back(disk_row);
  if (!big_key.empty() && !keys.empty()) {
    std::printf("  Python rows\n");
    std::vector<Row> python = PythonRows(env, big_key, keys);
    rows.insert(rows.end(), python.begin(), python.end());
  }
  bool killed = false;
  Stop(env.daemon, SIGTERM, 30, &killed);
  std::printf("\n");
  PrintTable(rows);
  int met = 0, judged = 0;
  std::string missed;
  for (const Row& row : rows) {
    if (row.verdict == Verdict::kInfo) continue;
    ++judged;
    if (row.verdict == Verdict::kMet) {
      ++met;
    } else {
      missed += (missed.empty() ? "" : ", ") + row.label;
    }
  }
  std::printf("\nSUMMARY: %d of %d targets met%s%s\n", met, judged, missed.empty() ? "" : "; missed: ",
              missed.c_str());
  std::filesystem::remove_all(env.work);
  return env.failed ? 1 : 0;
}

}  // namespace
}  // namespace packstore::bench

int main(int argc, char** argv) { return packstore::bench::Run(argc, argv); }
