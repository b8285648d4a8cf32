// Listener: the daemon's Unix socket, owned by Asio. It accepts each
// connection, reads the peer's credentials (SO_PEERCRED) and waits, on the
// io_context and for at most kFirstBytesTimeout, for the client's first
// bytes, which it peeks at (MSG_PEEK: they stay for whoever serves the
// connection) to tell the two protocols of the socket apart
// (docs/protocol.md): the HTTP/2 client preface means gRPC, "PSFD1 " the
// local fast path; anything else, or nothing in time, is closed.
//
// A gRPC peer the access policy does not allow is disconnected; the others
// are handed to gRPC (grpc::AddInsecureChannelFromFd), which owns the
// descriptor from then on and names the connection "fd:N" in
// ServerContext::peer(). Before that, the peer is registered under that
// descriptor in the PeerRegistry, so a call finds its own connection's
// credentials. A fast-path peer not allowed is answered ERR
// PERMISSION_DENIED and closed; the others go to the FastPathServer.
//
// The socket is either bound here (Bind: the caller holds the SocketLock;
// a stale socket file is unlinked, the new one gets its mode before it
// listens, and Stop unlinks it) or adopted from systemd (Adopt: neither
// bound nor unlinked here).
//
//   auto listener = Listener::Bind(io, "/run/packstore/packstore.sock", 0660);
//   (*listener)->Start(server, &fast_path, &peers, access);  // on io's thread
//   ...
//   (*listener)->Stop();
//
// Thread-safety: Bind, Adopt, Start and Stop from one controlling thread,
// which is not the io_context's; SetAccessPolicy from any thread. The
// accept loop runs on the io_context's thread.
#ifndef PACKSTORE_SERVER_DAEMON_LISTENER_H_
#define PACKSTORE_SERVER_DAEMON_LISTENER_H_

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <set>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "asio/io_context.hpp"
#include "asio/local/stream_protocol.hpp"
#include "asio/steady_timer.hpp"
#include "server/daemon/fast_path_server.h"
#include "server/service/service.h"

namespace grpc {
class Server;
}  // namespace grpc

namespace packstore::daemon {

class Listener {
 public:
  // A connection whose client has not sent enough to tell its protocol by
  // then is closed.
  static constexpr std::chrono::seconds kFirstBytesTimeout{5};

  // Binds `path` with file mode `mode`. REQUIRES: the caller holds the
  // path's SocketLock. FAILED_PRECONDITION if something other than a
  // socket is at `path`; INVALID_ARGUMENT for a path too long for a Unix
  // socket; the errno of a failed unlink, bind, chmod or listen.
  static absl::StatusOr<std::unique_ptr<Listener>> Bind(asio::io_context& io,
                                                        const std::string& path, mode_t mode);
  // Adopts a listening socket (from TakeSystemdSocket), closing it on
  // failure. The errno of a failed assign.
  static absl::StatusOr<std::unique_ptr<Listener>> Adopt(asio::io_context& io, int socket);

  ~Listener();
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  // Starts the accept loop. `server` (started, with no listening port),
  // `fast_path` and `peers` must outlive the listener or Stop.
  void Start(grpc::Server* server, FastPathServer* fast_path, service::PeerRegistry* peers,
             const service::AccessPolicy& access);

  // For connections accepted from now on; open ones stay.
  void SetAccessPolicy(const service::AccessPolicy& access);

  // Stops accepting and closes the socket (unlinking the path if it was
  // bound here) and the connections still waiting for their first bytes,
  // waiting for the io_context's thread to have done so.
  // REQUIRES: the io_context runs. Idempotent.
  void Stop();

  // The socket's path ("" for an adopted socket without one).
  const std::string& path() const { return path_; }
  bool bound_here() const { return bound_here_; }
  uint64_t accepted() const { return accepted_.load(std::memory_order_relaxed); }
  uint64_t refused() const { return refused_.load(std::memory_order_relaxed); }

 private:
  Listener(asio::io_context& io, std::string path, bool bound_here);

  // A connection whose protocol is not known yet; io_context's thread only.
  struct Pending;

  void AcceptNext();
  void HandleConnection(asio::local::stream_protocol::socket socket);
  void WaitForBytes(const std::shared_ptr<Pending>& pending);
  void Peek(const std::shared_ptr<Pending>& pending);
  void Close(const std::shared_ptr<Pending>& pending);
  // Hands over a connection whose first bytes have been seen.
  void Dispatch(const std::shared_ptr<Pending>& pending, bool fast_path);
  // Takes ownership of `fd`.
  void ServeGrpc(int fd, const service::PeerCredentials& peer);

  asio::io_context& io_;
  asio::local::stream_protocol::acceptor acceptor_;
  // Backs off after EMFILE and the like instead of spinning on accept.
  asio::steady_timer retry_timer_;
  const std::string path_;
  const bool bound_here_;
  bool stopped_ = false;  // controlling thread

  // Set by Start before the first accept; used on the io_context's thread.
  grpc::Server* server_ = nullptr;
  FastPathServer* fast_path_ = nullptr;
  service::PeerRegistry* peers_ = nullptr;
  std::set<std::shared_ptr<Pending>> pending_;

  mutable absl::Mutex access_mu_;
  service::AccessPolicy access_ ABSL_GUARDED_BY(access_mu_);

  std::atomic<uint64_t> accepted_{0};
  std::atomic<uint64_t> refused_{0};
};

}  // namespace packstore::daemon

#endif  // PACKSTORE_SERVER_DAEMON_LISTENER_H_
