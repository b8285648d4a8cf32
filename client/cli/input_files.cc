// The inputs of put / add-files: see input_files.h.
#include "client/cli/input_files.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <iostream>

#include "common/status_util.h"
#include "common/str_cat.h"
#include "server/store/file_io.h"

namespace packstore::cli {
namespace {

std::string Join(const std::string& dir, const std::string& name) {
  if (!dir.empty() && dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

absl::Status Walk(const std::string& dir, std::vector<InputFile>& out) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return ErrnoStatus(errno, StrCat("cannot read the folder ", dir));
  std::vector<std::string> names;
  errno = 0;
  while (struct dirent* entry = ::readdir(d)) {
    std::string_view name = entry->d_name;
    if (name != "." && name != "..") names.emplace_back(name);
  }
  int err = errno;
  ::closedir(d);
  if (err != 0) return ErrnoStatus(err, StrCat("cannot read the folder ", dir));
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    std::string path = Join(dir, name);
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0) return ErrnoStatus(errno, StrCat("cannot examine ", path));
    if (S_ISDIR(st.st_mode)) {
      PACKSTORE_RETURN_IF_ERROR(Walk(path, out));
      continue;
    }
    if (S_ISLNK(st.st_mode) && (::stat(path.c_str(), &st) != 0 || S_ISDIR(st.st_mode))) {
      std::cerr << "packstore: skipping " << path << " (a link to a folder, or dangling)\n";
      continue;
    }
    if (!S_ISREG(st.st_mode)) {
      std::cerr << "packstore: skipping " << path << " (not a regular file)\n";
      continue;
    }
    out.push_back(InputFile{path, InputFile::Kind::kRegular, static_cast<uint64_t>(st.st_size)});
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<InputFile>> CollectInputs(const std::vector<std::string>& arguments) {
  std::vector<InputFile> out;
  for (const std::string& argument : arguments) {
    if (argument == "-") {
      out.push_back(InputFile{argument, InputFile::Kind::kStdin, 0});
      continue;
    }
    struct stat st;
    if (::stat(argument.c_str(), &st) != 0) {
      return ErrnoStatus(errno, StrCat("cannot read ", argument));
    }
    if (S_ISDIR(st.st_mode)) {
      PACKSTORE_RETURN_IF_ERROR(Walk(argument, out));
    } else if (S_ISREG(st.st_mode)) {
      out.push_back(
          InputFile{argument, InputFile::Kind::kRegular, static_cast<uint64_t>(st.st_size)});
    } else {
      out.push_back(InputFile{argument, InputFile::Kind::kOther, 0});
    }
  }
  return out;
}

absl::Status ReadWholeFile(const std::string& path, std::string& out) {
  PACKSTORE_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDONLY));
  out.clear();
  constexpr size_t kStep = size_t{64} << 10;
  while (true) {
    size_t at = out.size();
    out.resize(at + kStep);
    absl::StatusOr<size_t> n = ReadUpTo(fd.get(), out.data() + at, kStep);
    if (!n.ok()) return Annotate(n.status(), StrCat("reading ", path));
    out.resize(at + *n);
    if (*n == 0) return absl::OkStatus();
  }
}

}  // namespace packstore::cli
