#include "bench/daemon_bench_support.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <utility>

#include "common/str_cat.h"

namespace packstore::bench {
namespace {

std::string& Name() {
  static auto* name = new std::string("daemon_bench");
  return *name;
}

std::function<void()>& DieHook() {
  static auto* hook = new std::function<void()>;
  return *hook;
}

// Children spawned and not yet reaped, for KillAllChildren.
std::mutex& ChildrenMu() {
  static auto* mu = new std::mutex;
  return *mu;
}
std::vector<pid_t>& LiveChildren() {
  static auto* pids = new std::vector<pid_t>;
  return *pids;
}

void Forget(pid_t pid) {
  std::lock_guard<std::mutex> lock(ChildrenMu());
  auto& pids = LiveChildren();
  pids.erase(std::remove(pids.begin(), pids.end(), pid), pids.end());
}

}  // namespace

void SetProgramName(std::string name) { Name() = std::move(name); }
const std::string& ProgramName() { return Name(); }
void SetDieHook(std::function<void()> hook) { DieHook() = std::move(hook); }

void Die(std::string_view message) {
  static std::atomic<bool> dying{false};
  if (dying.exchange(true)) {
    // Another thread is already cleaning up and will exit; what fails here
    // is most likely a consequence.
    while (true) ::pause();
  }
  std::fprintf(stderr, "%s: %.*s\n", Name().c_str(), static_cast<int>(message.size()),
               message.data());
  if (DieHook()) DieHook()();
  std::fflush(nullptr);
  // Not exit(): gRPC's threads may still be running, and static
  // destructors under them can hang.
  ::_exit(1);
}

void DieErrno(std::string_view what) { Die(StrCat(what, ": ", std::strerror(errno))); }

// --- Sizes, times and numbers ---

std::optional<uint64_t> ParseSize(std::string_view text) {
  uint64_t multiplier = 1;
  for (std::string_view suffix : {"iB", "ib", "B", "b"}) {
    if (text.size() > suffix.size() && text.ends_with(suffix)) {
      char unit = text[text.size() - suffix.size() - 1];
      if (std::strchr("KkMmGg", unit) != nullptr || suffix.size() == 1) {
        text.remove_suffix(suffix.size());
        break;
      }
    }
  }
  if (!text.empty()) {
    switch (text.back()) {
      case 'K':
      case 'k':
        multiplier = kKiB;
        break;
      case 'M':
      case 'm':
        multiplier = kMiB;
        break;
      case 'G':
      case 'g':
        multiplier = kGiB;
        break;
      default:
        break;
    }
    if (multiplier != 1) text.remove_suffix(1);
  }
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  if (value > UINT64_MAX / multiplier) return std::nullopt;
  return value * multiplier;
}

std::optional<double> ParseSeconds(std::string_view text) {
  if (text.ends_with("s")) text.remove_suffix(1);
  std::string copy(text);
  char* end = nullptr;
  double value = std::strtod(copy.c_str(), &end);
  if (copy.empty() || end != copy.c_str() + copy.size() || !(value > 0) || value > 3600) {
    return std::nullopt;
  }
  return value;
}

std::string Grouped(double value) {
  if (!std::isfinite(value) || value < 0) return Fixed(value, 1);
  uint64_t v = static_cast<uint64_t>(value + 0.5);
  std::string digits = std::to_string(v);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out.push_back(',');
    out.push_back(digits[i]);
  }
  return out;
}

std::string Fixed(double value, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", decimals, value);
  return buf;
}

std::string Bytes(uint64_t n) {
  if (n >= kGiB && n % kGiB == 0) return StrCat(n / kGiB, " GiB");
  if (n >= kMiB && n % kMiB == 0) return StrCat(n / kMiB, " MiB");
  if (n >= kKiB && n % kKiB == 0) return StrCat(n / kKiB, " KiB");
  return StrCat(n, " B");
}

std::string MiB(uint64_t n) { return Fixed(static_cast<double>(n) / kMiB, 1) + " MiB"; }

double Median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  size_t mid = values.size() / 2;
  return values.size() % 2 == 1 ? values[mid] : (values[mid - 1] + values[mid]) / 2;
}

int64_t MonotonicNanos() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

std::string SelfExe() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) DieErrno("readlink /proc/self/exe");
  return std::string(buf, static_cast<size_t>(n));
}

// --- Child processes ---

Child Spawn(const std::vector<std::string>& argv, bool pipes, const std::string& log_path,
            int death_signal) {
  Child child;
  child.name = argv.at(0);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);

  int in[2] = {-1, -1};
  int out[2] = {-1, -1};
  int log_fd = -1;
  int null_fd = -1;
  if (pipes) {
    if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0) DieErrno("pipe2");
  } else {
    log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) DieErrno("open " + log_path);
    null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null_fd < 0) DieErrno("open /dev/null");
  }
  static constexpr char kExecFailed[] = "daemon_bench: exec failed\n";
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) DieErrno("fork");
  if (pid == 0) {
    // Async-signal-safe calls only from here to exec.
    if (::prctl(PR_SET_PDEATHSIG, death_signal) != 0 || ::getppid() != parent) ::_exit(127);
    sigset_t none;
    ::sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGPIPE, SIG_DFL);
    if (pipes) {
      if (::dup2(in[0], 0) < 0 || ::dup2(out[1], 1) < 0) ::_exit(127);
    } else {
      if (::dup2(null_fd, 0) < 0 || ::dup2(log_fd, 1) < 0 || ::dup2(log_fd, 2) < 0) ::_exit(127);
    }
    ::execv(args[0], args.data());
    ssize_t ignored = ::write(2, kExecFailed, sizeof(kExecFailed) - 1);
    (void)ignored;
    ::_exit(127);
  }
  child.pid = pid;
  {
    std::lock_guard<std::mutex> lock(ChildrenMu());
    LiveChildren().push_back(pid);
  }
  if (pipes) {
    ::close(in[0]);
    ::close(out[1]);
    child.to_child = in[1];
    child.from_child = out[0];
  } else {
    ::close(log_fd);
    ::close(null_fd);
  }
  return child;
}

bool WriteLine(Child& child, std::string_view line) {
  std::string data = StrCat(line, "\n");
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(child.to_child, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

std::optional<std::string> ReadLine(Child& child, double timeout_seconds) {
  const int64_t deadline = MonotonicNanos() + static_cast<int64_t>(timeout_seconds * 1e9);
  while (true) {
    size_t newline = child.read_buffer.find('\n');
    if (newline != std::string::npos) {
      std::string line = child.read_buffer.substr(0, newline);
      child.read_buffer.erase(0, newline + 1);
      return line;
    }
    int64_t left_ms = (deadline - MonotonicNanos()) / 1000000;
    if (left_ms <= 0) return std::nullopt;
    pollfd p{child.from_child, POLLIN, 0};
    int ready = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left_ms, 1000)));
    if (ready < 0 && errno != EINTR) DieErrno("poll");
    if (ready <= 0) continue;
    char buf[4096];
    ssize_t n = ::read(child.from_child, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return std::nullopt;
    child.read_buffer.append(buf, static_cast<size_t>(n));
  }
}

bool Exited(Child& child) {
  if (child.wait_status) return true;
  if (child.pid <= 0) return true;
  int status = 0;
  pid_t got = ::waitpid(child.pid, &status, WNOHANG);
  if (got == child.pid) {
    child.wait_status = status;
    Forget(child.pid);
    return true;
  }
  return false;
}

double Stop(Child& child, int signal, double grace_seconds, bool* killed) {
  *killed = false;
  if (child.to_child >= 0) {
    ::close(child.to_child);
    child.to_child = -1;
  }
  Stopwatch watch;
  if (!Exited(child)) {
    ::kill(child.pid, signal);
    while (!Exited(child) && watch.Seconds() < grace_seconds) ::usleep(5000);
    if (!Exited(child)) {
      ::kill(child.pid, SIGKILL);
      *killed = true;
      int status = 0;
      while (::waitpid(child.pid, &status, 0) < 0 && errno == EINTR) {
      }
      child.wait_status = status;
      Forget(child.pid);
    }
  }
  if (child.from_child >= 0) {
    ::close(child.from_child);
    child.from_child = -1;
  }
  return watch.Seconds();
}

std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) return StrCat("exit ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return StrCat("signal ", WTERMSIG(status), " (", strsignal(WTERMSIG(status)), ")");
  }
  return StrCat("status ", status);
}

void KillAllChildren() {
  std::vector<pid_t> pids;
  {
    std::lock_guard<std::mutex> lock(ChildrenMu());
    pids = LiveChildren();
    LiveChildren().clear();
  }
  for (pid_t pid : pids) ::kill(pid, SIGKILL);
  for (pid_t pid : pids) {
    int status;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
  }
}

// --- Memory of a process ---

ProcMemory ReadProcMemory(pid_t pid) {
  ProcMemory m;
  std::string path = StrCat("/proc/", pid, "/status");
  FILE* f = std::fopen(path.c_str(), "re");
  if (f == nullptr) return m;
  char line[256];
  int found = 0;
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    struct Field {
      const char* name;
      uint64_t* value;
    };
    for (const Field& field :
         {Field{"VmRSS:", &m.rss}, Field{"RssAnon:", &m.anon}, Field{"RssFile:", &m.file},
          Field{"RssShmem:", &m.shmem}, Field{"VmHWM:", &m.hwm}}) {
      size_t len = std::strlen(field.name);
      if (std::strncmp(line, field.name, len) == 0) {
        *field.value = std::strtoull(line + len, nullptr, 10) * kKiB;
        ++found;
      }
    }
  }
  std::fclose(f);
  // A process that has exited (a zombie) has no Vm lines.
  m.ok = found >= 2;
  return m;
}

RssSampler::RssSampler(pid_t pid, std::chrono::milliseconds period)
    : pid_(pid), period_(period), thread_([this] { Loop(); }) {}

RssSampler::~RssSampler() { Stop(); }

void RssSampler::SetPhase(std::string phase) {
  absl::MutexLock lock(&mu_);
  phase_ = std::move(phase);
}

void RssSampler::Stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

RssSampler::Peak RssSampler::overall() const {
  absl::MutexLock lock(&mu_);
  return overall_;
}

std::vector<std::pair<std::string, RssSampler::Peak>> RssSampler::phases() const {
  absl::MutexLock lock(&mu_);
  return phases_;
}

void RssSampler::Loop() {
  while (!stop_) {
    ProcMemory m = ReadProcMemory(pid_);
    if (m.ok) Record(m);
    std::this_thread::sleep_for(period_);
  }
}

void RssSampler::Record(const ProcMemory& m) {
  auto add = [&m](Peak& peak) {
    if (peak.samples == 0 || m.rss > peak.at_peak.rss) peak.at_peak = m;
    peak.max_anon = std::max(peak.max_anon, m.anon);
    peak.max_file = std::max(peak.max_file, m.file);
    ++peak.samples;
  };
  absl::MutexLock lock(&mu_);
  add(overall_);
  if (phases_.empty() || phases_.back().first != phase_) {
    const std::string& phase = phase_;
    auto it = std::find_if(phases_.begin(), phases_.end(),
                           [&phase](const auto& p) { return p.first == phase; });
    if (it == phases_.end()) {
      phases_.emplace_back(phase_, Peak{});
      it = phases_.end() - 1;
    }
    add(it->second);
  } else {
    add(phases_.back().second);
  }
}

// --- Report ---

namespace {

std::string FormatValue(double value, std::string_view unit) {
  if (unit == "MiB") return Fixed(value, 1);
  return Grouped(value);
}

std::string JoinValues(const std::vector<double>& values, std::string_view unit) {
  std::string out;
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out += " / ";
    out += FormatValue(values[i], unit);
  }
  return out;
}

std::string RatioText(const Row& r) {
  if (!r.ratio_text.empty()) return r.ratio_text;
  if (r.ratios.empty()) return "-";
  if (r.ratios.size() == 1) return Fixed(r.ratios[0], 2) + "x";
  std::string out;
  for (size_t i = 0; i < r.ratios.size(); ++i) {
    if (i > 0) out += " / ";
    out += Fixed(r.ratios[i], 2);
  }
  return StrCat(out, " (median ", Fixed(Median(r.ratios), 2), "x)");
}

const char* VerdictText(Verdict v) {
  switch (v) {
    case Verdict::kMet:
      return "met";
    case Verdict::kMissed:
      return "MISSED";
    case Verdict::kFailed:
      return "FAILED";
    case Verdict::kNotRun:
      return "not run";
    case Verdict::kInfo:
      break;
  }
  return "-";
}

const char* VerdictJson(Verdict v) {
  switch (v) {
    case Verdict::kMet:
      return "met";
    case Verdict::kMissed:
      return "missed";
    case Verdict::kFailed:
      return "failed";
    case Verdict::kNotRun:
      return "not_run";
    case Verdict::kInfo:
      break;
  }
  return "info";
}

}  // namespace

void PrintTable(const std::vector<Row>& rows) {
  std::vector<std::vector<std::string>> cells = {
      {"measurement", "baseline (same run)", "store", "ratio", "target", "verdict"}};
  for (const Row& r : rows) {
    std::string baseline = "-";
    if (!r.baseline_name.empty()) {
      baseline = r.baseline.empty()
                     ? r.baseline_name
                     : StrCat(r.baseline_name, ": ", JoinValues(r.baseline, r.unit), " ", r.unit);
    }
    std::string store = !r.store_text.empty() ? r.store_text
                        : r.store.empty()     ? "-"
                                              : StrCat(JoinValues(r.store, r.unit), " ", r.unit);
    cells.push_back({r.measurement, baseline, store, RatioText(r),
                     r.target.empty() ? "-" : r.target,
                     r.selected ? VerdictText(r.verdict) : "not selected"});
  }
  std::vector<size_t> width(cells[0].size(), 0);
  for (const auto& line : cells) {
    for (size_t c = 0; c < line.size(); ++c) width[c] = std::max(width[c], line[c].size());
  }
  auto print_line = [&](const std::vector<std::string>& line) {
    std::string out = "|";
    for (size_t c = 0; c < line.size(); ++c) {
      out += " " + line[c] + std::string(width[c] - line[c].size(), ' ') + " |";
    }
    std::puts(out.c_str());
  };
  print_line(cells[0]);
  std::vector<std::string> rule;
  for (size_t w : width) rule.push_back(std::string(w, '-'));
  print_line(rule);
  for (size_t i = 1; i < cells.size(); ++i) print_line(cells[i]);
}

void Json::Separate() {
  if (after_key_) {
    after_key_ = false;
    return;
  }
  if (!first_.empty()) {
    if (!first_.back()) out_ += ",";
    first_.back() = false;
    Indent();
  }
}

void Json::Indent() {
  out_ += '\n';
  out_.append(2 * first_.size(), ' ');
}

Json& Json::BeginObject() {
  Separate();
  out_ += "{";
  first_.push_back(true);
  return *this;
}

Json& Json::EndObject() {
  bool empty = first_.back();
  first_.pop_back();
  if (!empty) Indent();
  out_ += "}";
  if (first_.empty()) out_ += "\n";
  return *this;
}

Json& Json::BeginArray() {
  Separate();
  out_ += "[";
  first_.push_back(true);
  return *this;
}

Json& Json::EndArray() {
  bool empty = first_.back();
  first_.pop_back();
  if (!empty) Indent();
  out_ += "]";
  return *this;
}

Json& Json::Key(std::string_view key) {
  String(key);
  out_ += ": ";
  after_key_ = true;
  return *this;
}

Json& Json::String(std::string_view value) {
  Separate();
  out_ += '"';
  for (char c : value) {
    switch (c) {
      case '"':
        out_ += "\\\"";
        break;
      case '\\':
        out_ += "\\\\";
        break;
      case '\n':
        out_ += "\\n";
        break;
      case '\t':
        out_ += "\\t";
        break;
      case '\r':
        out_ += "\\r";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out_ += buf;
        } else {
          out_ += c;
        }
    }
  }
  out_ += '"';
  return *this;
}

Json& Json::Number(double value) {
  if (!std::isfinite(value)) return Null();
  Separate();
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.10g", value);
  out_ += buf;
  return *this;
}

Json& Json::Integer(int64_t value) {
  Separate();
  out_ += std::to_string(value);
  return *this;
}

Json& Json::Bool(bool value) {
  Separate();
  out_ += value ? "true" : "false";
  return *this;
}

Json& Json::Null() {
  Separate();
  out_ += "null";
  return *this;
}

Json& Json::Numbers(const std::vector<double>& values) {
  Separate();
  out_ += "[";
  for (size_t i = 0; i < values.size(); ++i) {
    char buf[64];
    if (std::isfinite(values[i])) {
      std::snprintf(buf, sizeof(buf), "%.10g", values[i]);
    } else {
      std::snprintf(buf, sizeof(buf), "null");
    }
    out_ += (i > 0 ? ", " : "");
    out_ += buf;
  }
  out_ += "]";
  return *this;
}

void AppendRowJson(Json& json, const Row& row) {
  json.BeginObject();
  json.Key("id").String(row.id);
  json.Key("measurement").String(row.measurement);
  json.Key("unit").String(row.unit);
  json.Key("baseline_name").String(row.baseline_name);
  json.Key("baseline").Numbers(row.baseline);
  json.Key("store").Numbers(row.store);
  json.Key("ratios").Numbers(row.ratios);
  json.Key("judged");
  if (row.judged) {
    json.Number(*row.judged);
  } else {
    json.Null();
  }
  json.Key("threshold");
  if (row.threshold) {
    json.Number(*row.threshold);
  } else {
    json.Null();
  }
  json.Key("target").String(row.target);
  json.Key("verdict").String(row.selected ? VerdictJson(row.verdict) : "not_selected");
  json.Key("note").String(row.note);
  json.EndObject();
}

}  // namespace packstore::bench
