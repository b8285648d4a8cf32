// Logging for packstored: spdlog's default logger, writing to stderr.
//
// Every part of the daemon logs through spdlog's free functions on the
// default logger (the service too, for its per-request debug lines):
//
//   #include "spdlog/spdlog.h"
//   spdlog::debug("get {} from uid {}", key, peer.uid);
//
// Under systemd (JOURNAL_STREAM names the stderr we write to) each line
// starts with its journald priority (<7> debug and trace, <6> info,
// <4> warning, <3> error, <2> critical) and has no timestamp, which the
// journal adds itself; elsewhere lines carry a local timestamp. gRPC's own
// messages go through the same logger.
//
// Thread-safety: SetUpLogging once at start-up, before other threads log;
// SetLogLevel and logging from any thread.
#ifndef PACKSTORE_SERVER_DAEMON_LOGGING_H_
#define PACKSTORE_SERVER_DAEMON_LOGGING_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "spdlog/common.h"

namespace packstore::daemon {

// trace, debug, info, warn or error; INVALID_ARGUMENT for anything else.
absl::StatusOr<spdlog::level::level_enum> ParseLogLevel(std::string_view name);
std::string_view LogLevelName(spdlog::level::level_enum level);

// Installs the default logger at `level`.
void SetUpLogging(spdlog::level::level_enum level);
void SetLogLevel(spdlog::level::level_enum level);

// Whether stderr is the journal's stream (lines carry priorities).
bool LoggingToJournal();

// For people reading the log: "12.3 MiB", "512 B".
std::string HumanSize(uint64_t bytes);
// "1.234s", "12ms", "183us": to the millisecond, or the microsecond below one.
std::string ShortDuration(absl::Duration duration);

}  // namespace packstore::daemon

#endif  // PACKSTORE_SERVER_DAEMON_LOGGING_H_
