// The inputs of put / add-files: files named on the command line, the
// regular files under named directories (recursively, in name order), and
// `-` for stdin. Everything is listed before anything is stored, so a
// missing input fails the command before it writes, and progress knows its
// total.
//
// Inside directories only regular files (and symbolic links to them) are
// taken; links to directories are not followed, and other entries (sockets,
// devices, fifos) are skipped with a note on stderr. A file named on the
// command line is taken whatever it is (a fifo is read to its end), except
// a directory, which is walked.
//
// Errors: NOT_FOUND / PERMISSION_DENIED (with the path) for an input that
// cannot be examined or a directory that cannot be read.
//
// Thread-safety: free functions, no state.
#ifndef PACKSTORE_CLIENT_CLI_INPUT_FILES_H_
#define PACKSTORE_CLIENT_CLI_INPUT_FILES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace packstore::cli {

struct InputFile {
  enum class Kind { kStdin, kRegular, kOther };
  std::string path;  // as it is printed: the argument, or DIR/relative/path
  Kind kind = Kind::kRegular;
  uint64_t size = 0;  // regular files only
};

absl::StatusOr<std::vector<InputFile>> CollectInputs(const std::vector<std::string>& arguments);

// Reads a whole (small) file into `out`. Errors carry the path.
absl::Status ReadWholeFile(const std::string& path, std::string& out);

}  // namespace packstore::cli

#endif  // PACKSTORE_CLIENT_CLI_INPUT_FILES_H_
