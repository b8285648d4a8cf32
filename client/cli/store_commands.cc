// Store commands: init, status, import.
#include <cstdio>
#include <memory>
#include <string>

#include "client/cli/command.h"
#include "client/cli/progress.h"
#include "common/str_cat.h"

namespace packstore::cli {
namespace {

struct InitArgs {
  std::string dir;
  InitRequest request;
};

int RunInit(Context& ctx, const InitArgs& args) {
  std::string dir = args.dir.empty() ? ctx.options().store_dir : args.dir;
  if (dir.empty()) {
    return Fail(absl::InvalidArgumentError(
                    "init creates a store folder: name it (packstore init DIR, or --store DIR); "
                    "packstored creates its own store with --init"),
                Store::Kind::kDaemon);
  }
  absl::Status created = InitFolder(dir, args.request);
  if (!created.ok()) return Fail(created, Store::Kind::kFolder);
  absl::Status written = ctx.out().Write(StrCat("initialised ", dir, "\n"));
  if (written.ok()) written = ctx.out().Flush();
  return written.ok() ? kExitOk : Fail(written, Store::Kind::kFolder);
}

std::string Duration(uint64_t seconds) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%llud %02llu:%02llu:%02llu",
                static_cast<unsigned long long>(seconds / 86400),
                static_cast<unsigned long long>(seconds / 3600 % 24),
                static_cast<unsigned long long>(seconds / 60 % 60),
                static_cast<unsigned long long>(seconds % 60));
  return buf;
}

std::string HumanStatus(const StoreInfo& s) {
  std::string out;
  if (s.daemon) {
    out += StrCat("daemon         ", s.daemon->version, " on ", s.daemon->socket, ", up ",
                  Duration(s.daemon->uptime_seconds), "\n");
    out += StrCat("maintenance    ", s.daemon->maintenance.empty() ? "idle" : s.daemon->maintenance,
                  "\n");
  }
  out += StrCat("container      ", s.container_dir, "\n", "id             ", s.container_id, "\n",
                "hash           ", s.hash_type, "\n", "compression    ", s.compression_algorithm,
                s.disk_objectstore_compatible ? "" : " (not readable by disk-objectstore)", "\n");
  if (s.pack_size_target) out += StrCat("pack target    ", *s.pack_size_target, " bytes\n");
  out += StrCat("loose objects  ", s.loose_objects, " (", s.loose_bytes, " bytes)\n",
                "packed objects ", s.packed_objects, " (", s.packed_bytes, " bytes, ",
                s.packed_stored_bytes, " stored)\n", "pack files     ", s.pack_files, " (",
                s.pack_file_bytes, " bytes, ", s.hole_bytes, " in holes)\n", "index          ",
                s.index_bytes, " bytes\n");
  if (s.daemon) {
    out += StrCat("free space     ", s.daemon->free_bytes, " bytes (writes stop ",
                  s.daemon->free_bytes_reserve, " bytes before the disk is full)\n");
  }
  return out;
}

int RunStatus(Context& ctx, bool json) {
  absl::StatusOr<Store*> store = ctx.OpenStore(FolderStore::Access::kReader);
  if (!store.ok()) return ctx.Fail(store.status());
  absl::StatusOr<StoreInfo> info = (*store)->Info();
  if (!info.ok()) return ctx.Fail(info.status());
  absl::Status written = ctx.out().Write(json ? info->json + "\n" : HumanStatus(*info));
  if (written.ok()) written = ctx.out().Flush();
  return written.ok() ? kExitOk : ctx.Fail(written);
}

int RunImport(Context& ctx, const std::string& source) {
  absl::StatusOr<Store*> store = ctx.OpenStore(FolderStore::Access::kWriter);
  if (!store.ok()) return ctx.Fail(store.status());
  ProgressLine progress;
  absl::StatusOr<ImportSummary> r = (*store)->Import(source, progress.Callback());
  progress.Finish();
  if (!r.ok()) return ctx.Fail(r.status());
  absl::Status written =
      ctx.out().Write(StrCat("imported ", r->imported, " objects (", r->bytes, " bytes), ",
                             r->already_present, " were present\n"));
  if (written.ok()) written = ctx.out().Flush();
  return written.ok() ? kExitOk : ctx.Fail(written);
}

}  // namespace

void AddStoreCommands(CLI::App& app, Commands& commands) {
  auto init_args = std::make_shared<InitArgs>();
  InitRequest& r = init_args->request;
  CLI::App* init = app.add_subcommand(
      "init", "create a store folder (without the daemon; packstored creates its own)");
  init->alias("create");
  init->add_option("dir", init_args->dir, "the folder (default: --store)");
  init->add_option("--pack-size-target", r.pack_size_target, "bytes per pack (default 4 GiB)");
  init->add_option("--loose-prefix-len", r.loose_prefix_len,
                   "key characters per loose subfolder (default 2)");
  init->add_option("--hash-type", r.hash_type, "sha256 (default) or sha1");
  init->add_option("--compression,--compression-algorithm,-a,--algorithm", r.compression,
                   "zlib+1..zlib+9 (default zlib+1), or zstd+1..zstd+19 with --allow-incompatible");
  init->add_flag("--allow-incompatible", r.allow_incompatible,
                 "allow zstd, which disk-objectstore cannot read");
  commands.push_back({init, [init_args](Context& ctx) { return RunInit(ctx, *init_args); }});

  auto json = std::make_shared<bool>(false);
  CLI::App* status = app.add_subcommand("status", "counts, sizes and configuration");
  status->add_flag("--json", *json,
                   "as JSON: a folder's counts and config.json, or all packstored reports");
  commands.push_back({status, [json](Context& ctx) { return RunStatus(ctx, *json); }});

  auto source = std::make_shared<std::string>();
  CLI::App* import = app.add_subcommand(
      "import", "copy the objects of another container folder (opened read-only)");
  import->add_option("source", *source, "the container folder to copy from")->required();
  commands.push_back({import, [source](Context& ctx) { return RunImport(ctx, *source); }});
}

}  // namespace packstore::cli
