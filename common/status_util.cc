// Error-value helpers: errno mapping and context annotation.
#include "common/status_util.h"

#include <cerrno>
#include <cstring>
#include <string>

#include "absl/strings/cord.h"
#include "common/str_cat.h"

namespace packstore {
namespace {

// strerror() may share a static buffer between threads; strerror_r() is
// declared in its XSI form (int) or its GNU form (char*) depending on the
// feature macros, and these overloads accept whichever one the build sees.
[[maybe_unused]] const char* StrErrorResult(int rc, const char* buffer) {
  return rc == 0 ? buffer : "unknown error";
}
[[maybe_unused]] const char* StrErrorResult(const char* result, const char*) { return result; }

std::string ErrnoMessage(int err) {
  char buffer[256] = {};
  return StrErrorResult(strerror_r(err, buffer, sizeof(buffer)), buffer);
}

absl::StatusCode ErrnoCode(int err) {
  switch (err) {
    case ENOENT:
      return absl::StatusCode::kNotFound;
    case EEXIST:
      return absl::StatusCode::kAlreadyExists;
    case ENOSPC:
    case EDQUOT:
    case EMFILE:
    case ENFILE:
      return absl::StatusCode::kResourceExhausted;
    case EACCES:
    case EPERM:
      return absl::StatusCode::kPermissionDenied;
    case EINVAL:
    case ENAMETOOLONG:
      return absl::StatusCode::kInvalidArgument;
    case EINTR:
    case EAGAIN:
    case EBUSY:
      return absl::StatusCode::kUnavailable;
    default:
      return absl::StatusCode::kInternal;
  }
}

}  // namespace

absl::Status ErrnoStatus(int err, std::string_view what) {
  return absl::Status(ErrnoCode(err), StrCat(what, ": ", ErrnoMessage(err)));
}

absl::Status Annotate(const absl::Status& status, std::string_view context) {
  // An OK status carries no message to annotate.
  if (status.ok()) return status;
  absl::Status annotated(status.code(), status.message().empty()
                                            ? std::string(context)
                                            : StrCat(context, ": ", status.message()));
  status.ForEachPayload([&annotated](absl::string_view type_url, const absl::Cord& payload) {
    annotated.SetPayload(type_url, payload);
  });
  return annotated;
}

}  // namespace packstore
