// The commands of the packstore tool and what they share: the global
// options, the store they work on (opened on first use: the daemon, or the
// folder --store names) and stdout.
//
// Each Add*Commands function adds its subcommands to the CLI11 app and
// appends, for each, the function that runs it once parsed; the function
// returns the exit code (output.h).
//
// Thread-safety: the tool is single-threaded; a Context is used from the
// main thread only.
#ifndef PACKSTORE_CLIENT_CLI_COMMAND_H_
#define PACKSTORE_CLIENT_CLI_COMMAND_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "client/cli/folder_store.h"
#include "client/cli/output.h"
#include "client/cli/store.h"

namespace packstore::cli {

struct GlobalOptions {
  std::string store_dir;  // --store / PACKSTORE_STORE: the folder mode
  std::string socket;     // --socket / PACKSTORE_SOCKET: the daemon's
};

class Context {
 public:
  explicit Context(GlobalOptions options) : options_(std::move(options)) {}

  const GlobalOptions& options() const { return options_; }
  Store::Kind kind() const {
    return options_.store_dir.empty() ? Store::Kind::kDaemon : Store::Kind::kFolder;
  }
  // The store the global options name, opened on first call. `access`
  // says how a folder is opened (folder_store.h); the daemon ignores it.
  absl::StatusOr<Store*> OpenStore(FolderStore::Access access);
  StdoutWriter& out() { return out_; }
  // Reports a failure the way the store's mode wants (output.h); `lookup`
  // for commands whose NOT_FOUND means a missing object.
  int Fail(const absl::Status& status, bool lookup = false) {
    out_.Flush().IgnoreError();
    return cli::Fail(status, kind(), lookup);
  }

 private:
  GlobalOptions options_;
  std::unique_ptr<Store> store_;
  StdoutWriter out_;
};

struct Command {
  CLI::App* app;
  std::function<int(Context&)> run;
};
using Commands = std::vector<Command>;

// init, status, import.
void AddStoreCommands(CLI::App& app, Commands& commands);
// put / add-files, get, cat, ls, stat, has, rm.
void AddObjectCommands(CLI::App& app, Commands& commands);
// pack, optimize, repack, clean, validate.
void AddMaintenanceCommands(CLI::App& app, Commands& commands);
// backup.
void AddBackupCommand(CLI::App& app, Commands& commands);

// Validators for --to and --compress.
std::string CheckPlacement(const std::string& value);
std::string CheckCompress(const std::string& value);

}  // namespace packstore::cli

#endif  // PACKSTORE_CLIENT_CLI_COMMAND_H_
