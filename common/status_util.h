// Error-value helpers shared by every module.
//
// Errors are absl::Status values whose codes are gRPC's, so the daemon maps
// them one-to-one at the RPC boundary. errno becomes a Status only here.
//
//   PACKSTORE_ASSIGN_OR_RETURN(auto fd, OpenFile(path));
//   PACKSTORE_RETURN_IF_ERROR(WriteAll(fd, data));
//   if (rc < 0) return ErrnoStatus(errno, "open " + path);
//
// Thread-safety: free functions, no state.
#ifndef PACKSTORE_COMMON_STATUS_UTIL_H_
#define PACKSTORE_COMMON_STATUS_UTIL_H_

#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace packstore {

// Maps an errno value to a Status: ENOENT -> NOT_FOUND, EEXIST ->
// ALREADY_EXISTS, ENOSPC/EDQUOT/EMFILE/ENFILE -> RESOURCE_EXHAUSTED,
// EACCES/EPERM -> PERMISSION_DENIED, EINVAL/ENAMETOOLONG -> INVALID_ARGUMENT,
// EINTR/EAGAIN/EBUSY -> UNAVAILABLE, others -> INTERNAL. The message is
// "<what>: <strerror>".
absl::Status ErrnoStatus(int err, std::string_view what);

// Returns `status` with `context` prepended to its message ("context: msg").
absl::Status Annotate(const absl::Status& status, std::string_view context);

}  // namespace packstore

#define PACKSTORE_STATUS_CONCAT_INNER_(a, b) a##b
#define PACKSTORE_STATUS_CONCAT_(a, b) PACKSTORE_STATUS_CONCAT_INNER_(a, b)

#define PACKSTORE_RETURN_IF_ERROR(expr)              \
  do {                                               \
    ::absl::Status packstore_status_ = (expr);       \
    if (!packstore_status_.ok()) return packstore_status_; \
  } while (0)

#define PACKSTORE_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                     \
  if (!tmp.ok()) return std::move(tmp).status();         \
  lhs = std::move(*tmp)

#define PACKSTORE_ASSIGN_OR_RETURN(lhs, expr) \
  PACKSTORE_ASSIGN_OR_RETURN_IMPL_(PACKSTORE_STATUS_CONCAT_(packstore_sor_, __COUNTER__), lhs, expr)

#endif  // PACKSTORE_COMMON_STATUS_UTIL_H_
