// Output helpers of the packstore tool. See output.h.
#include "client/cli/output.h"

#include <unistd.h>

#include <cstdio>
#include <iostream>

#include "server/store/file_io.h"

namespace packstore::cli {
namespace {

constexpr size_t kBufferLimit = size_t{64} << 10;

}  // namespace

int ExitCodeFor(const absl::Status& status, Store::Kind kind, bool lookup) {
  if (status.ok()) return kExitOk;
  if (kind == Store::Kind::kFolder) {
    return absl::IsInvalidArgument(status) ? kExitError : kExitNegative;
  }
  return lookup && absl::IsNotFound(status) ? kExitNegative : kExitError;
}

int Fail(const absl::Status& status, Store::Kind kind, bool lookup) {
  std::cout.flush();
  std::cerr << "packstore: " << status.message() << "\n";
  return ExitCodeFor(status, kind, lookup);
}

int NegativeAnswerCode(Store::Kind kind) {
  return kind == Store::Kind::kFolder ? kExitOk : kExitNegative;
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

StdoutWriter::~StdoutWriter() { Flush().IgnoreError(); }

absl::Status StdoutWriter::Write(std::string_view data) {
  if (buffer_.size() + data.size() <= kBufferLimit) {
    buffer_.append(data);
    return absl::OkStatus();
  }
  absl::Status flushed = Flush();
  if (!flushed.ok()) return flushed;
  if (data.size() < kBufferLimit) {
    buffer_.append(data);
    return absl::OkStatus();
  }
  return WriteAll(STDOUT_FILENO, data);
}

absl::Status StdoutWriter::Flush() {
  if (buffer_.empty()) return absl::OkStatus();
  absl::Status written = WriteAll(STDOUT_FILENO, buffer_);
  buffer_.clear();
  return written;
}

}  // namespace packstore::cli
