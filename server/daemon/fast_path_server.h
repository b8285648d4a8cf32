// FastPathServer: the daemon's side of the local fast path (docs/protocol.md,
// "The local fast path (PSFD1)"). The listener hands it the connections
// whose first bytes are "PSFD1 "; each is served on a thread of its own, one
// request after the other: a line of text in, its answer out, with file
// descriptors passed by SCM_RIGHTS both ways. LOCATE and PUT go to the
// service (ObjectStoreService::Locate and PutFromFile), which applies the
// access policy, limits and write path the gRPC calls use. Nothing here
// touches gRPC.
//
//   FastPathServer fast_path(service, /*enabled=*/true);
//   fast_path.Serve(std::move(connection), peer);  // from the listener
//   ...
//   bool stopped = fast_path.Stop(deadline);       // at shutdown
//
// A connection is closed after an ERR only when the stream cannot go on:
// a request line too long, the fast path turned off, the daemon stopping,
// or a failed read or write. Other errors answer the request and the
// connection stays.
//
// Thread-safety: every method may be called from any thread. Serve and
// Refuse never block.
#ifndef PACKSTORE_SERVER_DAEMON_FAST_PATH_SERVER_H_
#define PACKSTORE_SERVER_DAEMON_FAST_PATH_SERVER_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <set>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/service/service.h"
#include "server/store/file_io.h"

namespace packstore::daemon {

class FastPathServer {
 public:
  // The protocol's limits (docs/protocol.md).
  static constexpr size_t kMaxLineBytes = size_t{1} << 20;  // with its '\n'
  static constexpr size_t kMaxLocateKeys = 10000;
  // Descriptors per answer: SCM_MAX_FD (253) is the kernel's limit for one
  // message.
  static constexpr size_t kMaxDescriptorsPerAnswer = 250;
  // Each connection holds a thread; past this many, new ones are refused
  // (UNAVAILABLE: the fast path is not available) and the client uses gRPC. An idle connection's
  // thread costs its stack's touched pages and a small read buffer.
  static constexpr size_t kMaxConnections = 1024;

  // `service` must outlive the server (or Stop's success).
  FastPathServer(service::ObjectStoreService* service, bool enabled);
  // REQUIRES: no connection thread runs (Stop returned true, or none was
  // ever started).
  ~FastPathServer() = default;
  FastPathServer(const FastPathServer&) = delete;
  FastPathServer& operator=(const FastPathServer&) = delete;

  // --fast-path, also on SIGHUP. While off, new connections and the next
  // request of open ones are answered ERR UNAVAILABLE and closed.
  void SetEnabled(bool enabled) { enabled_.store(enabled, std::memory_order_relaxed); }
  bool enabled() const { return enabled_.load(std::memory_order_relaxed); }

  // --stream-idle-timeout, also on SIGHUP (0: none). A connection that sent
  // part of a request line and then nothing for this long, or took none of
  // an answer for this long, is answered ERR DEADLINE_EXCEEDED (when it can
  // be) and closed. Between requests a connection may stay idle for ever.
  // Answers use the value in force when the connection came.
  void SetIdleTimeout(uint32_t seconds) {
    idle_timeout_seconds_.store(seconds, std::memory_order_relaxed);
  }
  uint32_t idle_timeout_seconds() const {
    return idle_timeout_seconds_.load(std::memory_order_relaxed);
  }

  // Serves an accepted connection whose peer is allowed, on a new thread;
  // or, when the fast path is off, the daemon stops or kMaxConnections are
  // open, answers the refusal at once and closes it.
  void Serve(UniqueFd connection, const service::PeerCredentials& peer);

  // Answers `error` as an ERR line and closes the connection, without
  // blocking: a connection that has not been answered yet has room in its
  // send buffer for one line.
  static void Refuse(UniqueFd connection, const absl::Status& error);

  // Stops: refuses connections from now on, closes idle ones at once and
  // lets requests running finish until `deadline`, after which their
  // connections are shut down too. False when a connection thread still
  // runs at `deadline` (stuck in a client's file, say); the service must
  // then outlive the process.
  bool Stop(absl::Time deadline);

  uint64_t served() const { return served_.load(std::memory_order_relaxed); }

 private:
  class Connection;

  // Counts a connection in (or answers why not): before its thread starts.
  absl::Status Admit(Connection* connection);
  // Its thread's last step before its socket is closed, so that Stop only
  // ever shuts down sockets that are still open.
  void Forget(Connection* connection);
  bool stopping();

  service::ObjectStoreService* const service_;
  std::atomic<bool> enabled_;
  std::atomic<uint32_t> idle_timeout_seconds_{0};
  std::atomic<uint64_t> served_{0};

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::set<Connection*> open_ ABSL_GUARDED_BY(mu_);
};

}  // namespace packstore::daemon

#endif  // PACKSTORE_SERVER_DAEMON_FAST_PATH_SERVER_H_
