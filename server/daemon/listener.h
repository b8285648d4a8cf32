// Listener: the daemon's Unix socket, owned by Asio. It accepts each
// connection, reads the peer's credentials (SO_PEERCRED), refuses peers
// the access policy does not allow, and hands the others to gRPC
// (grpc::AddInsecureChannelFromFd), which owns the descriptor from then on
// and names the connection "fd:N" in ServerContext::peer(). Before that,
// the peer is registered under that descriptor in the PeerRegistry, so a
// call finds its own connection's credentials.
//
// The socket is either bound here (Bind: the caller holds the SocketLock;
// a stale socket file is unlinked, the new one gets its mode before it
// listens, and Stop unlinks it) or adopted from systemd (Adopt: neither
// bound nor unlinked here).
//
//   auto listener = Listener::Bind(io, "/run/packstore/packstore.sock", 0660);
//   (*listener)->Start(server, &peers, access);  // accepts on io's thread
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
#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "asio/io_context.hpp"
#include "asio/local/stream_protocol.hpp"
#include "asio/steady_timer.hpp"
#include "server/service/service.h"

namespace grpc {
class Server;
}  // namespace grpc

namespace packstore::daemon {

class Listener {
 public:
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

  // Starts the accept loop. `server` (started, with no listening port) and
  // `peers` must outlive the listener or Stop.
  void Start(grpc::Server* server, service::PeerRegistry* peers,
             const service::AccessPolicy& access);

  // For connections accepted from now on; open ones stay.
  void SetAccessPolicy(const service::AccessPolicy& access);

  // Stops accepting and closes the socket (unlinking the path if it was
  // bound here), waiting for the io_context's thread to have done so.
  // REQUIRES: the io_context runs. Idempotent.
  void Stop();

  // The socket's path ("" for an adopted socket without one).
  const std::string& path() const { return path_; }
  bool bound_here() const { return bound_here_; }
  uint64_t accepted() const { return accepted_.load(std::memory_order_relaxed); }
  uint64_t refused() const { return refused_.load(std::memory_order_relaxed); }

 private:
  Listener(asio::io_context& io, std::string path, bool bound_here);

  void AcceptNext();
  void HandleConnection(asio::local::stream_protocol::socket socket);

  asio::io_context& io_;
  asio::local::stream_protocol::acceptor acceptor_;
  // Backs off after EMFILE and the like instead of spinning on accept.
  asio::steady_timer retry_timer_;
  const std::string path_;
  const bool bound_here_;
  bool stopped_ = false;  // controlling thread

  // Set by Start before the first accept; used on the io_context's thread.
  grpc::Server* server_ = nullptr;
  service::PeerRegistry* peers_ = nullptr;

  mutable absl::Mutex access_mu_;
  service::AccessPolicy access_ ABSL_GUARDED_BY(access_mu_);

  std::atomic<uint64_t> accepted_{0};
  std::atomic<uint64_t> refused_{0};
};

}  // namespace packstore::daemon

#endif  // PACKSTORE_SERVER_DAEMON_LISTENER_H_
