// Tests for errno mapping, annotation and the status macros.
#include "common/status_util.h"

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "common/str_cat.h"
#include "gtest/gtest.h"

namespace packstore {
namespace {

TEST(ErrnoStatusTest, MapsErrnoToCodes) {
  const std::pair<int, absl::StatusCode> cases[] = {
      {ENOENT, absl::StatusCode::kNotFound},
      {EEXIST, absl::StatusCode::kAlreadyExists},
      {ENOSPC, absl::StatusCode::kResourceExhausted},
      {EDQUOT, absl::StatusCode::kResourceExhausted},
      {EMFILE, absl::StatusCode::kResourceExhausted},
      {ENFILE, absl::StatusCode::kResourceExhausted},
      {EACCES, absl::StatusCode::kPermissionDenied},
      {EPERM, absl::StatusCode::kPermissionDenied},
      {EINVAL, absl::StatusCode::kInvalidArgument},
      {ENAMETOOLONG, absl::StatusCode::kInvalidArgument},
      {EINTR, absl::StatusCode::kUnavailable},
      {EAGAIN, absl::StatusCode::kUnavailable},
      {EBUSY, absl::StatusCode::kUnavailable},
      {EIO, absl::StatusCode::kInternal},
      {EBADF, absl::StatusCode::kInternal},
      {EXDEV, absl::StatusCode::kInternal},
  };
  for (const auto& [err, code] : cases) {
    EXPECT_EQ(ErrnoStatus(err, "op").code(), code) << "errno " << err;
  }
}

TEST(ErrnoStatusTest, MessageIsWhatThenStrerror) {
  absl::Status status = ErrnoStatus(ENOENT, "open /x/y");
  EXPECT_EQ(status.message(), StrCat("open /x/y: ", std::strerror(ENOENT)));
  status = ErrnoStatus(ENOSPC, "write pack 3");
  EXPECT_EQ(status.message(), StrCat("write pack 3: ", std::strerror(ENOSPC)));
}

TEST(ErrnoStatusTest, UnknownErrnoIsInternalWithAMessage) {
  absl::Status status = ErrnoStatus(123456, "ioctl");
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(absl::StartsWith(status.message(), "ioctl: ")) << status;
  EXPECT_GT(status.message().size(), std::string_view("ioctl: ").size());
}

TEST(AnnotateTest, PrependsContextAndKeepsCode) {
  absl::Status annotated = Annotate(absl::DataLossError("bad checksum"), "pack 7 offset 42");
  EXPECT_EQ(annotated.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(annotated.message(), "pack 7 offset 42: bad checksum");

  annotated = Annotate(Annotate(absl::NotFoundError("gone"), "inner"), "outer");
  EXPECT_EQ(annotated.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(annotated.message(), "outer: inner: gone");
}

TEST(AnnotateTest, KeepsPayloads) {
  absl::Status status = absl::UnavailableError("busy");
  status.SetPayload("type.example/retry", absl::Cord("5s"));
  absl::Status annotated = Annotate(status, "lock");
  absl::optional<absl::Cord> payload = annotated.GetPayload("type.example/retry");
  ASSERT_TRUE(payload.has_value());
  EXPECT_EQ(*payload, "5s");
}

TEST(AnnotateTest, OkStaysOk) { EXPECT_TRUE(Annotate(absl::OkStatus(), "context").ok()); }

absl::Status FailIf(bool fail) {
  if (fail) return absl::AbortedError("asked to fail");
  return absl::OkStatus();
}

absl::StatusOr<int> ValueOr(bool fail, int value) {
  if (fail) return absl::OutOfRangeError("no value");
  return value;
}

absl::Status ReturnIfError(bool fail, int* reached) {
  PACKSTORE_RETURN_IF_ERROR(FailIf(fail));
  ++*reached;
  return absl::OkStatus();
}

absl::StatusOr<int> AssignOrReturn(bool fail_first, bool fail_second) {
  PACKSTORE_ASSIGN_OR_RETURN(int a, ValueOr(fail_first, 20));
  PACKSTORE_ASSIGN_OR_RETURN(const int b, ValueOr(fail_second, 22));
  return a + b;
}

TEST(StatusMacrosTest, ReturnIfErrorPropagates) {
  int reached = 0;
  EXPECT_TRUE(ReturnIfError(false, &reached).ok());
  EXPECT_EQ(reached, 1);
  EXPECT_EQ(ReturnIfError(true, &reached).code(), absl::StatusCode::kAborted);
  EXPECT_EQ(reached, 1);
}

TEST(StatusMacrosTest, AssignOrReturnPropagates) {
  absl::StatusOr<int> sum = AssignOrReturn(false, false);
  ASSERT_TRUE(sum.ok()) << sum.status();
  EXPECT_EQ(*sum, 42);
  EXPECT_EQ(AssignOrReturn(true, false).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(AssignOrReturn(false, true).status().code(), absl::StatusCode::kOutOfRange);
}

}  // namespace
}  // namespace packstore
