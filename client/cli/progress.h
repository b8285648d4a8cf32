// ProgressLine: a progress bar for long work (pack, validate, backup,
// add-files, big transfers), drawn on stderr only when stderr is a
// terminal, so output that is piped or captured stays free of it.
//
//   pack  [=========>          ]  4812/10000  48%  2.1k/s
//   get   [====>               ]  1.2 GiB/4.0 GiB  30%  812.4 MiB/s
//
// It redraws at most ten times a second (and when a phase ends), and
// erases itself before other output goes to the terminal (Clear).
//
// Nothing here fails: a write to stderr that fails is dropped, as a
// progress bar is only a courtesy.
//
// Thread-safety: every method may be called from any thread.
#ifndef PACKSTORE_CLIENT_CLI_PROGRESS_H_
#define PACKSTORE_CLIENT_CLI_PROGRESS_H_

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "client/cli/store.h"

namespace packstore::cli {

// Whether stderr is a terminal (progress is drawn only then).
bool StderrIsTerminal();

// "1.5 MiB", "12 B".
std::string HumanBytes(uint64_t bytes);

class ProgressLine {
 public:
  enum class Unit { kCount, kBytes };

  explicit ProgressLine(Unit unit = Unit::kCount, bool enabled = StderrIsTerminal());
  ~ProgressLine();
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;

  bool enabled() const { return enabled_; }
  // Shows `phase` at done of total (total 0: unknown), counted in `unit`
  // (default: the line's). A new phase ends the line of the one before and
  // restarts the rate.
  void Update(std::string_view phase, uint64_t done, uint64_t total);
  void Update(std::string_view phase, uint64_t done, uint64_t total, Unit unit);
  // A byte count shown beside a count of items (add-files: files and bytes).
  void SetBytes(uint64_t bytes);
  // Erases the line; the next Update draws it again.
  void Clear();
  // Draws the final state and ends the line (nothing if nothing was drawn).
  void Finish();
  // Update as a Store progress callback (empty when not enabled).
  ProgressFn Callback();
  ProgressFn Callback(Unit unit);

 private:
  using Clock = std::chrono::steady_clock;
  void DrawLocked(bool force) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Unit default_unit_;
  const bool enabled_;
  absl::Mutex mu_;
  Unit unit_ ABSL_GUARDED_BY(mu_);
  std::string phase_ ABSL_GUARDED_BY(mu_);
  uint64_t done_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t total_ ABSL_GUARDED_BY(mu_) = 0;
  std::optional<uint64_t> bytes_ ABSL_GUARDED_BY(mu_);
  Clock::time_point started_ ABSL_GUARDED_BY(mu_);
  Clock::time_point drawn_at_ ABSL_GUARDED_BY(mu_);
  bool visible_ ABSL_GUARDED_BY(mu_) = false;  // the line is on the screen now
  bool drawn_ ABSL_GUARDED_BY(mu_) = false;    // drawn at least once this phase
};

}  // namespace packstore::cli

#endif  // PACKSTORE_CLIENT_CLI_PROGRESS_H_
