#include "client/lib/fast_path.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <chrono>
#include <array>
#include <charconv>
#include <cstring>
#include <map>

namespace packstore::client::internal {
namespace {

// The protocol's limit of descriptors per message (docs/protocol.md).
constexpr size_t kMaxFdsPerMessage = 253;  // the kernel's SCM_MAX_FD
constexpr int kReceiveTimeoutSeconds = 120;
// After the fast path turned out unavailable (turned off, the daemon at its
// connection limit or restarting), gRPC alone for this long, then a new try.
constexpr std::chrono::seconds kRetryAfter{30};
constexpr size_t kReadChunk = size_t{1} << 20;

absl::StatusCode CodeNamed(std::string_view name) {
  static const std::map<std::string_view, absl::StatusCode> kCodes = {
      {"CANCELLED", absl::StatusCode::kCancelled},
      {"UNKNOWN", absl::StatusCode::kUnknown},
      {"INVALID_ARGUMENT", absl::StatusCode::kInvalidArgument},
      {"DEADLINE_EXCEEDED", absl::StatusCode::kDeadlineExceeded},
      {"NOT_FOUND", absl::StatusCode::kNotFound},
      {"ALREADY_EXISTS", absl::StatusCode::kAlreadyExists},
      {"PERMISSION_DENIED", absl::StatusCode::kPermissionDenied},
      {"RESOURCE_EXHAUSTED", absl::StatusCode::kResourceExhausted},
      {"FAILED_PRECONDITION", absl::StatusCode::kFailedPrecondition},
      {"ABORTED", absl::StatusCode::kAborted},
      {"OUT_OF_RANGE", absl::StatusCode::kOutOfRange},
      {"UNIMPLEMENTED", absl::StatusCode::kUnimplemented},
      {"INTERNAL", absl::StatusCode::kInternal},
      {"UNAVAILABLE", absl::StatusCode::kUnavailable},
      {"DATA_LOSS", absl::StatusCode::kDataLoss},
      {"UNAUTHENTICATED", absl::StatusCode::kUnauthenticated},
  };
  auto it = kCodes.find(name);
  return it == kCodes.end() ? absl::StatusCode::kUnknown : it->second;
}

// The words of `line` separated by single spaces, up to kMaxWords of them
// (the rest stays in the last one). No allocation: the answer to a LOCATE
// of 10,000 keys is split 10,000 times.
constexpr size_t kMaxWords = 6;
struct Words {
  std::array<std::string_view, kMaxWords> word;
  size_t count = 0;
  explicit Words(std::string_view line) {
    while (!line.empty() && count < kMaxWords) {
      const size_t space = count + 1 == kMaxWords ? std::string_view::npos : line.find(' ');
      word[count++] = line.substr(0, space);
      if (space == std::string_view::npos) break;
      line.remove_prefix(space + 1);
    }
  }
  std::string_view operator[](size_t i) const { return word[i]; }
  size_t size() const { return count; }
};

bool ParseNumber(std::string_view text, uint64_t* out) {
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  return ec == std::errc() && end == text.data() + text.size();
}

const char* PutModeName(PutMode mode) {
  switch (mode) {
    case PutMode::kDefault: return "default";
    case PutMode::kAuto: return "auto";
    case PutMode::kLoose: return "loose";
    case PutMode::kPacked: return "packed";
  }
  return "default";
}

const char* CompressionName(Compression compression) {
  switch (compression) {
    case Compression::kDefault: return "default";
    case Compression::kNo: return "no";
    case Compression::kYes: return "yes";
    case Compression::kAuto: return "auto";
  }
  return "default";
}

absl::Status PreadAll(int fd, char* out, size_t n, uint64_t offset) {
  size_t done = 0;
  while (done < n) {
    const ssize_t got = ::pread(fd, out + done, n - done, static_cast<off_t>(offset + done));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return absl::DataLossError(std::string("reading an object: ") + std::strerror(errno));
    if (got == 0) return absl::DataLossError("an object's file ends before the object");
    done += static_cast<size_t>(got);
  }
  return absl::OkStatus();
}

// Inflates `object` (zlib), handing the uncompressed bytes to `sink` in
// chunks of at most `chunk` bytes.
absl::Status Inflate(const LocatedObject& object, size_t chunk,
                     const std::function<absl::Status(std::string_view)>& sink) {
  z_stream z{};
  if (inflateInit(&z) != Z_OK) return absl::InternalError("zlib inflateInit failed");
  std::string in(kReadChunk, '\0'), out(chunk, '\0');
  uint64_t read = 0, produced = 0;
  int rc = Z_OK;
  absl::Status status;
  while (status.ok() && rc != Z_STREAM_END) {
    if (z.avail_in == 0) {
      if (read == object.length) {
        status = absl::DataLossError("compressed object " + object.key + " is truncated");
        break;
      }
      const size_t n = static_cast<size_t>(std::min<uint64_t>(in.size(), object.length - read));
      status = PreadAll(object.file->fd(), in.data(), n, object.offset + read);
      if (!status.ok()) break;
      read += n;
      z.next_in = reinterpret_cast<Bytef*>(in.data());
      z.avail_in = static_cast<uInt>(n);
    }
    z.next_out = reinterpret_cast<Bytef*>(out.data());
    z.avail_out = static_cast<uInt>(out.size());
    rc = inflate(&z, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) {
      status = absl::DataLossError("compressed object " + object.key + " does not inflate");
      break;
    }
    const size_t n = out.size() - z.avail_out;
    produced += n;
    if (produced > object.size) {
      status = absl::DataLossError("compressed object " + object.key + " is larger than its size");
      break;
    }
    if (n > 0) status = sink(std::string_view(out.data(), n));
  }
  inflateEnd(&z);
  if (status.ok() && produced != object.size) {
    status = absl::DataLossError("compressed object " + object.key + " is smaller than its size");
  }
  return status;
}

}  // namespace

PassedFile::~PassedFile() { ::close(fd_); }

FastPath::Connection::~Connection() { Close(); }

void FastPath::Connection::Close() {
  if (sock >= 0) ::close(sock);
  sock = -1;
  pending.clear();
}

bool FastPath::available() const {
  std::lock_guard lock(mu_);
  return AvailableLocked();
}

bool FastPath::AvailableLocked() const {
  return std::chrono::steady_clock::now() >= unavailable_until_;
}

absl::Status FastPath::Unavailable(const std::string& why) {
  unavailable_until_ = std::chrono::steady_clock::now() + kRetryAfter;
  reads_.Close();
  return absl::UnavailableError("the fast path is not available on " + socket_ + ": " + why);
}

absl::Status FastPath::Connect(Connection& connection) const {
  if (connection.sock >= 0) return absl::OkStatus();
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (socket_.size() >= sizeof(address.sun_path)) {
    return absl::UnavailableError("the socket path is too long");
  }
  std::memcpy(address.sun_path, socket_.data(), socket_.size());
  const int sock = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (sock < 0) return absl::ResourceExhaustedError(std::string("socket: ") + std::strerror(errno));
  if (::connect(sock, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    const int err = errno;
    ::close(sock);
    return absl::UnavailableError(std::string("connect: ") + std::strerror(err));
  }
  timeval timeout{kReceiveTimeoutSeconds, 0};
  ::setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  connection.sock = sock;
  return absl::OkStatus();
}

absl::Status FastPath::Exchange(Connection& c, const std::string& request, int fd,
                                size_t lines_after_ok, std::vector<std::string_view>* lines,
                                std::vector<int>* fds) {
  // Send the line, the descriptor (if any) with its first byte.
  size_t sent = 0;
  while (sent < request.size()) {
    iovec iov{const_cast<char*>(request.data() + sent), request.size() - sent};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
    if (fd >= 0 && sent == 0) {
      msg.msg_control = control;
      msg.msg_controllen = sizeof control;
      cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
      cmsg->cmsg_level = SOL_SOCKET;
      cmsg->cmsg_type = SCM_RIGHTS;
      cmsg->cmsg_len = CMSG_LEN(sizeof(int));
      std::memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
    }
    const ssize_t n = ::sendmsg(c.sock, &msg, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::AbortedError(std::string("sending to packstored: ") + std::strerror(errno));
    sent += static_cast<size_t>(n);
  }
  // Receive lines until the response is complete, keeping every
  // descriptor that comes with them.
  std::vector<char> buffer(64 << 10);
  alignas(cmsghdr) char control[CMSG_SPACE(kMaxFdsPerMessage * sizeof(int))];
  size_t wanted = 1;
  // Lines as (start, length) in c.pending, which may grow meanwhile.
  std::vector<std::pair<size_t, size_t>> found;
  size_t scanned = 0;
  while (found.size() < wanted) {
    const size_t newline = c.pending.find('\n', scanned);
    if (newline != std::string::npos) {
      found.emplace_back(scanned, newline - scanned);
      scanned = newline + 1;
      if (found.size() == 1) {
        const std::string_view first(c.pending.data() + found[0].first, found[0].second);
        if (first.rfind("OK", 0) == 0) wanted = 1 + lines_after_ok;
        if (first.rfind("ERR ", 0) == 0) break;
      }
      continue;
    }
    iovec iov{buffer.data(), buffer.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const ssize_t n = ::recvmsg(c.sock, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0 && errno == EINTR) continue;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int passed;
        std::memcpy(&passed, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        fds->push_back(passed);
      }
    }
    if (n < 0) return absl::AbortedError(std::string("reading from packstored: ") + std::strerror(errno));
    if (n == 0) return absl::AbortedError("packstored closed the connection");
    if (msg.msg_flags & MSG_CTRUNC) return absl::AbortedError("descriptors were dropped");
    c.pending.append(buffer.data(), static_cast<size_t>(n));
  }
  // The lines stay in c.response until the next exchange; what came after
  // them (nothing, with this protocol) stays pending.
  c.response.assign(c.pending, 0, scanned);
  c.pending.erase(0, scanned);
  lines->clear();
  for (auto [start, length] : found) lines->emplace_back(c.response.data() + start, length);
  if (lines->front().rfind("ERR ", 0) == 0) {
    const Words words(lines->front());
    const absl::StatusCode code = words.size() > 1 ? CodeNamed(words[1]) : absl::StatusCode::kUnknown;
    const size_t message_at = lines->front().find(' ', 4);
    std::string message =
        message_at == std::string::npos ? "" : std::string(lines->front().substr(message_at + 1));
    return absl::Status(code, message);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::optional<LocatedObject>>> FastPath::Locate(
    std::span<const std::string> keys) {
  std::lock_guard lock(mu_);
  if (!AvailableLocked()) {
    return absl::UnavailableError("the fast path is not available on " + socket_);
  }
  std::vector<std::optional<LocatedObject>> out(keys.size());
  std::vector<size_t> todo(keys.size());
  for (size_t i = 0; i < todo.size(); ++i) todo[i] = i;
  bool retried = false;
  while (!todo.empty()) {
    const size_t batch = std::min(todo.size(), kMaxLocateKeys);
    std::string request = "PSFD1 LOCATE";
    for (size_t i = 0; i < batch; ++i) request.append(" ").append(keys[todo[i]]);
    request.push_back('\n');
    std::vector<std::string_view> lines;
    std::vector<int> raw_fds;
    absl::Status status = Connect(reads_);
    if (status.ok()) status = Exchange(reads_, request, -1, batch, &lines, &raw_fds);
    std::vector<std::shared_ptr<const PassedFile>> files;
    for (int fd : raw_fds) files.push_back(std::make_shared<PassedFile>(fd));
    if (absl::IsAborted(status) && !retried) {
      // A connection the daemon closed (it restarted, say): once more.
      retried = true;
      reads_.Close();
      continue;
    }
    if (absl::IsAborted(status) || absl::IsUnavailable(status)) {
      return Unavailable(std::string(status.message()));
    }
    if (!status.ok()) return status;
    const Words ok(lines[0]);
    uint64_t announced = 0;
    if (ok.size() != 2 || ok[0] != "OK" || !ParseNumber(ok[1], &announced) ||
        announced != files.size() || lines.size() != batch + 1) {
      return Unavailable("an answer that does not follow the protocol: " + std::string(lines[0]));
    }
    std::vector<size_t> again;
    for (size_t i = 0; i < batch; ++i) {
      const size_t index = todo[i];
      const Words words(lines[i + 1]);
      if (words.size() == 0 || words[0] != keys[index]) {
        return Unavailable("an answer for another key: " + std::string(lines[i + 1]));
      }
      if (words.size() == 2 && words[1] == "missing") continue;
      if (words.size() == 2 && words[1] == "again") {
        again.push_back(index);
        continue;
      }
      LocatedObject object;
      object.key = keys[index];
      uint64_t fd_index = 0;
      if (words.size() != 6 || !ParseNumber(words[1], &fd_index) || fd_index >= files.size() ||
          !ParseNumber(words[2], &object.offset) || !ParseNumber(words[3], &object.length) ||
          !ParseNumber(words[4], &object.size)) {
        return Unavailable("an answer that does not follow the protocol: " + std::string(lines[i + 1]));
      }
      if (words[5] == "none") {
        object.codec = Codec::kNone;
      } else if (words[5] == "zlib") {
        object.codec = Codec::kZlib;
      } else if (words[5] == "zstd") {
        object.codec = Codec::kZstd;
      } else {
        return Unavailable("an unknown codec: " + std::string(lines[i + 1]));
      }
      if (object.codec == Codec::kNone && object.length != object.size) {
        return Unavailable("an uncompressed object whose length is not its size: " + std::string(lines[i + 1]));
      }
      object.file = files[fd_index];
      out[index] = std::move(object);
    }
    if (again.size() == batch) return Unavailable("the daemon answered no key of a request");
    again.insert(again.end(), todo.begin() + static_cast<long>(batch), todo.end());
    todo = std::move(again);
  }
  return out;
}

absl::StatusOr<ObjectRef> FastPath::PutFile(int fd, const PutOptions& options) {
  if (!available()) return absl::UnavailableError("the fast path is not available on " + socket_);
  const std::string request = std::string("PSFD1 PUT ") + PutModeName(options.mode) + " " +
                              CompressionName(options.compression) + "\n";
  // A connection of its own: the daemon may take seconds to store a large
  // file, and other threads' reads must not wait behind it.
  Connection upload;
  std::vector<std::string_view> lines;
  std::vector<int> raw_fds;
  absl::Status status = Connect(upload);
  if (status.ok()) status = Exchange(upload, request, fd, 0, &lines, &raw_fds);
  for (int passed : raw_fds) ::close(passed);
  if (absl::IsAborted(status) || absl::IsUnavailable(status)) {
    std::lock_guard lock(mu_);
    return Unavailable(std::string(status.message()));
  }
  if (!status.ok()) return status;
  const Words words(lines[0]);
  ObjectRef ref;
  if (words.size() != 3 || words[0] != "OK" || !ParseNumber(words[2], &ref.size)) {
    std::lock_guard lock(mu_);
    return Unavailable("an answer that does not follow the protocol: " + std::string(lines[0]));
  }
  ref.key = std::string(words[1]);
  return ref;
}

absl::Status ReadLocated(const LocatedObject& object, uint64_t offset, size_t n, char* out) {
  if (object.codec == Codec::kNone) return PreadAll(object.file->fd(), out, n, object.offset + offset);
  if (object.codec == Codec::kZstd) return absl::UnimplementedError("zstd objects are read through gRPC");
  uint64_t position = 0;
  size_t copied = 0;
  absl::Status status = Inflate(object, kReadChunk, [&](std::string_view chunk) {
    const uint64_t begin = std::max(position, offset);
    const uint64_t end = std::min<uint64_t>(position + chunk.size(), offset + n);
    if (begin < end) {
      std::memcpy(out + copied, chunk.data() + (begin - position), end - begin);
      copied += end - begin;
    }
    position += chunk.size();
    // The rest of the object is not needed.
    return copied == n ? absl::CancelledError() : absl::OkStatus();
  });
  return absl::IsCancelled(status) && copied == n ? absl::OkStatus() : status;
}

absl::Status StreamLocated(const LocatedObject& object, size_t chunk,
                           const std::function<absl::Status(std::string_view)>& sink) {
  if (object.codec == Codec::kZlib) return Inflate(object, chunk, sink);
  if (object.codec == Codec::kZstd) return absl::UnimplementedError("zstd objects are read through gRPC");
  std::string buffer(std::min<uint64_t>(chunk, object.size), '\0');
  for (uint64_t done = 0; done < object.size;) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(buffer.size(), object.size - done));
    if (absl::Status status = PreadAll(object.file->fd(), buffer.data(), n, object.offset + done);
        !status.ok()) {
      return status;
    }
    if (absl::Status status = sink(std::string_view(buffer.data(), n)); !status.ok()) return status;
    done += n;
  }
  return absl::OkStatus();
}

}  // namespace packstore::client::internal
