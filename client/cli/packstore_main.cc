// packstore: the command-line tool of the packstore object store. It talks
// to packstored over its socket, or works on a store folder directly with
// --store DIR (no daemon needed; the daemon must not be running for the
// commands that write packs). Every command is written once against the
// Store interface (store.h); see command.h for how they are put together.
#include <iostream>
#include <string>

#include "CLI/CLI.hpp"
#include "client/cli/command.h"
#include "client/cli/daemon_store.h"

namespace packstore::cli {
namespace {

constexpr const char* kFooter = R"(Where:
  Without --store the tool talks to packstored on --socket (default:
  $PACKSTORE_SOCKET, else /run/packstore/packstore.sock). Maintenance
  (pack, optimize, repack, clean, rm, validate) needs admin rights on the
  daemon. With --store DIR (or $PACKSTORE_STORE) it opens the store folder
  itself; init works only there.

Exit codes:
  0  success
  1  a negative answer: validate found issues, has found a key absent,
     get/cat/stat/rm met a missing object, pack met corrupt loose objects,
     a backup did not validate
  2  bad usage or any other error (no daemon, not allowed, I/O, ...)
  With --store the codes of the offline tool hold: every failure other
  than bad usage or a malformed key is 1, and has and rm exit 0 whatever
  they find.)";

int Run(int argc, char** argv) {
  CLI::App app{"packstore: a content-addressed object store (disk-objectstore's format)"};
  app.require_subcommand(1);
  app.fallthrough();
  GlobalOptions options;
  app.add_option("--store,--path", options.store_dir,
                 "work on this store folder directly, without the daemon")
      ->envname("PACKSTORE_STORE");
  app.add_option("--socket", options.socket,
                 "packstored's socket (default " + DefaultDaemonSocket() + ")")
      ->envname("PACKSTORE_SOCKET");

  Commands commands;
  AddStoreCommands(app, commands);
  AddObjectCommands(app, commands);
  AddMaintenanceCommands(app, commands);
  AddBackupCommand(app, commands);
  // After the subcommands, which would inherit it.
  app.footer(kFooter);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    return app.exit(error) == 0 ? kExitOk : kExitError;
  }
  Context ctx(std::move(options));
  for (const Command& command : commands) {
    if (command.app->parsed()) return command.run(ctx);
  }
  return kExitError;
}

}  // namespace
}  // namespace packstore::cli

int main(int argc, char** argv) { return packstore::cli::Run(argc, argv); }
