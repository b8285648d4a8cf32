// Object commands: put / add-files, get, cat, ls, stat, has, rm.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "client/cli/command.h"
#include "client/cli/input_files.h"
#include "client/cli/progress.h"
#include "common/status_util.h"
#include "common/str_cat.h"
#include "server/store/file_io.h"

namespace packstore::cli {
namespace {

// Small files travel in PutMany calls of at most this much.
constexpr uint64_t kPutBatchBytes = uint64_t{32} << 20;
constexpr size_t kPutBatchObjects = 10000;
// A single transfer this large gets a progress bar of its own.
constexpr uint64_t kBigTransfer = uint64_t{64} << 20;

struct PutArgs {
  std::vector<std::string> paths;
  std::string to;
  std::string compress;
};

// Writes the inputs in order, small files in batches; prints each key.
class Putter {
 public:
  Putter(Context& ctx, Store& store, WriteOptions options, size_t count)
      : ctx_(ctx),
        store_(store),
        options_(options),
        count_(count),
        progress_(ProgressLine::Unit::kCount, StderrIsTerminal() && count > 1) {}

  absl::Status Put(const InputFile& input) {
    if (input.kind == InputFile::Kind::kRegular && input.size <= kSmallObjectMax) {
      std::string content;
      PACKSTORE_RETURN_IF_ERROR(ReadWholeFile(input.path, content));
      batch_bytes_ += content.size();
      batch_.push_back(std::move(content));
      batch_paths_.push_back(input.path);
      if (batch_bytes_ >= kPutBatchBytes || batch_.size() >= kPutBatchObjects) return Flush();
      return absl::OkStatus();
    }
    PACKSTORE_RETURN_IF_ERROR(Flush());
    absl::StatusOr<Written> written = PutOne(input);
    if (!written.ok()) return written.status();
    return Print({&*written, 1}, {&input.path, 1});
  }

  absl::Status Flush() {
    if (batch_.empty()) return absl::OkStatus();
    std::vector<std::string_view> views(batch_.begin(), batch_.end());
    PACKSTORE_ASSIGN_OR_RETURN(std::vector<Written> written, store_.PutMany(views, options_));
    absl::Status printed = Print(written, batch_paths_);
    batch_.clear();
    batch_paths_.clear();
    batch_bytes_ = 0;
    return printed;
  }

  void Finish() { progress_.Finish(); }

 private:
  absl::StatusOr<Written> PutOne(const InputFile& input) {
    if (input.kind == InputFile::Kind::kStdin) {
      return store_.PutStream(
          [](char* buffer, size_t n) { return ReadUpTo(STDIN_FILENO, buffer, n); }, options_);
    }
    if (input.kind != InputFile::Kind::kRegular || input.size < kBigTransfer ||
        !StderrIsTerminal()) {
      return store_.PutFile(input.path, options_);
    }
    // A big file, on a terminal: stream it to show the transfer.
    PACKSTORE_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(input.path, O_RDONLY));
    ProgressLine bar(ProgressLine::Unit::kBytes);
    progress_.Clear();
    uint64_t sent = 0;
    absl::StatusOr<Written> written = store_.PutStream(
        [&](char* buffer, size_t n) -> absl::StatusOr<size_t> {
          absl::StatusOr<size_t> got = ReadUpTo(fd.get(), buffer, n);
          if (got.ok()) bar.Update(input.path, sent += *got, input.size);
          return got;
        },
        options_);
    bar.Finish();
    return written;
  }

  absl::Status Print(std::span<const Written> written, std::span<const std::string> paths) {
    progress_.Clear();
    for (size_t i = 0; i < written.size(); ++i) {
      PACKSTORE_RETURN_IF_ERROR(ctx_.out().Write(StrCat(written[i].key, "  ", paths[i], "\n")));
      bytes_ += written[i].size;
    }
    PACKSTORE_RETURN_IF_ERROR(ctx_.out().Flush());
    done_ += written.size();
    progress_.SetBytes(bytes_);
    progress_.Update("add-files", done_, count_);
    return absl::OkStatus();
  }

  Context& ctx_;
  Store& store_;
  const WriteOptions options_;
  const size_t count_;
  ProgressLine progress_;
  std::vector<std::string> batch_;
  std::vector<std::string> batch_paths_;
  uint64_t batch_bytes_ = 0;
  uint64_t done_ = 0;
  uint64_t bytes_ = 0;
};

int RunPut(Context& ctx, const PutArgs& args) {
  WriteOptions options;
  if (!args.to.empty()) options.placement = *ParsePlacement(args.to);
  if (!args.compress.empty()) options.compress = *ParseCompressChoice(args.compress);
  absl::StatusOr<std::vector<InputFile>> inputs = CollectInputs(args.paths);
  if (!inputs.ok()) return ctx.Fail(inputs.status());
  bool loose = options.placement == Placement::kDefault || options.placement == Placement::kLoose;
  absl::StatusOr<Store*> store =
      ctx.OpenStore(loose ? FolderStore::Access::kReader : FolderStore::Access::kWriter);
  if (!store.ok()) return ctx.Fail(store.status());
  Putter putter(ctx, **store, options, inputs->size());
  for (const InputFile& input : *inputs) {
    absl::Status put = putter.Put(input);
    if (!put.ok()) return ctx.Fail(put);
  }
  absl::Status flushed = putter.Flush();
  putter.Finish();
  return flushed.ok() ? kExitOk : ctx.Fail(flushed);
}

// Where get/cat write: stdout; a device or pipe, written in place; or a
// file, replaced only once the object is complete (written unnamed with
// O_TMPFILE where the file system allows, so a crash leaves nothing behind).
class Destination {
 public:
  static absl::StatusOr<std::unique_ptr<Destination>> Open(const std::string& path) {
    auto d = std::unique_ptr<Destination>(new Destination());
    if (path.empty()) return d;
    d->path_ = path;
    struct stat st;
    if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
      PACKSTORE_ASSIGN_OR_RETURN(d->fd_, OpenFile(path, O_WRONLY | O_TRUNC));
      return d;
    }
    size_t slash = path.rfind('/');
    std::string dir = slash == std::string::npos ? "." : path.substr(0, slash + 1);
    absl::StatusOr<UniqueFd> unnamed = OpenFile(dir, O_TMPFILE | O_WRONLY, 0666);
    if (unnamed.ok()) {
      d->fd_ = std::move(*unnamed);
      d->unnamed_ = true;
      return d;
    }
    d->temp_ = StrCat(path, ".packstore-", RandomHex(6));
    PACKSTORE_ASSIGN_OR_RETURN(d->fd_, OpenFile(d->temp_, O_WRONLY | O_CREAT | O_EXCL, 0666));
    return d;
  }
  ~Destination() {
    if (!temp_.empty()) ::unlink(temp_.c_str());
  }

  absl::Status Write(Context& ctx, std::string_view chunk) {
    return fd_.valid() ? WriteAll(fd_.get(), chunk) : ctx.out().Write(chunk);
  }
  absl::Status Commit(Context& ctx) {
    if (!fd_.valid()) return ctx.out().Flush();
    if (unnamed_) {
      // Named next to the target, then renamed over it.
      std::string temp = StrCat(path_, ".packstore-", RandomHex(6));
      std::string proc = StrCat("/proc/self/fd/", fd_.get());
      if (::linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, temp.c_str(), AT_SYMLINK_FOLLOW) != 0) {
        return ErrnoStatus(errno, StrCat("create ", temp));
      }
      temp_ = temp;
    }
    PACKSTORE_RETURN_IF_ERROR(fd_.Close());
    if (temp_.empty()) return absl::OkStatus();
    PACKSTORE_RETURN_IF_ERROR(Rename(temp_, path_));
    temp_.clear();
    return absl::OkStatus();
  }

 private:
  Destination() = default;
  std::string path_;
  bool unnamed_ = false;  // an O_TMPFILE file, linked at Commit
  std::string temp_;      // a named temporary file, removed unless committed
  UniqueFd fd_;
};

int RunGet(Context& ctx, const std::vector<std::string>& keys, const std::string& output,
           bool verify) {
  absl::StatusOr<Store*> store = ctx.OpenStore(FolderStore::Access::kReader);
  if (!store.ok()) return ctx.Fail(store.status());
  absl::StatusOr<std::unique_ptr<Destination>> dest = Destination::Open(output);
  if (!dest.ok()) return ctx.Fail(dest.status());
  // A bar for big objects, unless the bytes themselves go to the terminal.
  bool show = StderrIsTerminal() && (!output.empty() || ::isatty(STDOUT_FILENO) == 0);
  for (const std::string& key : keys) {
    ProgressLine bar(ProgressLine::Unit::kBytes, show);
    uint64_t size = 0, done = 0;
    absl::StatusOr<uint64_t> copied = (*store)->ReadObject(
        key,
        [&](std::string_view chunk) {
          if (size >= kBigTransfer) bar.Update("get", done += chunk.size(), size);
          return (*dest)->Write(ctx, chunk);
        },
        verify, show ? std::function<void(uint64_t)>([&](uint64_t s) { size = s; }) : nullptr);
    if (!copied.ok()) return ctx.Fail(copied.status(), /*lookup=*/true);
  }
  absl::Status committed = (*dest)->Commit(ctx);
  return committed.ok() ? kExitOk : ctx.Fail(committed);
}

int RunList(Context& ctx, const std::string& after) {
  absl::StatusOr<Store*> store = ctx.OpenStore(FolderStore::Access::kReader);
  if (!store.ok()) return ctx.Fail(store.status());
  absl::Status listed = (*store)->List(after, [&](std::span<const std::string> keys) {
    for (const std::string& key : keys) {
      PACKSTORE_RETURN_IF_ERROR(ctx.out().Write(key));
      PACKSTORE_RETURN_IF_ERROR(ctx.out().Write("\n"));
    }
    return absl::OkStatus();
  });
  if (listed.ok()) listed = ctx.out().Flush();
  return listed.ok() ? kExitOk : ctx.Fail(listed);
}

int RunStat(Context& ctx, const std::vector<std::string>& keys) {
  absl::StatusOr<Store*> store = ctx.OpenStore(FolderStore::Access::kReader);
  if (!store.ok()) return ctx.Fail(store.status());
  auto stats = (*store)->Stat(keys);
  if (!stats.ok()) return ctx.Fail(stats.status());
  int rc = kExitOk;
  for (size_t i = 0; i < keys.size(); ++i) {
    const std::optional<ObjectStat>& s = (*stats)[i];
    std::string line;
    if (!s) {
      line = StrCat(keys[i], " missing\n");
      rc = kExitNegative;
    } else if (!s->packed) {
      line = StrCat(keys[i], " size=", s->size, " location=loose\n");
    } else {
      line = StrCat(keys[i], " size=", s->size, " location=packed");
      if (s->pack_id) line += StrCat(" pack=", *s->pack_id, " offset=", s->offset.value_or(0));
      line += StrCat(" length=", s->stored_size, " compressed=", s->compressed ? 1 : 0, "\n");
    }
    absl::Status written = ctx.out().Write(line);
    if (!written.ok()) return ctx.Fail(written);
  }
  absl::Status flushed = ctx.out().Flush();
  return flushed.ok() ? rc : ctx.Fail(flushed);
}

int RunHas(Context& ctx, const std::vector<std::string>& keys) {
  absl::StatusOr<Store*> store = ctx.OpenStore(FolderStore::Access::kReader);
  if (!store.ok()) return ctx.Fail(store.status());
  auto present = (*store)->Has(keys);
  if (!present.ok()) return ctx.Fail(present.status());
  int rc = kExitOk;
  for (size_t i = 0; i < keys.size(); ++i) {
    if (!(*present)[i]) rc = NegativeAnswerCode(ctx.kind());
    absl::Status written = ctx.out().Write(StrCat(keys[i], (*present)[i] ? " yes\n" : " no\n"));
    if (!written.ok()) return ctx.Fail(written);
  }
  absl::Status flushed = ctx.out().Flush();
  return flushed.ok() ? rc : ctx.Fail(flushed);
}

int RunRemove(Context& ctx, const std::vector<std::string>& keys) {
  absl::StatusOr<Store*> store = ctx.OpenStore(FolderStore::Access::kWriter);
  if (!store.ok()) return ctx.Fail(store.status());
  auto deleted = (*store)->Delete(keys, {});
  if (!deleted.ok()) return ctx.Fail(deleted.status());
  absl::Status written =
      ctx.out().Write(StrCat("deleted ", *deleted, " of ", keys.size(), " objects\n"));
  if (written.ok()) written = ctx.out().Flush();
  if (!written.ok()) return ctx.Fail(written);
  size_t distinct = std::set<std::string>(keys.begin(), keys.end()).size();
  return *deleted < distinct ? NegativeAnswerCode(ctx.kind()) : kExitOk;
}

}  // namespace

void AddObjectCommands(CLI::App& app, Commands& commands) {
  auto put_args = std::make_shared<PutArgs>();
  CLI::App* put = app.add_subcommand(
      "put", "store files, folders (recursively) or - (stdin); prints '<key>  <path>' each");
  put->alias("add-files");
  put->add_option("paths", put_args->paths, "files, folders, or - for stdin")->required();
  put->add_option("--to,--mode", put_args->to,
                  "loose, packed or auto (small objects to packs, big ones loose); default: "
                  "the daemon's default, loose with --store")
      ->check(CheckPlacement);
  put->add_option("--compress", put_args->compress,
                  "no, yes or auto: compression of objects written to packs (default no)")
      ->check(CheckCompress);
  commands.push_back({put, [put_args](Context& ctx) { return RunPut(ctx, *put_args); }});

  struct GetArgs {
    std::vector<std::string> keys;
    std::string output;
    bool verify = false;
  };
  auto get_args = std::make_shared<GetArgs>();
  CLI::App* get = app.add_subcommand("get", "write an object to stdout or a file (-o)");
  get->add_option("key", get_args->keys, "the object's key")->required()->expected(1);
  get->add_option("-o,--output", get_args->output,
                  "the file to write (replaced once the object is complete)");
  get->add_flag("--verify", get_args->verify, "re-hash the object; fail on a mismatch");
  commands.push_back({get, [get_args](Context& ctx) {
                        return RunGet(ctx, get_args->keys, get_args->output, get_args->verify);
                      }});

  auto cat_args = std::make_shared<GetArgs>();
  CLI::App* cat = app.add_subcommand("cat", "write objects to stdout, one after the other");
  cat->add_option("keys", cat_args->keys, "the objects' keys")->required();
  cat->add_flag("--verify", cat_args->verify, "re-hash each object; fail on a mismatch");
  commands.push_back({cat, [cat_args](Context& ctx) {
                        return RunGet(ctx, cat_args->keys, "", cat_args->verify);
                      }});

  auto after = std::make_shared<std::string>();
  CLI::App* ls = app.add_subcommand("ls", "list every key, ascending");
  ls->add_option("--after", *after, "start after this key (or prefix)");
  commands.push_back({ls, [after](Context& ctx) { return RunList(ctx, *after); }});

  auto stat_keys = std::make_shared<std::vector<std::string>>();
  CLI::App* stat = app.add_subcommand(
      "stat", "print '<key> size=N location=loose|packed ...' (exit 1 if one is missing)");
  stat->add_option("keys", *stat_keys)->required();
  commands.push_back({stat, [stat_keys](Context& ctx) { return RunStat(ctx, *stat_keys); }});

  auto has_keys = std::make_shared<std::vector<std::string>>();
  CLI::App* has = app.add_subcommand("has", "print '<key> yes|no' (exit 1 if one is absent)");
  has->add_option("keys", *has_keys)->required();
  commands.push_back({has, [has_keys](Context& ctx) { return RunHas(ctx, *has_keys); }});

  auto rm_keys = std::make_shared<std::vector<std::string>>();
  CLI::App* rm = app.add_subcommand(
      "rm", "delete objects; their pack bytes become holes (exit 1 if one did not exist)");
  rm->add_option("keys", *rm_keys)->required();
  commands.push_back({rm, [rm_keys](Context& ctx) { return RunRemove(ctx, *rm_keys); }});
}

}  // namespace packstore::cli
