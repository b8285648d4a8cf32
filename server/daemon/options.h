// DaemonOptions: everything packstored can be told, from its command line
// and the config file --config names (docs/operations.md lists each key).
//
// The config file holds `key = value` lines whose keys are the long flag
// names without dashes in front (`max-object-size = 64MiB`, lists as
// `allow-uid = [1000, 1001]`); a flag given on the command line wins over
// the file. An unknown key is an error, so a typo is not silently ignored.
// A missing config file is an error too, except for the default path the
// packaged unit names (kDefaultConfigPath): an installation need not have
// one.
//
//   DaemonOptions options;
//   if (std::optional<int> exit_code = ParseCommandLine(argc, argv, &options)) {
//     return *exit_code;  // --help, --version or a usage error (printed)
//   }
//   ...
//   absl::StatusOr<DaemonOptions> reloaded = LoadOptions(args);  // SIGHUP
//
// Thread-safety: free functions without shared state.
#ifndef PACKSTORE_SERVER_DAEMON_OPTIONS_H_
#define PACKSTORE_SERVER_DAEMON_OPTIONS_H_

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "server/service/service.h"

namespace packstore::daemon {

inline constexpr std::string_view kDefaultConfigPath = "/etc/packstore/packstored.conf";

// What the maintenance scheduler does on its own (maintenance_scheduler.h).
// Intervals in seconds; 0 turns the step off.
struct MaintenancePolicy {
  // Pack the loose objects once the loose backlog reaches either threshold.
  bool auto_pack = true;
  uint64_t pack_loose_objects = 10000;
  uint64_t pack_loose_bytes = uint64_t{1} << 30;
  // Delete the loose copies of what was packed, and stale sandbox files.
  bool clean_after_pack = true;
  // How often the auto-pack thresholds are checked.
  int64_t maintenance_interval_seconds = 30;
  int64_t checkpoint_interval_seconds = 300;
  int64_t unmap_idle_interval_seconds = 60;

  bool operator==(const MaintenancePolicy&) const = default;
};

struct DaemonOptions {
  // The config file read (empty: none).
  std::string config_file;

  // Store.
  std::string store = "/var/lib/packstore";
  bool init = false;
  uint64_t cache_max_mapped_bytes = 0;  // set to the engine's default

  // Socket & access. Admin lists left empty here; the daemon fills in its
  // own uid and root (WithDefaultAdmins).
  std::string socket = "/run/packstore/packstore.sock";
  mode_t socket_mode = 0660;
  // Serve the local fast path (PSFD1) on the socket besides gRPC.
  bool fast_path = true;

  // Limits, put modes, workers and access: what the service takes.
  service::ServiceOptions service;

  MaintenancePolicy maintenance;
  int64_t shutdown_timeout_seconds = 30;

  // trace, debug, info, warn or error.
  std::string log_level = "info";
};

// Parses argv (and the config file). Returns nullopt to go on running, or
// the exit code to leave with after --help or --version (0) or a usage
// error (2); CLI11 has printed what to print.
std::optional<int> ParseCommandLine(int argc, const char* const* argv, DaemonOptions* options);

// Parses the arguments again (argv without the program name), re-reading
// the config file: what SIGHUP does. INVALID_ARGUMENT with the parser's
// message for a bad value or a missing or unreadable config file.
absl::StatusOr<DaemonOptions> LoadOptions(const std::vector<std::string>& args);

// `access` with the default admins (`own_uid` and root) when it names none.
service::AccessPolicy WithDefaultAdmins(service::AccessPolicy access, uid_t own_uid);

// "1GiB", "64KiB", "4096": the shortest exact spelling of `bytes` that the
// SIZE options accept.
std::string FormatSize(uint64_t bytes);

std::string_view DefaultPutModeName(service::DefaultPutMode mode);

}  // namespace packstore::daemon

#endif  // PACKSTORE_SERVER_DAEMON_OPTIONS_H_
