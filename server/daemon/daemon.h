// Daemon: packstored from start-up to exit (DESIGN.md, "The daemon").
//
// Start-up: signals are handled from the first moment (on the io_context's
// thread); the socket path is locked (unless systemd passed the socket);
// the store is opened as its single writer (created first with --init;
// recovery runs inside the open); the service and the gRPC server (no
// listening port of its own) are built; the listener starts accepting;
// health turns SERVING; systemd hears READY=1; the maintenance scheduler
// counts the store in the background and runs its timers.
//
// SIGTERM/SIGINT: health NOT_SERVING, STOPPING=1, stop accepting, give
// calls in flight until --shutdown-timeout, drain the service, close the
// store, exit 0. A second signal exits at once. SIGHUP re-reads the config
// file and applies what can change live (log level, limits, access lists,
// the fast path switch, maintenance policy), with RELOADING=1 ... READY=1
// around it.
//
// Thread-safety: Run from one thread (main), once.
#ifndef PACKSTORE_SERVER_DAEMON_DAEMON_H_
#define PACKSTORE_SERVER_DAEMON_DAEMON_H_

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "asio/executor_work_guard.hpp"
#include "asio/io_context.hpp"
#include "asio/signal_set.hpp"
#include "server/daemon/fast_path_server.h"
#include "server/daemon/listener.h"
#include "server/daemon/maintenance_scheduler.h"
#include "server/daemon/notify.h"
#include "server/daemon/options.h"
#include "server/daemon/socket_lock.h"
#include "server/service/service.h"

namespace grpc {
class Server;
}  // namespace grpc

namespace packstore {
class Container;
}  // namespace packstore

namespace packstore::daemon {

class Daemon {
 public:
  // `args`: the command line without the program name, parsed again (with
  // the config file) on SIGHUP.
  Daemon(DaemonOptions options, std::vector<std::string> args);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Serves until SIGTERM or SIGINT. Returns the exit code: 0 after a
  // shutdown, 1 when start-up failed (the reason is logged).
  int Run();

 private:
  // Start-up up to READY=1; 0 or the exit code of a failed start.
  int Start();
  absl::Status OpenStore();
  absl::Status StartServer();
  // Tears down whatever start-up built, in order.
  void Shutdown(std::string_view reason);

  // On the io_context's thread.
  void WaitForSignal();
  void OnSignal(int signal);
  void Reload();

  void Notify(std::string_view state) const;
  std::string ServingStatus() const;

  DaemonOptions options_;  // as running; Reload updates what it applies
  const std::vector<std::string> args_;
  const SystemdNotifier notifier_;
  std::atomic<int64_t> shutdown_timeout_seconds_;

  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> io_work_;
  asio::signal_set signals_;
  std::thread io_thread_;
  absl::Notification stop_requested_;
  std::atomic<int> stop_signal_{0};
  // Set once start-up is complete: from then on SIGHUP may touch the parts.
  std::atomic<bool> serving_{false};
  absl::Time started_;

  std::optional<SocketLock> socket_lock_;
  std::optional<int> systemd_socket_;
  std::unique_ptr<Container> container_;
  service::PeerRegistry peers_;
  std::unique_ptr<service::ObjectStoreService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<FastPathServer> fast_path_;
  std::unique_ptr<Listener> listener_;
  std::unique_ptr<MaintenanceScheduler> scheduler_;
  std::unique_ptr<Watchdog> watchdog_;
};

}  // namespace packstore::daemon

#endif  // PACKSTORE_SERVER_DAEMON_DAEMON_H_
