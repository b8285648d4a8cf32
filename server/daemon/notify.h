// The systemd notification protocol (sd_notify(3)), without libsystemd:
// one datagram per message to the AF_UNIX socket $NOTIFY_SOCKET names (a
// path, or an abstract name written with a leading '@'). Without
// NOTIFY_SOCKET every call does nothing, so the daemon runs the same with
// or without systemd.
//
//   SystemdNotifier notifier = SystemdNotifier::FromEnvironment();
//   notifier.Notify("READY=1\nSTATUS=serving");
//
//   Watchdog watchdog(notifier, *WatchdogTimeout(), [&] { return service->CheckLiveness(t); });
//
// Thread-safety: Notify may be called from any thread (one sendto each).
#ifndef PACKSTORE_SERVER_DAEMON_NOTIFY_H_
#define PACKSTORE_SERVER_DAEMON_NOTIFY_H_

#include <sys/socket.h>
#include <sys/un.h>

#include <functional>
#include <optional>
#include <string_view>
#include <thread>

#include "absl/status/status.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "server/store/file_io.h"

namespace packstore::daemon {

class SystemdNotifier {
 public:
  // Reads NOTIFY_SOCKET. An unusable value (too long, not absolute or '@')
  // gives a disabled notifier and a warning in the log.
  static SystemdNotifier FromEnvironment();

  SystemdNotifier(SystemdNotifier&&) = default;
  SystemdNotifier& operator=(SystemdNotifier&&) = default;

  bool enabled() const { return socket_.valid(); }

  // Sends `state`: newline-separated assignments such as "READY=1" or
  // "STATUS=packing 12 of 40". The errno of a failed send as a Status (the
  // caller logs it; the daemon goes on either way).
  absl::Status Notify(std::string_view state) const;

 private:
  SystemdNotifier() = default;

  UniqueFd socket_;
  sockaddr_un address_{};
  socklen_t address_length_ = 0;
};

// How often systemd expects WATCHDOG=1: WATCHDOG_USEC, when set and
// WATCHDOG_PID is unset or names this process; nullopt otherwise.
std::optional<absl::Duration> WatchdogTimeout();

// Sends WATCHDOG=1 every timeout / 2 from a thread of its own, each time
// `check` (a real liveness probe) succeeds; a failed probe is logged and
// not pinged, so systemd restarts a daemon that stopped answering.
class Watchdog {
 public:
  Watchdog(const SystemdNotifier* notifier, absl::Duration timeout,
           std::function<absl::Status()> check);
  // Stops and joins the thread.
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

 private:
  void Run();

  const SystemdNotifier* const notifier_;
  const absl::Duration interval_;
  const std::function<absl::Status()> check_;
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace packstore::daemon

#endif  // PACKSTORE_SERVER_DAEMON_NOTIFY_H_
