#include "server/daemon/listener.h"

#include <fcntl.h>
#include <grpcpp/server.h>
#include <grpcpp/server_posix.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <string_view>
#include <utility>

#include "absl/synchronization/notification.h"
#include "asio/post.hpp"
#include "common/status_util.h"
#include "common/str_cat.h"
#include "server/daemon/socket_activation.h"
#include "spdlog/spdlog.h"

namespace packstore::daemon {
namespace {

using asio::local::stream_protocol;

// The kernel caps it at net.core.somaxconn anyway.
constexpr int kListenBacklog = 4096;

// What a client sends first (RFC 9113, 3.4; docs/protocol.md).
constexpr std::string_view kHttp2Preface("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24);
constexpr std::string_view kFastPathPrefix = "PSFD1 ";
// Room to peek at the longer of the two.
constexpr size_t kPeekBytes = std::max(kHttp2Preface.size(), kFastPathPrefix.size());
// A client that has sent part of a prefix is peeked at again after this
// long: the socket stays readable while the bytes wait, so waiting for
// readiness again would spin.
constexpr std::chrono::milliseconds kPeekAgainAfter{5};

// Whether `seen` could still become `prefix`, or already starts with it.
bool CouldBe(std::string_view seen, std::string_view prefix) {
  const size_t n = std::min(seen.size(), prefix.size());
  return seen.substr(0, n) == prefix.substr(0, n);
}

enum class Protocol { kUndecided, kGrpc, kFastPath, kUnknown };

Protocol Classify(std::string_view seen) {
  if (seen.starts_with(kHttp2Preface)) return Protocol::kGrpc;
  if (seen.starts_with(kFastPathPrefix)) return Protocol::kFastPath;
  if (CouldBe(seen, kHttp2Preface) || CouldBe(seen, kFastPathPrefix)) return Protocol::kUndecided;
  return Protocol::kUnknown;
}

absl::Status AsioStatus(const asio::error_code& error, std::string_view what) {
  return ErrnoStatus(error.value(), what);
}

}  // namespace

struct Listener::Pending {
  Pending(stream_protocol::socket accepted, const service::PeerCredentials& credentials)
      : socket(std::move(accepted)),
        expiry(socket.get_executor()),
        peek_again(socket.get_executor()),
        peer(credentials) {}

  stream_protocol::socket socket;
  asio::steady_timer expiry;      // closes the connection at kFirstBytesTimeout
  asio::steady_timer peek_again;  // after part of a prefix
  const service::PeerCredentials peer;
};

Listener::Listener(asio::io_context& io, std::string path, bool bound_here)
    : io_(io), acceptor_(io), retry_timer_(io), path_(std::move(path)), bound_here_(bound_here) {}

Listener::~Listener() = default;

absl::StatusOr<std::unique_ptr<Listener>> Listener::Bind(asio::io_context& io,
                                                         const std::string& path, mode_t mode) {
  if (path.empty() || path.size() >= sizeof(sockaddr_un{}.sun_path)) {
    return absl::InvalidArgumentError(StrCat("socket path '", path, "' is empty or longer than ",
                                             sizeof(sockaddr_un{}.sun_path) - 1, " bytes"));
  }
  // A socket file left by a daemon that died: ours now that we hold the
  // lock. Anything else is not ours to delete.
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::FailedPreconditionError(
          StrCat(path, " exists and is not a socket; not replacing it"));
    }
    if (::unlink(path.c_str()) != 0)
      return ErrnoStatus(errno, StrCat("remove stale socket ", path));
  }

  std::unique_ptr<Listener> listener(new Listener(io, path, /*bound_here=*/true));
  asio::error_code error;
  listener->acceptor_.open(stream_protocol(), error);
  if (error) return AsioStatus(error, "create socket");
  listener->acceptor_.bind(stream_protocol::endpoint(path), error);
  if (error) return AsioStatus(error, StrCat("bind ", path));
  // Before listen(): until then a connect is refused, so no peer ever
  // reaches the socket under the umask's mode.
  absl::Status status;
  if (::chmod(path.c_str(), mode) != 0) status = ErrnoStatus(errno, StrCat("chmod ", path));
  if (status.ok()) {
    listener->acceptor_.listen(kListenBacklog, error);
    if (error) status = AsioStatus(error, StrCat("listen on ", path));
  }
  if (!status.ok()) {
    ::unlink(path.c_str());
    return status;
  }
  return listener;
}

absl::StatusOr<std::unique_ptr<Listener>> Listener::Adopt(asio::io_context& io, int socket) {
  std::unique_ptr<Listener> listener(new Listener(io, BoundPath(socket), /*bound_here=*/false));
  asio::error_code error;
  listener->acceptor_.assign(stream_protocol(), socket, error);
  if (error) {
    ::close(socket);
    return AsioStatus(error, "adopt the socket systemd passed");
  }
  return listener;
}

void Listener::Start(grpc::Server* server, FastPathServer* fast_path, service::PeerRegistry* peers,
                     const service::AccessPolicy& access) {
  server_ = server;
  fast_path_ = fast_path;
  peers_ = peers;
  SetAccessPolicy(access);
  asio::post(io_, [this] { AcceptNext(); });
}

void Listener::SetAccessPolicy(const service::AccessPolicy& access) {
  absl::MutexLock lock(&access_mu_);
  access_ = access;
}

void Listener::AcceptNext() {
  acceptor_.async_accept([this](const asio::error_code& error, stream_protocol::socket socket) {
    if (error == asio::error::operation_aborted || !acceptor_.is_open()) return;
    if (error) {
      // Out of descriptors or memory: the pending connection stays queued,
      // so retrying at once would spin. Anything else concerned only the
      // connection that failed.
      bool exhausted = error.value() == EMFILE || error.value() == ENFILE ||
                       error.value() == ENOBUFS || error.value() == ENOMEM;
      spdlog::warn("accept on {}: {}", path_, error.message());
      if (!exhausted) {
        AcceptNext();
        return;
      }
      retry_timer_.expires_after(std::chrono::milliseconds(100));
      retry_timer_.async_wait([this](const asio::error_code& wait_error) {
        if (!wait_error) AcceptNext();
      });
      return;
    }
    HandleConnection(std::move(socket));
    AcceptNext();
  });
}

void Listener::HandleConnection(stream_protocol::socket socket) {
  ucred credentials{};
  socklen_t length = sizeof(credentials);
  if (::getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &credentials, &length) != 0) {
    spdlog::warn("closing a connection whose credentials cannot be read: {}",
                 std::string(ErrnoStatus(errno, "SO_PEERCRED").message()));
    return;
  }
  if (::fcntl(socket.native_handle(), F_SETFD, FD_CLOEXEC) != 0) {
    spdlog::warn("closing a connection: {}", std::string(ErrnoStatus(errno, "fcntl").message()));
    return;
  }
  auto pending = std::make_shared<Pending>(
      std::move(socket),
      service::PeerCredentials{credentials.uid, credentials.gid, credentials.pid});
  pending_.insert(pending);
  pending->expiry.expires_after(kFirstBytesTimeout);
  pending->expiry.async_wait([this, pending](const asio::error_code& error) {
    if (error || !pending->socket.is_open()) return;
    spdlog::debug(
        "closing a connection from uid {} pid {}: it sent too little to tell its "
        "protocol within {} s",
        pending->peer.uid, pending->peer.pid, kFirstBytesTimeout.count());
    Close(pending);
  });
  WaitForBytes(pending);
}

void Listener::WaitForBytes(const std::shared_ptr<Pending>& pending) {
  pending->socket.async_wait(stream_protocol::socket::wait_read,
                             [this, pending](const asio::error_code& error) {
                               if (error || !pending->socket.is_open()) return;
                               Peek(pending);
                             });
}

void Listener::Peek(const std::shared_ptr<Pending>& pending) {
  char seen[kPeekBytes];
  const ssize_t n =
      ::recv(pending->socket.native_handle(), seen, sizeof(seen), MSG_PEEK | MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
    WaitForBytes(pending);
    return;
  }
  if (n <= 0) {
    Close(pending);  // gone before saying anything
    return;
  }
  switch (Classify(std::string_view(seen, static_cast<size_t>(n)))) {
    case Protocol::kGrpc:
      Dispatch(pending, /*fast_path=*/false);
      return;
    case Protocol::kFastPath:
      Dispatch(pending, /*fast_path=*/true);
      return;
    case Protocol::kUndecided:
      pending->peek_again.expires_after(kPeekAgainAfter);
      pending->peek_again.async_wait([this, pending](const asio::error_code& error) {
        if (error || !pending->socket.is_open()) return;
        Peek(pending);
      });
      return;
    case Protocol::kUnknown:
      spdlog::info("closed a connection from uid {} pid {} that speaks neither gRPC nor PSFD1",
                   pending->peer.uid, pending->peer.pid);
      Close(pending);
      return;
  }
}

void Listener::Close(const std::shared_ptr<Pending>& pending) {
  asio::error_code ignored;
  pending->expiry.cancel();
  pending->peek_again.cancel();
  pending->socket.close(ignored);
  pending_.erase(pending);
}

void Listener::Dispatch(const std::shared_ptr<Pending>& pending, bool fast_path) {
  pending->expiry.cancel();
  pending->peek_again.cancel();
  pending_.erase(pending);
  const service::PeerCredentials peer = pending->peer;
  bool allowed;
  {
    absl::MutexLock lock(&access_mu_);
    allowed = access_.IsAllowed(peer);
  }
  asio::error_code error;
  const int fd = pending->socket.release(error);
  if (error) {
    spdlog::warn("closing a connection asio would not release: {}", error.message());
    return;
  }
  if (!allowed) {
    refused_.fetch_add(1, std::memory_order_relaxed);
    spdlog::info("refused a connection from uid {} gid {} pid {} ({}): not in the allow lists",
                 peer.uid, peer.gid, peer.pid, fast_path ? "fast path" : "gRPC");
    if (fast_path) {
      FastPathServer::Refuse(UniqueFd(fd), service::NotAllowedError(peer));
    } else {
      ::close(fd);
    }
    return;
  }
  accepted_.fetch_add(1, std::memory_order_relaxed);
  if (fast_path) {
    fast_path_->Serve(UniqueFd(fd), peer);
  } else {
    ServeGrpc(fd, peer);
  }
}

void Listener::ServeGrpc(int fd, const service::PeerCredentials& peer) {
  // gRPC's endpoint needs a non-blocking descriptor; asio's accept leaves
  // the flag unset.
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
    spdlog::warn("closing a connection: {}", std::string(ErrnoStatus(errno, "fcntl").message()));
    ::close(fd);
    return;
  }
  spdlog::debug("connection from uid {} gid {} pid {} on fd {}", peer.uid, peer.gid, peer.pid, fd);
  // Registered first: gRPC may run the connection's first call before
  // AddInsecureChannelFromFd returns.
  peers_->Register(fd, peer);
  grpc::AddInsecureChannelFromFd(server_, fd);
}

void Listener::Stop() {
  if (stopped_) return;
  stopped_ = true;
  absl::Notification closed;
  asio::post(io_, [this, &closed] {
    asio::error_code ignored;
    retry_timer_.cancel();
    acceptor_.close(ignored);
    for (const std::shared_ptr<Pending>& pending : std::set(pending_)) Close(pending);
    if (bound_here_ && ::unlink(path_.c_str()) != 0 && errno != ENOENT) {
      spdlog::warn("{}", std::string(ErrnoStatus(errno, StrCat("remove ", path_)).message()));
    }
    closed.Notify();
  });
  closed.WaitForNotification();
}

}  // namespace packstore::daemon
