// packstored: the packstore daemon. See daemon.h for its life cycle and
// docs/operations.md for running it.
#include <malloc.h>
#include <signal.h>

#include <cstdlib>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "spdlog/spdlog.h"
#include "server/daemon/daemon.h"
#include "server/daemon/logging.h"
#include "server/daemon/options.h"

int main(int argc, char** argv) {
  // Debian's Abseil checks every Mutex acquisition for lock-order cycles,
  // which costs a global graph update per lock; the tests do that checking.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  // glibc gives each thread that allocates its own arena (up to 8 per
  // core), and freed memory stays in them: gRPC's threads and the workers
  // then hold 2-3x the daemon's working set (measured: RssAnon 120 MiB
  // during bulk reads, 49 MiB with two arenas, at the same speed).
  ::mallopt(M_ARENA_MAX, 2);
  // A client that hangs up mid-write must cost an EPIPE, not the process.
  ::signal(SIGPIPE, SIG_IGN);

  packstore::daemon::DaemonOptions options;
  if (std::optional<int> exit_code = packstore::daemon::ParseCommandLine(argc, argv, &options)) {
    return *exit_code;
  }
  // ParseCommandLine checked the name.
  packstore::daemon::SetUpLogging(
      packstore::daemon::ParseLogLevel(options.log_level).value_or(spdlog::level::info));

  packstore::daemon::Daemon daemon(std::move(options),
                                   std::vector<std::string>(argv + 1, argv + argc));
  const int exit_code = daemon.Run();
  // The store is closed and durable by now. Skipping static destructors
  // spares gRPC's library teardown, which waits about a second for its
  // background threads: a restart (systemctl restart, SIGTERM then a new
  // instance) is that much faster.
  spdlog::shutdown();
  std::_Exit(exit_code);
}
