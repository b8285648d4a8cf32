#include "server/daemon/fast_path_server.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "common/status_util.h"
#include "common/str_cat.h"
#include "spdlog/spdlog.h"

namespace packstore::daemon {
namespace {

constexpr std::string_view kRequestPrefix = "PSFD1 ";
constexpr char kTurnedOff[] = "the fast path is turned off (--fast-path)";
constexpr char kShuttingDown[] = "packstored is shutting down; retry against the next instance";
// A PUT carries one descriptor; room for a few more lets the daemon tell a
// client that sent several what it did wrong instead of losing them.
constexpr size_t kMaxDescriptorsReceived = 8;
constexpr size_t kInitialBuffer = size_t{4} << 10;
// An idle connection gives back a buffer grown past this by a long line.
constexpr size_t kKeptBuffer = size_t{64} << 10;

std::string ErrorLine(const absl::Status& status) {
  std::string message(status.message());
  for (char& c : message) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return StrCat("ERR ", absl::StatusCodeToString(status.code()), " ", message, "\n");
}

// Sends an answer to a fresh connection without waiting, then closes it.
void SendRefusal(int fd, const absl::Status& error) {
  const std::string line = ErrorLine(error);
  if (::send(fd, line.data(), line.size(), MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
    spdlog::debug("could not tell a fast-path client '{}': {}", line.substr(0, line.size() - 1),
                  std::strerror(errno));
  }
  ::shutdown(fd, SHUT_WR);
  // Unread bytes left behind when the socket closes would reach the client
  // as ECONNRESET instead of the end of the stream after the answer: take
  // what it has sent so far (a request line is at most 1 MiB).
  char sink[16 << 10];
  for (size_t drained = 0; drained <= FastPathServer::kMaxLineBytes;) {
    ssize_t n = ::recv(fd, sink, sizeof(sink), MSG_DONTWAIT);
    if (n <= 0) break;
    drained += static_cast<size_t>(n);
  }
}

// The first `max` bytes of a word of the request, quoted for an ERR line
// and the log: escaped, so that an answer stays printable ASCII whatever
// the client sent.
std::string Quoted(std::string_view word, size_t max) {
  const std::string_view shown = word.substr(0, max);
  return StrCat("\"", absl::CHexEscape(absl::string_view(shown.data(), shown.size())), "\"");
}

std::vector<std::string_view> SplitSpaces(std::string_view text) {
  std::vector<std::string_view> parts;
  while (true) {
    size_t space = text.find(' ');
    parts.push_back(text.substr(0, space));
    if (space == std::string_view::npos) return parts;
    text.remove_prefix(space + 1);
  }
}

absl::StatusOr<service::PutMode> ParsePutMode(std::string_view name) {
  if (name == "default") return service::PutMode::kDefault;
  if (name == "auto") return service::PutMode::kAuto;
  if (name == "loose") return service::PutMode::kLoose;
  if (name == "packed") return service::PutMode::kPacked;
  return absl::InvalidArgumentError(
      StrCat("unknown put mode ", Quoted(name, 32), ": use default, auto, loose or packed"));
}

absl::StatusOr<CompressMode> ParseCompression(std::string_view name) {
  // "default" is what COMPRESSION_UNSPECIFIED means for a put.
  if (name == "default" || name == "no") return CompressMode::kNo;
  if (name == "yes") return CompressMode::kYes;
  if (name == "auto") return CompressMode::kAuto;
  return absl::InvalidArgumentError(
      StrCat("unknown compression ", Quoted(name, 32), ": use default, no, yes or auto"));
}

std::string_view CodecWord(const std::optional<CodecKind>& codec) {
  if (!codec) return "none";
  return *codec == CodecKind::kZstd ? "zstd" : "zlib";
}

}  // namespace

// One client connection, served on its own thread until it ends.
class FastPathServer::Connection {
 public:
  Connection(FastPathServer* server, UniqueFd socket, const service::PeerCredentials& peer)
      : server_(server), socket_(std::move(socket)), peer_(peer) {}

  int socket() const { return socket_.get(); }

  void Run() {
    if (const uint32_t limit = server_->idle_timeout_seconds(); limit > 0) {
      SetTimeout(SO_SNDTIMEO, limit);
    }
    while (true) {
      Request request;
      const ReadResult read = ReadRequest(&request);
      if (read == ReadResult::kEnd) return;
      if (read == ReadResult::kIdle) {
        spdlog::warn("fast path: closing the connection of pid {}: part of a request line, then "
                     "nothing for {} s (--stream-idle-timeout)",
                     peer_.pid, receive_timeout_);
        Send(ErrorLine(absl::DeadlineExceededError(
            StrCat("a request line was not completed within ", receive_timeout_,
                   " s (--stream-idle-timeout)"))));
        return;
      }
      if (read == ReadResult::kTooLong) {
        Send(ErrorLine(absl::InvalidArgumentError(
            StrCat("a request line is at most ", kMaxLineBytes, " bytes with its newline"))));
        return;
      }
      if (read == ReadResult::kTooManyDescriptors) {
        Send(ErrorLine(absl::InvalidArgumentError(StrCat(
            "more than ", kMaxDescriptorsReceived, " descriptors came with one request line"))));
        return;
      }
      if (!Handle(request)) return;
    }
  }

 private:
  struct Request {
    std::string_view line;  // without its '\n'; valid until the next read
    std::vector<UniqueFd> descriptors;
    bool lost_descriptors = false;
  };
  // A descriptor and the stream offset where the read that delivered it
  // ended: it came with the message whose bytes the read ended in, so it
  // belongs to the line those bytes are part of.
  struct Received {
    uint64_t read_end;
    UniqueFd fd;
  };
  enum class ReadResult { kRequest, kEnd, kIdle, kTooLong, kTooManyDescriptors };

  ReadResult ReadRequest(Request* request) {
    while (true) {
      if (const void* found = std::memchr(buffer_.data() + scanned_, '\n', end_ - scanned_)) {
        const size_t newline = static_cast<const char*>(found) - buffer_.data();
        const uint64_t line_end = base_ + newline + 1;
        request->line = std::string_view(buffer_.data() + begin_, newline - begin_);
        while (!received_.empty() && received_.front().read_end <= line_end) {
          request->descriptors.push_back(std::move(received_.front().fd));
          received_.pop_front();
        }
        while (!lost_at_.empty() && lost_at_.front() <= line_end) {
          request->lost_descriptors = true;
          lost_at_.pop_front();
        }
        begin_ = scanned_ = newline + 1;
        return ReadResult::kRequest;
      }
      scanned_ = end_;
      if (end_ - begin_ >= kMaxLineBytes) return ReadResult::kTooLong;
      // Each read brings the descriptors of at most one message; held for
      // a line that never ends, they would pile up.
      if (received_.size() > kMaxDescriptorsReceived) return ReadResult::kTooManyDescriptors;
      if (begin_ == end_ && buffer_.size() > kKeptBuffer) {
        base_ += end_;
        begin_ = scanned_ = end_ = 0;
        std::string().swap(buffer_);
      }
      if (begin_ > 0) {
        std::memmove(buffer_.data(), buffer_.data() + begin_, end_ - begin_);
        base_ += begin_;
        end_ -= begin_;
        scanned_ -= begin_;
        begin_ = 0;
      }
      if (end_ == buffer_.size()) {
        buffer_.resize(std::min(kMaxLineBytes, std::max(kInitialBuffer, 2 * buffer_.size())));
      }
      if (!Receive()) return timed_out_ ? ReadResult::kIdle : ReadResult::kEnd;
    }
  }

  // SO_RCVTIMEO or SO_SNDTIMEO of `seconds` (0: none).
  void SetTimeout(int option, uint32_t seconds) {
    const timeval limit{.tv_sec = static_cast<time_t>(seconds), .tv_usec = 0};
    if (::setsockopt(socket_.get(), SOL_SOCKET, option, &limit, sizeof(limit)) != 0) {
      spdlog::debug("fast path: setsockopt: {}", std::strerror(errno));
    }
  }

  // One recvmsg into the buffer; false at the end of the stream or on an
  // error (the connection is over either way).
  bool Receive() {
    // The idle timeout runs while part of a line waits for the rest.
    const uint32_t limit = end_ > begin_ ? server_->idle_timeout_seconds() : 0;
    if (limit != receive_timeout_) {
      SetTimeout(SO_RCVTIMEO, limit);
      receive_timeout_ = limit;
    }
    iovec data{buffer_.data() + end_, buffer_.size() - end_};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxDescriptorsReceived)];
    msghdr message{};
    message.msg_iov = &data;
    message.msg_iovlen = 1;
    message.msg_control = control;
    message.msg_controllen = sizeof(control);
    ssize_t n;
    do {
      n = ::recvmsg(socket_.get(), &message, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      timed_out_ = true;
      return false;
    }
    if (n < 0) {
      spdlog::debug("fast path: reading from uid {} pid {}: {}", peer_.uid, peer_.pid,
                    std::strerror(errno));
    }
    if (n > 0) end_ += static_cast<size_t>(n);
    const uint64_t read_end = base_ + end_;
    for (cmsghdr* c = CMSG_FIRSTHDR(&message); c != nullptr; c = CMSG_NXTHDR(&message, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        received_.push_back(Received{read_end, UniqueFd(fd)});
      }
    }
    // Descriptors past the room given, or past the daemon's own limit,
    // were closed by the kernel.
    if ((message.msg_flags & MSG_CTRUNC) != 0) lost_at_.push_back(read_end);
    return n > 0;
  }

  // Answers one request; false when the connection must close.
  bool Handle(Request& request) {
    if (server_->stopping()) {
      Send(ErrorLine(absl::UnavailableError(kShuttingDown)));
      return false;
    }
    if (!server_->enabled()) {
      Send(ErrorLine(absl::UnavailableError(kTurnedOff)));
      return false;
    }
    std::string_view line = request.line;
    if (!line.starts_with(kRequestPrefix)) {
      return Fail(absl::InvalidArgumentError(
          StrCat("a request line starts with \"PSFD1 \", not ", Quoted(line, 16))));
    }
    line.remove_prefix(kRequestPrefix.size());
    const size_t space = line.find(' ');
    const std::string_view verb = line.substr(0, space);
    const std::string_view arguments =
        space == std::string_view::npos ? std::string_view() : line.substr(space + 1);
    if (request.lost_descriptors) {
      return Fail(absl::InvalidArgumentError(StrCat(
          "descriptors attached to the request were lost: at most ", kMaxDescriptorsReceived,
          " are taken (PUT needs one), and only while the daemon has descriptors to spare")));
    }
    if (verb == "LOCATE") {
      if (!request.descriptors.empty()) {
        return Fail(absl::InvalidArgumentError(
            StrCat("LOCATE takes no descriptors; ", request.descriptors.size(),
                   request.descriptors.size() == 1 ? " was" : " were", " attached")));
      }
      return Locate(arguments);
    }
    if (verb == "PUT") return Put(arguments, request.descriptors);
    return Fail(absl::InvalidArgumentError(
        StrCat("unknown request ", Quoted(verb, 32), ": LOCATE or PUT")));
  }

  bool Locate(std::string_view arguments) {
    if (arguments.empty()) {
      return Fail(absl::InvalidArgumentError(
          StrCat("LOCATE needs 1 to ", kMaxLocateKeys, " keys, separated by single spaces")));
    }
    std::vector<std::string_view> words = SplitSpaces(arguments);
    if (words.size() > kMaxLocateKeys) {
      return Fail(absl::InvalidArgumentError(
          StrCat("LOCATE takes at most ", kMaxLocateKeys, " keys; ", words.size(), " were sent")));
    }
    std::vector<std::string> keys(words.begin(), words.end());
    absl::StatusOr<LocateResult> located =
        server_->service_->Locate(keys, kMaxDescriptorsPerAnswer, peer_);
    if (!located.ok()) return Fail(located.status());
    std::string answer = StrCat("OK ", located->files.size(), "\n");
    answer.reserve(answer.size() + keys.size() * 120);
    for (size_t i = 0; i < keys.size(); ++i) {
      const ObjectLocation& where = located->objects[i];
      switch (where.state) {
        case ObjectLocation::State::kFound:
          answer += StrCat(keys[i], " ", where.file, " ", where.offset, " ", where.length, " ",
                           where.size, " ", CodecWord(where.codec), "\n");
          break;
        case ObjectLocation::State::kMissing:
          answer += StrCat(keys[i], " missing\n");
          break;
        case ObjectLocation::State::kDeferred:
          answer += StrCat(keys[i], " again\n");
          break;
      }
    }
    return Send(answer, located->files);
  }

  bool Put(std::string_view arguments, const std::vector<UniqueFd>& descriptors) {
    std::vector<std::string_view> words = SplitSpaces(arguments);
    if (words.size() != 2) {
      return Fail(absl::InvalidArgumentError(
          "PUT takes a mode and a compression: PSFD1 PUT <default|auto|loose|packed> "
          "<default|no|yes|auto>"));
    }
    service::FilePutOptions options;
    absl::StatusOr<service::PutMode> mode = ParsePutMode(words[0]);
    if (!mode.ok()) return Fail(mode.status());
    options.mode = *mode;
    absl::StatusOr<CompressMode> compress = ParseCompression(words[1]);
    if (!compress.ok()) return Fail(compress.status());
    options.compress = *compress;
    if (descriptors.size() != 1) {
      return Fail(absl::InvalidArgumentError(
          descriptors.empty()
              ? "PUT needs the descriptor of the file to store, attached (SCM_RIGHTS) to the "
                "message that carries its line"
              : StrCat("PUT takes one descriptor; ", descriptors.size(), " were attached")));
    }
    absl::StatusOr<WrittenObject> written =
        server_->service_->PutFromFile(descriptors.front().get(), options, peer_);
    if (!written.ok()) return Fail(written.status());
    return Send(StrCat("OK ", written->key, " ", written->size, "\n"));
  }

  // Answers an error; the stream stays usable.
  bool Fail(const absl::Status& error) {
    spdlog::debug("fast path: uid {} pid {}: {}", peer_.uid, peer_.pid, error.ToString());
    return Send(ErrorLine(error));
  }

  // Sends `text` with `descriptors` attached to its first bytes; false when
  // the client is gone.
  bool Send(std::string_view text, const std::vector<UniqueFd>& descriptors = {}) {
    std::vector<char> control;
    if (!descriptors.empty()) {
      control.resize(CMSG_SPACE(sizeof(int) * descriptors.size()));
    }
    while (!text.empty()) {
      iovec data{const_cast<char*>(text.data()), text.size()};
      msghdr message{};
      message.msg_iov = &data;
      message.msg_iovlen = 1;
      if (!control.empty()) {
        message.msg_control = control.data();
        message.msg_controllen = control.size();
        cmsghdr* c = CMSG_FIRSTHDR(&message);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * descriptors.size());
        for (size_t i = 0; i < descriptors.size(); ++i) {
          const int fd = descriptors[i].get();
          std::memcpy(CMSG_DATA(c) + i * sizeof(int), &fd, sizeof(int));
        }
      }
      const ssize_t n = ::sendmsg(socket_.get(), &message, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
          spdlog::warn("fast path: closing the connection of pid {}: it took none of an answer "
                       "for {} s (--stream-idle-timeout)",
                       peer_.pid, server_->idle_timeout_seconds());
          return false;
        }
        spdlog::debug("fast path: answering uid {} pid {}: {}", peer_.uid, peer_.pid,
                      std::strerror(errno));
        return false;
      }
      // The descriptors went with the first bytes sent.
      control.clear();
      text.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  FastPathServer* const server_;
  const UniqueFd socket_;
  const service::PeerCredentials peer_;
  // Bytes read: [begin_, end_) not yet taken as lines, [begin_, scanned_)
  // known to hold no newline; buffer_[0] is at stream offset base_.
  std::string buffer_;
  size_t begin_ = 0;
  size_t scanned_ = 0;
  size_t end_ = 0;
  uint64_t base_ = 0;
  std::deque<Received> received_;
  std::deque<uint64_t> lost_at_;  // read_end of reads that lost descriptors
  uint32_t receive_timeout_ = 0;  // SO_RCVTIMEO in force, in seconds
  bool timed_out_ = false;        // a read ended by it
};

FastPathServer::FastPathServer(service::ObjectStoreService* service, bool enabled)
    : service_(service), enabled_(enabled) {}

void FastPathServer::Refuse(UniqueFd connection, const absl::Status& error) {
  SendRefusal(connection.get(), error);
}

void FastPathServer::Serve(UniqueFd connection, const service::PeerCredentials& peer) {
  if (!enabled()) return Refuse(std::move(connection), absl::UnavailableError(kTurnedOff));
  // The connection's thread blocks in its reads and writes.
  const int flags = ::fcntl(connection.get(), F_GETFL);
  if (flags < 0 || ::fcntl(connection.get(), F_SETFL, flags & ~O_NONBLOCK) != 0) {
    spdlog::warn("closing a fast-path connection: {}",
                 std::string(ErrnoStatus(errno, "fcntl").message()));
    return;
  }
  auto served = std::make_unique<Connection>(this, std::move(connection), peer);
  if (absl::Status admitted = Admit(served.get()); !admitted.ok()) {
    SendRefusal(served->socket(), admitted);
    return;
  }
  served_.fetch_add(1, std::memory_order_relaxed);
  spdlog::debug("fast-path connection from uid {} gid {} pid {}", peer.uid, peer.gid, peer.pid);
  // Owned by its thread once it runs; forgotten before its socket closes.
  Connection* running = served.release();
  try {
    std::thread([this, running] {
      std::unique_ptr<Connection> owned(running);
      owned->Run();
      Forget(running);
    }).detach();
  } catch (const std::system_error& error) {
    std::unique_ptr<Connection> owned(running);
    Forget(running);
    spdlog::warn("closing a fast-path connection: cannot start its thread: {}", error.what());
  }
}

absl::Status FastPathServer::Admit(Connection* connection) {
  absl::MutexLock lock(&mu_);
  if (stopping_) return absl::UnavailableError(kShuttingDown);
  if (open_.size() >= kMaxConnections) {
    return absl::UnavailableError(StrCat("too many fast-path connections at once (",
                                               kMaxConnections,
                                               "); use gRPC, or retry when some have closed"));
  }
  open_.insert(connection);
  return absl::OkStatus();
}

void FastPathServer::Forget(Connection* connection) {
  absl::MutexLock lock(&mu_);
  open_.erase(connection);
}

bool FastPathServer::stopping() {
  absl::MutexLock lock(&mu_);
  return stopping_;
}

bool FastPathServer::Stop(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  stopping_ = true;
  // An idle connection's read ends at once; one running a request reads
  // the end after it has sent the answer.
  for (Connection* connection : open_) ::shutdown(connection->socket(), SHUT_RD);
  auto none_open = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return open_.empty(); };
  if (mu_.AwaitWithDeadline(absl::Condition(&none_open), deadline)) return true;
  // Answers still being sent to clients that do not read fail now.
  for (Connection* connection : open_) ::shutdown(connection->socket(), SHUT_RDWR);
  return mu_.AwaitWithTimeout(absl::Condition(&none_open), absl::Milliseconds(100));
}

}  // namespace packstore::daemon
