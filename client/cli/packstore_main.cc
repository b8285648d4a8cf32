// packstore: the command-line tool. With --store DIR it works on the
// container in DIR directly (offline), through the engine.
//
// Exit codes: 0 success; 1 a failure or, for validate, issues found;
// 2 bad usage or a malformed key.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "common/str_cat.h"
#include "server/store/container.h"
#include "server/store/file_io.h"
#include "server/store/object_reader.h"

namespace packstore {
namespace {

int Fail(const absl::Status& status) {
  std::cerr << "packstore: " << status.message() << "\n";
  return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

std::string JsonString(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// Progress on stderr when it is a terminal; nothing otherwise.
ProgressFn TerminalProgress() {
  if (!::isatty(STDERR_FILENO)) return {};
  return [](const Progress& p) {
    if (p.total == 0 || p.done % 256 != 0) return;
    std::fprintf(stderr, "\r%.*s %llu/%llu", static_cast<int>(p.phase.size()), p.phase.data(),
                 static_cast<unsigned long long>(p.done), static_cast<unsigned long long>(p.total));
    if (p.done == p.total) std::fputc('\n', stderr);
  };
}

absl::Status WriteStdout(std::string_view data) { return WriteAll(STDOUT_FILENO, data); }

int PrintStatus(Container& store, bool json) {
  auto counts = store.Counts();
  if (!counts.ok()) return Fail(counts.status());
  const ContainerConfig& c = store.config();
  if (json) {
    std::cout << "{\"path\": " << JsonString(store.dir())
              << ", \"packed_count\": " << counts->packed_objects
              << ", \"packed_bytes\": " << counts->packed_bytes
              << ", \"packed_stored_bytes\": " << counts->packed_stored_bytes
              << ", \"pack_files\": " << counts->pack_files
              << ", \"pack_file_bytes\": " << counts->pack_file_bytes
              << ", \"hole_bytes\": " << counts->hole_bytes
              << ", \"loose_count\": " << counts->loose_objects
              << ", \"loose_bytes\": " << counts->loose_bytes
              << ", \"index_bytes\": " << counts->index_bytes
              << ", \"config\": " << SerializeConfigJson(c) << "}\n";
    return 0;
  }
  std::cout << "container      " << store.dir() << "\n"
            << "id             " << c.container_id << "\n"
            << "hash           " << HashTypeName(c.hash_type) << "\n"
            << "compression    " << CodecName(c.codec)
            << (IsDiskObjectstoreCompatible(c.codec) ? "" : " (not readable by disk-objectstore)")
            << "\n"
            << "pack target    " << c.pack_size_target << " bytes\n"
            << "loose objects  " << counts->loose_objects << " (" << counts->loose_bytes
            << " bytes)\n"
            << "packed objects " << counts->packed_objects << " (" << counts->packed_bytes
            << " bytes, " << counts->packed_stored_bytes << " stored)\n"
            << "pack files     " << counts->pack_files << " (" << counts->pack_file_bytes
            << " bytes, " << counts->hole_bytes << " in holes)\n"
            << "index          " << counts->index_bytes << " bytes\n";
  return 0;
}

int Run(int argc, char** argv) {
  CLI::App app{"packstore: a content-addressed object store (offline commands on a container)"};
  app.require_subcommand(1);
  std::string store_dir;
  app.add_option("--store", store_dir, "container folder (or PACKSTORE_STORE)")
      ->envname("PACKSTORE_STORE")
      ->required();

  auto* init = app.add_subcommand("init", "create a container");
  InitOptions init_options;
  std::string hash_type = "sha256", compression = "zlib+1";
  init->add_option("--pack-size-target", init_options.pack_size_target, "bytes per pack (default 4 GiB)");
  init->add_option("--loose-prefix-len", init_options.loose_prefix_len, "key characters per loose subfolder (default 2)");
  init->add_option("--hash-type", hash_type, "sha256 or sha1");
  init->add_option("--compression", compression,
                   "zlib+1..zlib+9, or zstd+1..zstd+19 with --allow-incompatible");
  init->add_flag("--allow-incompatible", init_options.allow_incompatible_codec,
                 "allow zstd, which disk-objectstore cannot read");

  auto* put = app.add_subcommand("put", "store files (or - for stdin); prints '<key>  <path>'");
  std::vector<std::string> put_paths;
  std::string put_to = "loose", compress_name = "no";
  put->add_option("paths", put_paths, "files to store")->required();
  put->add_option("--to", put_to, "loose or pack")->check(CLI::IsMember({"loose", "pack"}));
  put->add_option("--compress", compress_name, "no, yes or auto (packs only)");

  auto* cat = app.add_subcommand("cat", "write an object to stdout");
  std::string key;
  cat->add_option("key", key)->required();
  auto* get = app.add_subcommand("get", "write an object to a file");
  std::string out_path;
  get->add_option("key", key)->required();
  get->add_option("-o,--output", out_path)->required();

  auto* ls = app.add_subcommand("ls", "list every key");
  auto* has = app.add_subcommand("has", "print '<key> yes|no'");
  std::vector<std::string> keys;
  has->add_option("keys", keys)->required();
  auto* stat = app.add_subcommand("stat", "print where objects are");
  stat->add_option("keys", keys)->required();
  auto* rm = app.add_subcommand("rm", "delete objects");
  rm->add_option("keys", keys)->required();

  auto* status = app.add_subcommand("status", "counts, sizes and configuration");
  bool json = false;
  status->add_flag("--json", json);

  auto* pack = app.add_subcommand("pack", "pack all loose objects");
  bool keep_loose = false;
  pack->add_option("--compress", compress_name, "no, yes or auto");
  pack->add_flag("--keep-loose", keep_loose, "keep the loose copies");
  auto* clean = app.add_subcommand("clean", "delete packed loose copies, stale sandbox files");
  bool vacuum = false;
  clean->add_flag("--vacuum", vacuum, "also VACUUM the index");
  auto* repack = app.add_subcommand("repack", "rewrite packs without their holes");
  std::string repack_compress;
  repack->add_option("--compress", repack_compress, "recompress: no, yes or auto");
  auto* validate = app.add_subcommand("validate", "re-hash everything; exit 1 on issues");
  bool verbose = false;
  validate->add_flag("-v,--verbose", verbose, "list every issue");
  auto* import = app.add_subcommand("import", "copy the objects of another container");
  std::string source_dir;
  import->add_option("source", source_dir)->required();

  CLI11_PARSE(app, argc, argv);

  if (init->parsed()) {
    auto parsed_hash = ParseHashType(hash_type);
    if (!parsed_hash.ok()) return Fail(parsed_hash.status());
    auto codec = ParseCodec(compression);
    if (!codec.ok()) return Fail(codec.status());
    init_options.hash_type = *parsed_hash;
    init_options.codec = *codec;
    absl::Status s = Container::Init(store_dir, init_options);
    if (!s.ok()) return Fail(s);
    std::cout << "initialised " << store_dir << "\n";
    return 0;
  }

  bool reads_only = cat->parsed() || get->parsed() || ls->parsed() || has->parsed() ||
                    stat->parsed() || status->parsed() || validate->parsed() ||
                    (put->parsed() && put_to == "loose");
  // Reads and loose writes work beside a running writer; the rest needs it.
  auto opened = Container::Open(store_dir, OpenMode::kWriter);
  if (reads_only && absl::IsFailedPrecondition(opened.status())) {
    opened = Container::Open(store_dir, OpenMode::kShared);
  }
  if (!opened.ok()) return Fail(opened.status());
  Container& store = **opened;
  auto compress = ParseCompressMode(compress_name);
  if (!compress.ok()) return Fail(compress.status());

  if (put->parsed()) {
    for (const std::string& path : put_paths) {
      UniqueFd owned;
      int fd = STDIN_FILENO;
      if (path != "-") {
        auto opened_file = OpenFile(path, O_RDONLY);
        if (!opened_file.ok()) return Fail(opened_file.status());
        owned = std::move(*opened_file);
        fd = owned.get();
      }
      FdSource source(fd);
      auto written = put_to == "loose" ? store.PutLoose(source) : store.PutPackedStream(source, *compress);
      if (!written.ok()) return Fail(written.status());
      std::cout << written->key << "  " << path << "\n";
    }
    return 0;
  }
  if (cat->parsed() || get->parsed()) {
    auto reader = store.OpenObject(key);
    if (!reader.ok()) return Fail(reader.status());
    UniqueFd out;
    int fd = STDOUT_FILENO;
    if (get->parsed()) {
      auto opened_out = OpenFile(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (!opened_out.ok()) return Fail(opened_out.status());
      out = std::move(*opened_out);
      fd = out.get();
    }
    std::string buf(1 << 20, '\0');
    while (true) {
      auto n = (*reader)->Read(buf.data(), buf.size());
      if (!n.ok()) return Fail(n.status());
      if (*n == 0) break;
      absl::Status s = WriteAll(fd, std::string_view(buf.data(), *n));
      if (!s.ok()) return Fail(s);
    }
    return 0;
  }
  if (ls->parsed()) {
    std::string text;
    absl::Status s = store.ListKeys("", [&](std::string_view k) {
      text.append(k).push_back('\n');
      if (text.size() > (1 << 16)) {
        WriteStdout(text).IgnoreError();
        text.clear();
      }
      return true;
    });
    if (!s.ok()) return Fail(s);
    return WriteStdout(text).ok() ? 0 : 1;
  }
  if (has->parsed()) {
    for (const std::string& k : keys) {
      auto present = store.Has(k);
      if (!present.ok()) return Fail(present.status());
      std::cout << k << (*present ? " yes" : " no") << "\n";
    }
    return 0;
  }
  if (stat->parsed()) {
    int rc = 0;
    for (const std::string& k : keys) {
      auto info = store.Stat(k);
      if (absl::IsNotFound(info.status())) {
        std::cout << k << " missing\n";
        rc = 1;
        continue;
      }
      if (!info.ok()) return Fail(info.status());
      std::cout << k << " size=" << info->size;
      if (info->packed) {
        std::cout << " location=packed pack=" << info->packed->pack_id
                  << " offset=" << info->packed->offset << " length=" << info->packed->length
                  << " compressed=" << (info->packed->compressed ? 1 : 0);
      } else {
        std::cout << " location=loose";
      }
      std::cout << "\n";
    }
    return rc;
  }
  if (rm->parsed()) {
    auto deleted = store.Delete(keys);
    if (!deleted.ok()) return Fail(deleted.status());
    std::cout << "deleted " << *deleted << " of " << keys.size() << " objects\n";
    return 0;
  }
  if (status->parsed()) return PrintStatus(store, json);
  if (pack->parsed()) {
    PackOptions options;
    options.compress = *compress;
    options.delete_loose = !keep_loose;
    auto result = store.PackAllLoose(options, TerminalProgress());
    if (!result.ok()) return Fail(result.status());
    std::cout << "packed " << result->packed << " objects (" << result->bytes << " bytes), "
              << result->already_packed << " were packed already, " << result->loose_deleted
              << " loose copies deleted\n";
    for (const std::string& k : result->corrupt) {
      std::cerr << "packstore: loose object " << k << " is corrupt and was not packed\n";
    }
    return result->corrupt.empty() ? 0 : 1;
  }
  if (clean->parsed()) {
    CleanOptions options;
    options.vacuum = vacuum;
    auto result = store.Clean(options, TerminalProgress());
    if (!result.ok()) return Fail(result.status());
    std::cout << "deleted " << result->loose_deleted << " packed loose copies, "
              << result->sandbox_deleted << " sandbox files; resolved "
              << result->duplicates_resolved << " duplicates\n";
    return 0;
  }
  if (repack->parsed()) {
    RepackOptions options;
    if (!repack_compress.empty()) {
      auto mode = ParseCompressMode(repack_compress);
      if (!mode.ok()) return Fail(mode.status());
      options.compress = *mode;
    }
    auto result = store.Repack(options, TerminalProgress());
    if (!result.ok()) return Fail(result.status());
    std::cout << "rewrote " << result->packs_rewritten << " packs, removed "
              << result->packs_removed << ", moved " << result->objects_moved
              << " objects, reclaimed " << result->bytes_reclaimed << " bytes\n";
    return 0;
  }
  if (validate->parsed()) {
    auto report = store.Validate(TerminalProgress());
    if (!report.ok()) return Fail(report.status());
    std::cout << "checked " << report->loose_checked << " loose and " << report->packed_checked
              << " packed objects: " << report->issues.size() << " issues\n";
    if (verbose) {
      for (const ValidateIssue& issue : report->issues) {
        std::cout << ValidateIssueKindName(issue.kind) << " " << issue.subject << ": "
                  << issue.detail << "\n";
      }
    }
    return report->ok() ? 0 : 1;
  }
  if (import->parsed()) {
    auto source = Container::Open(source_dir, OpenMode::kShared);
    if (!source.ok()) return Fail(source.status());
    auto result = store.Import(**source, TerminalProgress());
    if (!result.ok()) return Fail(result.status());
    std::cout << "imported " << result->imported << " objects (" << result->bytes << " bytes), "
              << result->already_present << " were present\n";
    return 0;
  }
  return 2;
}

}  // namespace
}  // namespace packstore

int main(int argc, char** argv) { return packstore::Run(argc, argv); }
