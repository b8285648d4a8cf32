// ProgressLine: see progress.h.
#include "client/cli/progress.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

namespace packstore::cli {
namespace {

constexpr auto kRedrawInterval = std::chrono::milliseconds(100);
constexpr int kDefaultColumns = 80;
constexpr int kMaxBarWidth = 30;

int TerminalColumns() {
  struct winsize ws {};
  if (::ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return kDefaultColumns;
}

std::string Format(const char* format, double value) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), format, value);
  return buf;
}

// "950", "12.3k", "4.1M".
std::string HumanCount(double n) {
  if (n < 1000) return Format("%.0f", n);
  if (n < 1e6) return Format("%.1fk", n / 1e3);
  return Format("%.1fM", n / 1e6);
}

void WriteStderr(std::string_view text) {
  // Progress is best effort: a failed write to the terminal is ignored.
  while (!text.empty()) {
    ssize_t n = ::write(STDERR_FILENO, text.data(), text.size());
    if (n <= 0) return;
    text.remove_prefix(static_cast<size_t>(n));
  }
}

}  // namespace

bool StderrIsTerminal() {
  static const bool terminal = ::isatty(STDERR_FILENO) == 1;
  return terminal;
}

std::string HumanBytes(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double value = static_cast<double>(bytes);
  size_t unit = 0;
  while (value >= 1024 && unit + 1 < std::size(kUnits)) {
    value /= 1024;
    ++unit;
  }
  if (unit == 0) return std::to_string(bytes) + " B";
  return Format("%.1f", value) + " " + kUnits[unit];
}

ProgressLine::ProgressLine(Unit unit, bool enabled)
    : default_unit_(unit), enabled_(enabled), unit_(unit) {}

ProgressLine::~ProgressLine() { Finish(); }

void ProgressLine::Update(std::string_view phase, uint64_t done, uint64_t total) {
  Update(phase, done, total, default_unit_);
}

void ProgressLine::Update(std::string_view phase, uint64_t done, uint64_t total, Unit unit) {
  if (!enabled_) return;
  absl::MutexLock lock(&mu_);
  bool new_phase = phase != phase_;
  if (new_phase) {
    FinishLocked();
    phase_ = std::string(phase);
    unit_ = unit;
    started_ = Clock::now();
    drawn_ = false;
  }
  done_ = done;
  total_ = total;
  DrawLocked(new_phase || (total != 0 && done >= total));
}

void ProgressLine::SetBytes(uint64_t bytes) {
  if (!enabled_) return;
  absl::MutexLock lock(&mu_);
  bytes_ = bytes;
}

void ProgressLine::Clear() {
  if (!enabled_) return;
  absl::MutexLock lock(&mu_);
  if (visible_) WriteStderr("\r\033[K");
  visible_ = false;
}

void ProgressLine::Finish() {
  if (!enabled_) return;
  absl::MutexLock lock(&mu_);
  FinishLocked();
}

ProgressFn ProgressLine::Callback() { return Callback(default_unit_); }

ProgressFn ProgressLine::Callback(Unit unit) {
  if (!enabled_) return {};
  return [this, unit](const Progress& p) { Update(p.phase, p.done, p.total, unit); };
}

void ProgressLine::FinishLocked() {
  if (!drawn_) return;
  DrawLocked(true);
  WriteStderr("\n");
  visible_ = false;
  drawn_ = false;
  phase_.clear();
  bytes_.reset();
}

void ProgressLine::DrawLocked(bool force) {
  Clock::time_point now = Clock::now();
  if (!force && drawn_ && now - drawn_at_ < kRedrawInterval) return;
  drawn_at_ = now;
  double seconds = std::chrono::duration<double>(now - started_).count();
  double rate = seconds > 0.05 ? static_cast<double>(done_) / seconds : 0;

  // Built with append: GCC 12 at -O3 warns falsely (-Wrestrict) about
  // `"literal" + std::string` here.
  std::string amount, rate_text;
  if (unit_ == Unit::kBytes) {
    amount = HumanBytes(done_);
    if (total_) amount.append("/").append(HumanBytes(total_));
    if (rate > 0) rate_text.append(HumanBytes(static_cast<uint64_t>(rate))).append("/s");
  } else {
    amount = std::to_string(done_);
    if (total_) amount.append("/").append(std::to_string(total_));
    if (bytes_) amount.append(", ").append(HumanBytes(*bytes_));
    if (rate > 0) rate_text.append(HumanCount(rate)).append("/s");
    if (rate > 0 && bytes_ && seconds > 0.05) {
      rate_text.append(", ").append(HumanBytes(static_cast<uint64_t>(*bytes_ / seconds))).append("/s");
    }
  }
  std::string tail;
  tail.append("  ").append(amount);
  if (total_) {
    tail.append("  ").append(std::to_string(100 * std::min(done_, total_) / total_)).append("%");
  }
  if (!rate_text.empty()) tail.append("  ").append(rate_text);
  int columns = TerminalColumns();
  std::string line = phase_;
  int room = columns - 1 - static_cast<int>(line.size() + tail.size()) - 4;
  if (total_ && room >= 10) {
    int width = std::min(room, kMaxBarWidth);
    int filled = static_cast<int>(static_cast<double>(width) * std::min(done_, total_) / total_);
    std::string bar(static_cast<size_t>(width), ' ');
    std::fill_n(bar.begin(), filled, '=');
    if (filled < width && filled > 0) bar[static_cast<size_t>(filled)] = '>';
    line.append("  [").append(bar).append("]");
  }
  line += tail;
  if (line.size() >= static_cast<size_t>(columns)) line.resize(static_cast<size_t>(columns - 1));
  WriteStderr("\r\033[K" + line);
  visible_ = true;
  drawn_ = true;
}

}  // namespace packstore::cli
