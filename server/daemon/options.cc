#include "server/daemon/options.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <array>
#include <cstdlib>
#include <exception>
#include <utility>

#include "CLI/CLI.hpp"
#include "common/str_cat.h"
#include "server/cache/region_cache.h"

namespace packstore::daemon {
namespace {

constexpr int kUsageExitCode = 2;

// Text options turned into their typed fields once CLI11 is done.
struct TextOptions {
  std::string socket_mode = "0660";
  std::string default_mode = "auto";
};

// CLI11's size parser (4096, 64KiB, 16MiB, 1GiB; k and KiB both mean 1024),
// described in the help by the SIZE type name and the footer rather than
// by its own list of units.
CLI::Validator SizeValue() {
  CLI::Validator size = CLI::AsSizeValue(/*kb_is_1000=*/false);
  size.description("");
  return size;
}

// A range check whose name would clutter the type in the help.
CLI::Validator Unnamed(CLI::Validator validator) {
  validator.description("");
  return validator;
}

CLI::Validator OctalMode() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        char* end = nullptr;
        unsigned long mode = std::strtoul(text.c_str(), &end, 8);
        if (text.empty() || *end != '\0' || mode > 07777) {
          return StrCat("not an octal file mode: '", text, "'");
        }
        return {};
      },
      "", "OCTAL");
}

// The packaged unit always passes --config with the default path; an
// installation without that file runs on defaults. Any other missing file
// stays an error. (CLI11 skips a config file whose name is empty.)
CLI::Validator SkipMissingDefaultConfig() {
  return CLI::Validator(
      [](std::string& path) -> std::string {
        struct stat st;
        if (path == kDefaultConfigPath && ::stat(path.c_str(), &st) != 0) path.clear();
        return {};
      },
      "", "config");
}

void AddOptions(CLI::App& app, DaemonOptions& o, TextOptions& text) {
  app.description(
      "packstored: the packstore object store daemon. Serves one store (a\n"
      "disk-objectstore container) over gRPC on a Unix socket, and keeps it\n"
      "packed, checkpointed and consistent.");
  app.footer(
      "SIZE values: a byte count with an optional unit, e.g. 4096, 64KiB, 16MiB, 1GiB\n"
      "(KiB and K both mean 1024). Intervals are in seconds; 0 turns a step off.\n"
      "Config file: one `key = value` per line, keys are the long flag names\n"
      "(e.g. `max-object-size = 64MiB`, `allow-uid = [1000, 1001]`); flags win.\n"
      "Signals: SIGTERM/SIGINT shut down, SIGHUP re-reads the config file.\n"
      "See docs/operations.md.");
  app.get_formatter()->column_width(36);
  app.option_defaults()->always_capture_default();
  app.allow_config_extras(CLI::config_extras_mode::error);
  app.set_version_flag("--version", StrCat("packstored ", PACKSTORE_VERSION));
  app.set_config(
         "--config", "",
         StrCat("Config file (keys: long flag names); a missing ", kDefaultConfigPath, " is fine"))
      ->type_name("FILE")
      ->transform(SkipMissingDefaultConfig());

  const std::string store_group = "Store";
  app.add_option("--store", o.store, "Store folder (a disk-objectstore container)")
      ->type_name("DIR")
      ->group(store_group);
  app.add_flag("--init", o.init, "Create the store if the folder is missing or empty")
      ->group(store_group);
  app.add_option("--default-mode", text.default_mode,
                 "Where puts that do not say go (auto: small to packs, large loose)")
      ->type_name("MODE")
      ->check(CLI::IsMember({"auto", "loose", "packed"}))
      ->group(store_group);
  app.add_option("--auto-packed-max-size", o.service.auto_packed_max_size,
                 "In auto mode, objects up to this size go to packs")
      ->type_name("SIZE")
      ->transform(SizeValue())
      ->default_str(FormatSize(o.service.auto_packed_max_size))
      ->group(store_group);
  app.add_option("--cache-max-mapped", o.cache_max_mapped_bytes,
                 "Most pack bytes mapped at once (the region cache)")
      ->type_name("SIZE")
      ->transform(SizeValue())
      ->default_str(FormatSize(o.cache_max_mapped_bytes))
      ->group(store_group);

  const std::string socket_group = "Socket & access";
  app.add_option("--socket", o.socket, "Socket to bind (ignored when systemd passes one)")
      ->type_name("PATH")
      ->group(socket_group);
  app.add_option("--socket-mode", text.socket_mode, "File mode of the socket bound here")
      ->type_name("OCTAL")
      ->check(OctalMode())
      ->group(socket_group);
  app.add_option("--fast-path", o.fast_path,
                 "Also hand local clients file descriptors (PSFD1), not only gRPC")
      ->type_name("BOOL")
      ->default_str(o.fast_path ? "true" : "false")
      ->group(socket_group);
  app.add_option("--allow-uid", o.service.access.allow_uids,
                 "Only these users may connect (none: all the socket's mode lets in)")
      ->type_name("UID")
      ->delimiter(',')
      ->default_str("")
      ->group(socket_group);
  app.add_option("--allow-gid", o.service.access.allow_gids,
                 "... and users whose primary group is one of these")
      ->type_name("GID")
      ->delimiter(',')
      ->default_str("")
      ->group(socket_group);
  app.add_option("--admin-uid", o.service.access.admin_uids,
                 "Users allowed maintenance calls (default: own uid and root)")
      ->type_name("UID")
      ->delimiter(',')
      ->default_str("")
      ->group(socket_group);
  app.add_option("--admin-gid", o.service.access.admin_gids,
                 "Primary groups allowed maintenance calls")
      ->type_name("GID")
      ->delimiter(',')
      ->default_str("")
      ->group(socket_group);

  const std::string limits_group = "Limits";
  service::Limits& limits = o.service.limits;
  app.add_option("--max-object-size", limits.max_object_size, "Largest object a put accepts")
      ->type_name("SIZE")
      ->transform(SizeValue())
      ->default_str(FormatSize(limits.max_object_size))
      ->group(limits_group);
  app.add_option("--max-message-size", limits.max_message_size,
                 "Largest gRPC message received (restart to change)")
      ->type_name("SIZE")
      ->transform(SizeValue())
      ->default_str(FormatSize(limits.max_message_size))
      ->group(limits_group);
  app.add_option("--max-streams", limits.max_concurrent_streams,
                 "Streaming calls at once, all clients together")
      ->type_name("N")
      ->check(Unnamed(CLI::PositiveNumber))
      ->group(limits_group);
  app.add_option("--max-streams-per-client", limits.max_streams_per_client,
                 "Streaming calls at once from one client process (0: a quarter of "
                 "--max-streams)")
      ->type_name("N")
      ->check(Unnamed(CLI::NonNegativeNumber))
      ->group(limits_group);
  app.add_option("--stream-idle-timeout", limits.stream_idle_timeout_seconds,
                 "Cancel a streaming call whose client took and sent nothing for this long "
                 "(0: never)")
      ->type_name("SECONDS")
      ->check(Unnamed(CLI::NonNegativeNumber))
      ->group(limits_group);
  app.add_option("--free-disk-reserve", limits.free_disk_reserve,
                 "Refuse writes when less disk space than this is free")
      ->type_name("SIZE")
      ->transform(SizeValue())
      ->default_str(FormatSize(limits.free_disk_reserve))
      ->group(limits_group);
  app.add_option("--workers", o.service.worker_threads,
                 "Threads for reads and loose writes (0: 2 per core, >= 4)")
      ->type_name("N")
      ->check(Unnamed(CLI::NonNegativeNumber))
      ->group(limits_group);
  app.add_option("--shutdown-timeout", o.shutdown_timeout_seconds,
                 "Time calls in flight get at shutdown before cancellation")
      ->type_name("SECONDS")
      ->check(Unnamed(CLI::NonNegativeNumber))
      ->group(limits_group);

  const std::string maintenance_group = "Maintenance";
  MaintenancePolicy& m = o.maintenance;
  app.add_option("--auto-pack", m.auto_pack,
                 "Pack loose objects once either threshold below is reached")
      ->type_name("BOOL")
      ->default_str(m.auto_pack ? "true" : "false")
      ->group(maintenance_group);
  app.add_option("--pack-loose-objects", m.pack_loose_objects,
                 "Threshold: loose objects written since the last pack")
      ->type_name("N")
      ->group(maintenance_group);
  app.add_option("--pack-loose-bytes", m.pack_loose_bytes,
                 "Threshold: loose bytes written since the last pack")
      ->type_name("SIZE")
      ->transform(SizeValue())
      ->default_str(FormatSize(m.pack_loose_bytes))
      ->group(maintenance_group);
  app.add_option("--clean-after-pack", m.clean_after_pack,
                 "Then delete packed loose copies and stale sandbox files")
      ->type_name("BOOL")
      ->default_str(m.clean_after_pack ? "true" : "false")
      ->group(maintenance_group);
  app.add_option("--maintenance-interval", m.maintenance_interval_seconds,
                 "How often the auto-pack thresholds are checked")
      ->type_name("SECONDS")
      ->check(Unnamed(CLI::NonNegativeNumber))
      ->group(maintenance_group);
  app.add_option("--checkpoint-interval", m.checkpoint_interval_seconds,
                 "How often the index's WAL is checkpointed")
      ->type_name("SECONDS")
      ->check(Unnamed(CLI::NonNegativeNumber))
      ->group(maintenance_group);
  app.add_option("--unmap-idle-interval", m.unmap_idle_interval_seconds,
                 "How often pack windows left unread are unmapped")
      ->type_name("SECONDS")
      ->check(Unnamed(CLI::NonNegativeNumber))
      ->group(maintenance_group);

  app.add_option("--log-level", o.log_level, "Least severe messages logged")
      ->type_name("LEVEL")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}))
      ->group("Logging");
}

DaemonOptions DefaultOptions() {
  DaemonOptions options;
  options.cache_max_mapped_bytes = DefaultMaxMappedBytes();
  return options;
}

// Fills the typed fields from their text once parsing succeeded.
void Finish(const CLI::App& app, const TextOptions& text, DaemonOptions& options) {
  options.socket_mode = static_cast<mode_t>(std::strtoul(text.socket_mode.c_str(), nullptr, 8));
  if (text.default_mode == "loose") {
    options.service.default_mode = service::DefaultPutMode::kLoose;
  } else if (text.default_mode == "packed") {
    options.service.default_mode = service::DefaultPutMode::kPacked;
  } else {
    options.service.default_mode = service::DefaultPutMode::kAuto;
  }
  options.config_file = app.get_config_ptr()->as<std::string>();
  // Absolute, so that Status tells clients (a backup, say) where the store
  // is wherever they run.
  std::error_code error;
  const std::filesystem::path store = std::filesystem::absolute(options.store, error);
  if (!error) options.store = store.lexically_normal().string();
  options.service.version = StrCat("packstored ", PACKSTORE_VERSION);
}

// Fills `options` from `args` (argv without the program name) and the
// config file they name. Throws CLI11's ParseError, which `app` can report.
void ParseInto(CLI::App& app, std::vector<std::string> args, DaemonOptions& options) {
  options = DefaultOptions();
  TextOptions text;
  app.name("packstored");
  AddOptions(app, options, text);
  // CLI11 wants the arguments last first.
  std::reverse(args.begin(), args.end());
  app.parse(args);
  Finish(app, text, options);
}

}  // namespace

std::optional<int> ParseCommandLine(int argc, const char* const* argv, DaemonOptions* options) {
  CLI::App app;
  try {
    ParseInto(app, std::vector<std::string>(argv + 1, argv + argc), *options);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : kUsageExitCode;
  }
  return std::nullopt;
}

absl::StatusOr<DaemonOptions> LoadOptions(const std::vector<std::string>& args) {
  CLI::App app;
  DaemonOptions options;
  try {
    ParseInto(app, args, options);
  } catch (const CLI::ParseError& e) {
    return absl::InvalidArgumentError(e.what());
  }
  return options;
}

service::AccessPolicy WithDefaultAdmins(service::AccessPolicy access, uid_t own_uid) {
  if (access.admin_uids.empty() && access.admin_gids.empty()) {
    access.admin_uids.push_back(own_uid);
    if (own_uid != 0) access.admin_uids.push_back(0);
  }
  return access;
}

std::string FormatSize(uint64_t bytes) {
  constexpr std::array<std::pair<uint64_t, std::string_view>, 4> kUnits = {{
      {uint64_t{1} << 40, "TiB"},
      {uint64_t{1} << 30, "GiB"},
      {uint64_t{1} << 20, "MiB"},
      {uint64_t{1} << 10, "KiB"},
  }};
  for (const auto& [unit, name] : kUnits) {
    if (bytes != 0 && bytes % unit == 0) return StrCat(bytes / unit, name);
  }
  return StrCat(bytes);
}

std::string_view DefaultPutModeName(service::DefaultPutMode mode) {
  switch (mode) {
    case service::DefaultPutMode::kAuto:
      return "auto";
    case service::DefaultPutMode::kLoose:
      return "loose";
    case service::DefaultPutMode::kPacked:
      return "packed";
  }
  return "auto";
}

}  // namespace packstore::daemon
