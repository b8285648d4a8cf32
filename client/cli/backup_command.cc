// The backup command: see backup.h for what it does.
#include <iostream>
#include <memory>
#include <string>

#include "client/cli/backup.h"
#include "client/cli/command.h"
#include "client/cli/progress.h"
#include "common/str_cat.h"

namespace packstore::cli {
namespace {

// Issues listed on stderr when a backup does not validate.
constexpr size_t kIssuesShown = 20;

struct BackupArgs {
  BackupRequest request;
  bool no_validate = false;
};

int RunBackup(Context& ctx, BackupArgs& args) {
  args.request.validate = !args.no_validate;
  absl::StatusOr<Store*> store = ctx.OpenStore(FolderStore::Access::kReader);
  if (!store.ok()) return ctx.Fail(store.status());
  ProgressLine line;
  BackupProgress progress{line.Callback(), line.Callback(ProgressLine::Unit::kBytes),
                          line.Callback()};
  absl::StatusOr<BackupReport> report = BackupStore(**store, args.request, progress);
  line.Finish();
  if (!report.ok()) return ctx.Fail(report.status());
  const BackupReport& r = *report;
  std::string text =
      StrCat("backed up ", r.source, " into ", r.path, ": ", r.loose_objects, " loose objects, ",
             r.packs, " packs (", r.pack_bytes, " bytes), an index of ", r.index_rows, " objects (",
             r.attempts, r.attempts == 1 ? " attempt)\n" : " attempts)\n");
  if (r.validation) {
    text +=
        StrCat("checked ", r.validation->loose_checked, " loose and ", r.validation->packed_checked,
               " packed objects: ", r.validation->issues.size(), " issues\n");
  }
  if (r.linked) {
    text += StrCat("last-backup -> ", r.path.substr(r.path.rfind('/') + 1));
    text += r.removed.empty() ? "\n" : StrCat("; removed ", r.removed.size(), " older:");
    for (size_t i = 0; i < r.removed.size(); ++i) {
      text += StrCat(" ", r.removed[i], i + 1 == r.removed.size() ? "\n" : "");
    }
  }
  absl::Status written = ctx.out().Write(text);
  if (written.ok()) written = ctx.out().Flush();
  if (!written.ok()) return ctx.Fail(written);
  if (r.validation && !r.validation->issues.empty()) {
    std::cerr << "packstore: the backup in " << r.path << " has " << r.validation->issues.size()
              << " issues (last-backup left as it was, no backup removed):\n";
    for (size_t i = 0; i < r.validation->issues.size() && i < kIssuesShown; ++i) {
      const Issue& issue = r.validation->issues[i];
      std::cerr << "  " << issue.kind << " " << issue.subject << ": " << issue.detail << "\n";
    }
    return kExitNegative;
  }
  return kExitOk;
}

}  // namespace

void AddBackupCommand(CLI::App& app, Commands& commands) {
  auto args = std::make_shared<BackupArgs>();
  CLI::App* backup = app.add_subcommand(
      "backup",
      "copy the store, live, into DEST/backup-<UTC time>/ and point DEST/last-backup at it");
  backup->add_option("dest", args->request.dest, "the folder that holds the backups")->required();
  backup
      ->add_option("--keep", args->request.keep,
                   "backups to keep in DEST, this one included (default 3)")
      ->check(CLI::PositiveNumber);
  backup->add_flag("--no-validate", args->no_validate,
                   "do not open and validate the backup once written");
  commands.push_back({backup, [args](Context& ctx) { return RunBackup(ctx, *args); }});
}

}  // namespace packstore::cli
