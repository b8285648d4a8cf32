// Maintenance commands: pack, optimize, repack, clean, validate. With the
// daemon they need admin rights on it (daemon_store.h says so on refusal).
#include <iostream>
#include <memory>
#include <string>

#include "client/cli/command.h"
#include "client/cli/progress.h"
#include "common/str_cat.h"

namespace packstore::cli {
namespace {

CompressChoice CompressOrDefault(const std::string& name) {
  return name.empty() ? CompressChoice::kDefault : *ParseCompressChoice(name);
}

std::string PackLine(const PackSummary& r) {
  return StrCat("packed ", r.packed, " objects (", r.bytes, " bytes), ", r.already_packed,
                " were packed already, ", r.loose_deleted, " loose copies deleted\n");
}

std::string RepackLine(const RepackSummary& r) {
  return StrCat("rewrote ", r.packs_rewritten, " packs, removed ", r.packs_removed, ", moved ",
                r.objects_moved, " objects, reclaimed ", r.bytes_reclaimed, " bytes\n");
}

std::string CleanLine(const CleanSummary& r) {
  return StrCat("deleted ", r.loose_deleted, " packed loose copies, ", r.sandbox_deleted,
                " sandbox files; resolved ", r.duplicates_resolved, " duplicates\n");
}

void ReportCorrupt(const PackSummary& r) {
  for (const std::string& key : r.corrupt) {
    std::cerr << "packstore: loose object " << key << " is corrupt and was not packed\n";
  }
}

int Print(Context& ctx, const std::string& text, int rc = kExitOk) {
  absl::Status written = ctx.out().Write(text);
  if (written.ok()) written = ctx.out().Flush();
  return written.ok() ? rc : ctx.Fail(written);
}

struct PackArgs {
  std::string compress;
  bool keep_loose = false;
  bool no_validate = false;
};

int RunPack(Context& ctx, const PackArgs& args) {
  absl::StatusOr<Store*> store = ctx.OpenStore(FolderStore::Access::kWriter);
  if (!store.ok()) return ctx.Fail(store.status());
  PackRequest request{CompressOrDefault(args.compress), !args.no_validate, args.keep_loose};
  ProgressLine progress;
  absl::StatusOr<PackSummary> r = (*store)->Pack(request, progress.Callback());
  progress.Finish();
  if (!r.ok()) return ctx.Fail(r.status());
  int rc = Print(ctx, PackLine(*r), r->corrupt.empty() ? kExitOk : kExitNegative);
  ReportCorrupt(*r);
  return rc;
}

struct OptimizeArgs {
  std::string compress = "yes";
  bool vacuum = true;
  bool non_interactive = false;
};

// dostore's optimize (pack, then clean), with a repack in between to
// reclaim the holes, so the vacuum comes last.
int RunOptimize(Context& ctx, const OptimizeArgs& args) {
  absl::StatusOr<Store*> store = ctx.OpenStore(FolderStore::Access::kWriter);
  if (!store.ok()) return ctx.Fail(store.status());
  ProgressLine progress;
  absl::StatusOr<PackSummary> packed = (*store)->Pack(
      PackRequest{*ParseCompressChoice(args.compress), true, false}, progress.Callback());
  progress.Finish();
  if (!packed.ok()) return ctx.Fail(packed.status());
  int rc = Print(ctx, PackLine(*packed));
  ReportCorrupt(*packed);
  if (rc != kExitOk) return rc;
  absl::StatusOr<RepackSummary> repacked =
      (*store)->Repack(CompressChoice::kDefault, progress.Callback());
  progress.Finish();
  if (!repacked.ok()) return ctx.Fail(repacked.status());
  if ((rc = Print(ctx, RepackLine(*repacked))) != kExitOk) return rc;
  absl::StatusOr<CleanSummary> cleaned = (*store)->Clean(args.vacuum, progress.Callback());
  progress.Finish();
  if (!cleaned.ok()) return ctx.Fail(cleaned.status());
  return Print(ctx, CleanLine(*cleaned), packed->corrupt.empty() ? kExitOk : kExitNegative);
}

int RunRepack(Context& ctx, const std::string& compress) {
  absl::StatusOr<Store*> store = ctx.OpenStore(FolderStore::Access::kWriter);
  if (!store.ok()) return ctx.Fail(store.status());
  ProgressLine progress;
  absl::StatusOr<RepackSummary> r =
      (*store)->Repack(CompressOrDefault(compress), progress.Callback());
  progress.Finish();
  if (!r.ok()) return ctx.Fail(r.status());
  return Print(ctx, RepackLine(*r));
}

int RunClean(Context& ctx, bool vacuum) {
  absl::StatusOr<Store*> store = ctx.OpenStore(FolderStore::Access::kWriter);
  if (!store.ok()) return ctx.Fail(store.status());
  ProgressLine progress;
  absl::StatusOr<CleanSummary> r = (*store)->Clean(vacuum, progress.Callback());
  progress.Finish();
  if (!r.ok()) return ctx.Fail(r.status());
  return Print(ctx, CleanLine(*r));
}

int RunValidate(Context& ctx, bool verbose) {
  absl::StatusOr<Store*> store = ctx.OpenStore(FolderStore::Access::kReader);
  if (!store.ok()) return ctx.Fail(store.status());
  ProgressLine progress;
  absl::StatusOr<ValidateSummary> r = (*store)->Validate(progress.Callback());
  progress.Finish();
  if (!r.ok()) return ctx.Fail(r.status());
  std::string text = StrCat("checked ", r->loose_checked, " loose and ", r->packed_checked,
                            " packed objects: ", r->issues.size(), " issues\n");
  if (verbose) {
    for (const Issue& issue : r->issues) {
      text += StrCat(issue.kind, " ", issue.subject, ": ", issue.detail, "\n");
    }
  }
  return Print(ctx, text, r->issues.empty() ? kExitOk : kExitNegative);
}

}  // namespace

void AddMaintenanceCommands(CLI::App& app, Commands& commands) {
  auto pack_args = std::make_shared<PackArgs>();
  CLI::App* pack = app.add_subcommand("pack", "pack all loose objects");
  pack->add_option("--compress", pack_args->compress, "no (default), yes or auto")
      ->check(CheckCompress);
  pack->add_flag("--keep-loose", pack_args->keep_loose,
                 "keep the loose copies (store folders only)");
  pack->add_flag("--no-validate", pack_args->no_validate,
                 "do not re-hash loose objects while packing them");
  commands.push_back({pack, [pack_args](Context& ctx) { return RunPack(ctx, *pack_args); }});

  auto optimize_args = std::make_shared<OptimizeArgs>();
  CLI::App* optimize = app.add_subcommand(
      "optimize", "pack, repack and clean (with a VACUUM of the index), as dostore's optimize");
  optimize
      ->add_option("--compress", optimize_args->compress,
                   "compression of the objects packed: no, yes (default) or auto")
      ->check(CheckCompress);
  optimize->add_flag("--vacuum,!--no-vacuum", optimize_args->vacuum,
                     "VACUUM the index at the end (default: yes)");
  optimize->add_flag("-n,--non-interactive", optimize_args->non_interactive,
                     "accepted for dostore's sake: packstore never asks");
  commands.push_back(
      {optimize, [optimize_args](Context& ctx) { return RunOptimize(ctx, *optimize_args); }});

  auto repack_compress = std::make_shared<std::string>();
  CLI::App* repack = app.add_subcommand("repack", "rewrite packs without their holes");
  repack
      ->add_option("--compress", *repack_compress,
                   "recompress every object: no, yes or auto (default: keep each as stored)")
      ->check(CheckCompress);
  commands.push_back(
      {repack, [repack_compress](Context& ctx) { return RunRepack(ctx, *repack_compress); }});

  auto vacuum = std::make_shared<bool>(false);
  CLI::App* clean = app.add_subcommand("clean", "delete packed loose copies, stale sandbox files");
  clean->add_flag("--vacuum", *vacuum, "also VACUUM the index");
  commands.push_back({clean, [vacuum](Context& ctx) { return RunClean(ctx, *vacuum); }});

  auto verbose = std::make_shared<bool>(false);
  CLI::App* validate = app.add_subcommand("validate", "re-hash everything; exit 1 on issues");
  validate->add_flag("-v,--verbose", *verbose, "list every issue");
  commands.push_back({validate, [verbose](Context& ctx) { return RunValidate(ctx, *verbose); }});
}

}  // namespace packstore::cli
