// What daemon_bench needs besides gRPC: fatal errors with clean-up, sizes
// and number formatting, child processes talked to over pipes, sampling of a
// process's memory, and the report (a table and a JSON file).
//
// Thread-safety: Die may be called from any thread; RssSampler is
// thread-safe; everything else is used by the thread that owns it.
#ifndef PACKSTORE_BENCH_DAEMON_BENCH_SUPPORT_H_
#define PACKSTORE_BENCH_DAEMON_BENCH_SUPPORT_H_

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace packstore::bench {

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = kKiB * 1024;
constexpr uint64_t kGiB = kMiB * 1024;

// --- Fatal errors ---

// Prefix of every message this process prints ("daemon_bench", or the
// child's role).
void SetProgramName(std::string name);
const std::string& ProgramName();

// Run once by Die before it exits (the coordinator kills its children,
// shows the daemon's log and removes the work folder there).
void SetDieHook(std::function<void()> hook);

[[noreturn]] void Die(std::string_view message);
[[noreturn]] void DieErrno(std::string_view what);

// --- Sizes, times and numbers ---

// "1024", "64K", "16M", "1G", "256MiB" (binary multiples).
std::optional<uint64_t> ParseSize(std::string_view text);
std::optional<double> ParseSeconds(std::string_view text);

std::string Grouped(double value);              // 12,345
std::string Fixed(double value, int decimals);  // 1.23
std::string Bytes(uint64_t n);                  // 1 GiB, 64 MiB, 1000 B
std::string MiB(uint64_t n);                    // 12.3 MiB
double Median(std::vector<double> values);

// CLOCK_MONOTONIC in nanoseconds: the same clock in every process of the
// machine, so a start time sent to a child means the same instant there.
int64_t MonotonicNanos();

class Stopwatch {
 public:
  Stopwatch() : start_(std::chrono::steady_clock::now()) {}
  double Seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  std::chrono::steady_clock::time_point start_;
};

// The path of the running executable.
std::string SelfExe();

// --- Child processes ---

struct Child {
  std::string name;
  pid_t pid = -1;
  // Its stdin and stdout, when spawned with pipes; -1 otherwise.
  int to_child = -1;
  int from_child = -1;
  std::string read_buffer;
  // Set once reaped.
  std::optional<int> wait_status;
};

// fork + exec of argv[0] with `argv`. With `pipes`, the child's stdin and
// stdout are pipes to this process (its stderr is ours); otherwise its
// stdin is /dev/null and its stdout and stderr go to `log_path`. The child
// gets `death_signal` when this process's thread that spawned it ends.
// Only async-signal-safe calls run between fork and exec.
Child Spawn(const std::vector<std::string>& argv, bool pipes, const std::string& log_path,
            int death_signal);

// Sends one line ('\n' appended). False when the child is gone.
bool WriteLine(Child& child, std::string_view line);
// The next line from the child's stdout, without its '\n'; nullopt on end
// of file or when `timeout_seconds` pass first.
std::optional<std::string> ReadLine(Child& child, double timeout_seconds);
// Reaps the child if it has exited; true if it has.
bool Exited(Child& child);
// Sends `signal` and waits up to `grace_seconds` for the child to exit,
// then SIGKILLs it. Returns how long it took to exit after `signal`;
// `killed` tells whether SIGKILL was needed.
double Stop(Child& child, int signal, double grace_seconds, bool* killed);
// "exit 0", "signal 9".
std::string DescribeWaitStatus(int status);

// Every child spawned and not yet stopped, SIGKILLed by KillAllChildren
// (what Die's hook does).
void KillAllChildren();

// --- Memory of a process ---

struct ProcMemory {
  bool ok = false;
  uint64_t rss = 0;    // VmRSS
  uint64_t anon = 0;   // RssAnon: memory the process allocated
  uint64_t file = 0;   // RssFile: file pages it maps (its region cache)
  uint64_t shmem = 0;  // RssShmem
  uint64_t hwm = 0;    // VmHWM: the kernel's peak of VmRSS
};

ProcMemory ReadProcMemory(pid_t pid);

// Samples a process's memory every `period` on a thread of its own, keeping
// the peak overall and per phase (the phase named last by SetPhase).
class RssSampler {
 public:
  struct Peak {
    ProcMemory at_peak;  // the sample with the highest VmRSS
    uint64_t max_anon = 0;
    uint64_t max_file = 0;
    uint64_t samples = 0;
  };

  RssSampler(pid_t pid, std::chrono::milliseconds period);
  ~RssSampler();
  RssSampler(const RssSampler&) = delete;
  RssSampler& operator=(const RssSampler&) = delete;

  void SetPhase(std::string phase);
  // Joins the thread; the peaks stay readable.
  void Stop();
  Peak overall() const;
  // In the order the phases were first named.
  std::vector<std::pair<std::string, Peak>> phases() const;

 private:
  void Loop();
  void Record(const ProcMemory& m);

  const pid_t pid_;
  const std::chrono::milliseconds period_;
  mutable absl::Mutex mu_;
  std::string phase_ ABSL_GUARDED_BY(mu_);
  Peak overall_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<std::string, Peak>> phases_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// --- Report ---

// kFailed: the store call failed or answered wrong data (see the note).
enum class Verdict { kInfo, kMet, kMissed, kFailed, kNotRun };

// One measurement. Rates per round, baseline and store alternating; the
// judged value is the median of the per-round ratios (or of the store's
// figures when the target is absolute).
struct Row {
  std::string id;                // for the JSON file: "put_unary"
  std::string label;             // short name for the summary: "1. Put"
  std::string measurement;       // what the store did
  std::string unit;              // "calls/s", "obj/s", "MiB/s", "MiB"
  std::string baseline_name;     // what the baseline did ("" when none)
  std::vector<double> baseline;  // per round
  std::vector<double> store;     // per round
  std::vector<double> ratios;    // store / baseline, per round
  std::string ratio_text;        // overrides the printed ratio when set
  std::string store_text;        // overrides the printed store figure when set
  std::string target;            // ">= 0.60x no-op"; "" when none
  std::optional<double> judged;  // the value held against the target
  std::optional<double> threshold;
  Verdict verdict = Verdict::kInfo;
  // False when left out of the run (daemon_bench --rows).
  bool selected = true;
  std::string note;
};

// A Markdown table: measurement, baseline, store, ratio, target, verdict.
void PrintTable(const std::vector<Row>& rows);

// A small JSON writer: objects, arrays, strings, numbers, booleans.
class Json {
 public:
  Json& BeginObject();
  Json& EndObject();
  Json& BeginArray();
  Json& EndArray();
  Json& Key(std::string_view key);
  Json& String(std::string_view value);
  Json& Number(double value);
  Json& Integer(int64_t value);
  Json& Bool(bool value);
  Json& Null();
  Json& Numbers(const std::vector<double>& values);
  const std::string& text() const { return out_; }

 private:
  void Separate();
  void Indent();
  std::string out_;
  std::vector<bool> first_;  // per open container: nothing written in it yet
  bool after_key_ = false;
};

void AppendRowJson(Json& json, const Row& row);

}  // namespace packstore::bench

#endif  // PACKSTORE_BENCH_DAEMON_BENCH_SUPPORT_H_
