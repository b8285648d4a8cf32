// Output of the packstore tool: stdout through one buffered writer (object
// bytes and text lines alike, so they never interleave out of order), JSON
// strings, and how a failure becomes a message on stderr and an exit code.
//
// Exit codes (also in `packstore --help`):
//   0  success
//   1  a negative answer: validate found issues, has found a key absent,
//      get/cat/stat/rm met a missing object, a backup did not validate
//   2  bad usage, or any other error (no daemon, permission, I/O, ...)
// The folder mode (--store) keeps the codes the offline tool always had:
// every failure but bad usage or a malformed key is 1, and has and rm
// exit 0 whatever they find.
//
// Thread-safety: StdoutWriter is used from one thread at a time.
#ifndef PACKSTORE_CLIENT_CLI_OUTPUT_H_
#define PACKSTORE_CLIENT_CLI_OUTPUT_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "client/cli/store.h"

namespace packstore::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitNegative = 1;
inline constexpr int kExitError = 2;

// The exit code of a command that failed with `status`. NOT_FOUND is a
// negative answer only for a command that looks objects up (`lookup`): for
// the others a missing file or folder is an error like any other.
int ExitCodeFor(const absl::Status& status, Store::Kind kind, bool lookup = false);
// Prints "packstore: <message>" on stderr; returns ExitCodeFor.
int Fail(const absl::Status& status, Store::Kind kind, bool lookup = false);
// The exit code of a negative answer (has: absent; rm: nothing to delete).
int NegativeAnswerCode(Store::Kind kind);

// `s` as a JSON string literal, quotes included.
std::string JsonString(std::string_view s);

// Buffers writes to stdout (fd 1); large writes go straight through.
class StdoutWriter {
 public:
  StdoutWriter() = default;
  ~StdoutWriter();
  StdoutWriter(const StdoutWriter&) = delete;
  StdoutWriter& operator=(const StdoutWriter&) = delete;

  absl::Status Write(std::string_view data);
  absl::Status Flush();

 private:
  std::string buffer_;
};

}  // namespace packstore::cli

#endif  // PACKSTORE_CLIENT_CLI_OUTPUT_H_
