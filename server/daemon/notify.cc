#include "server/daemon/notify.h"

#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>

#include "common/status_util.h"
#include "spdlog/spdlog.h"

namespace packstore::daemon {

SystemdNotifier SystemdNotifier::FromEnvironment() {
  SystemdNotifier notifier;
  const char* value = std::getenv("NOTIFY_SOCKET");
  if (value == nullptr || value[0] == '\0') return notifier;
  std::string_view path = value;
  if (path[0] != '/' && path[0] != '@') {
    spdlog::warn("NOTIFY_SOCKET={} is neither a path nor an abstract name; not notifying", path);
    return notifier;
  }
  if (path.size() >= sizeof(notifier.address_.sun_path)) {
    spdlog::warn("NOTIFY_SOCKET={} is too long; not notifying", path);
    return notifier;
  }
  notifier.address_.sun_family = AF_UNIX;
  std::memcpy(notifier.address_.sun_path, path.data(), path.size());
  // An abstract name starts with a NUL byte and is exactly as long as
  // given (no terminator counted).
  if (path[0] == '@') notifier.address_.sun_path[0] = '\0';
  notifier.address_length_ =
      static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + (path[0] == '/'));
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    spdlog::warn("cannot create a socket for NOTIFY_SOCKET: {}", std::strerror(errno));
    return notifier;
  }
  notifier.socket_ = UniqueFd(fd);
  return notifier;
}

absl::Status SystemdNotifier::Notify(std::string_view state) const {
  if (!enabled()) return absl::OkStatus();
  ssize_t sent;
  do {
    sent = ::sendto(socket_.get(), state.data(), state.size(), MSG_NOSIGNAL,
                    reinterpret_cast<const sockaddr*>(&address_), address_length_);
  } while (sent < 0 && errno == EINTR);
  if (sent < 0) return ErrnoStatus(errno, "notify systemd");
  return absl::OkStatus();
}

std::optional<absl::Duration> WatchdogTimeout() {
  const char* usec = std::getenv("WATCHDOG_USEC");
  if (usec == nullptr) return std::nullopt;
  const char* pid = std::getenv("WATCHDOG_PID");
  if (pid != nullptr) {
    long watched = 0;
    std::string_view text = pid;
    auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), watched);
    // The watchdog is meant for another process of the unit (a parent that
    // forked us): leave it to that one.
    if (error != std::errc() || watched != ::getpid()) return std::nullopt;
  }
  uint64_t micros = 0;
  std::string_view text = usec;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), micros);
  if (error != std::errc() || end != text.data() + text.size() || micros == 0) return std::nullopt;
  return absl::Microseconds(micros);
}

Watchdog::Watchdog(const SystemdNotifier* notifier, absl::Duration timeout,
                   std::function<absl::Status()> check)
    : notifier_(notifier), interval_(timeout / 2), check_(std::move(check)) {
  thread_ = std::thread([this] { Run(); });
}

Watchdog::~Watchdog() {
  stop_.Notify();
  thread_.join();
}

void Watchdog::Run() {
  do {
    absl::Status alive = check_();
    if (!alive.ok()) {
      spdlog::error("liveness check failed, not pinging the watchdog: {}", alive.ToString());
      continue;
    }
    absl::Status sent = notifier_->Notify("WATCHDOG=1");
    if (!sent.ok()) spdlog::warn("{}", sent.ToString());
  } while (!stop_.WaitForNotificationWithTimeout(interval_));
}

}  // namespace packstore::daemon
