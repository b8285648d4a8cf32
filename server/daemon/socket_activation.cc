#include "server/daemon/socket_activation.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <charconv>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "common/str_cat.h"

namespace packstore::daemon {
namespace {

constexpr int kFirstPassedFd = 3;  // SD_LISTEN_FDS_START

std::optional<long> EnvNumber(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr) return std::nullopt;
  std::string_view text = value;
  long number = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), number);
  if (error != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return number;
}

std::vector<std::string> EnvNames(const char* name) {
  std::vector<std::string> names;
  const char* value = std::getenv(name);
  if (value == nullptr) return names;
  std::string_view text = value;
  while (true) {
    size_t colon = text.find(':');
    names.emplace_back(text.substr(0, colon));
    if (colon == std::string_view::npos) break;
    text.remove_prefix(colon + 1);
  }
  return names;
}

int SocketOption(int fd, int option) {
  int value = -1;
  socklen_t length = sizeof(value);
  if (::getsockopt(fd, SOL_SOCKET, option, &value, &length) != 0) return -1;
  return value;
}

}  // namespace

absl::StatusOr<std::optional<int>> TakeSystemdSocket(std::string_view name) {
  std::optional<long> pid = EnvNumber("LISTEN_PID");
  std::optional<long> count = EnvNumber("LISTEN_FDS");
  std::vector<std::string> names = EnvNames("LISTEN_FDNAMES");
  // Inherited by nothing we start, and not taken twice.
  ::unsetenv("LISTEN_PID");
  ::unsetenv("LISTEN_FDS");
  ::unsetenv("LISTEN_FDNAMES");
  if (!pid || !count || *pid != ::getpid() || *count <= 0) return std::nullopt;

  int chosen = -1;
  for (int i = 0; i < *count; ++i) {
    int fd = kFirstPassedFd + i;
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    if (static_cast<size_t>(i) < names.size() && names[i] == name) chosen = fd;
  }
  if (chosen < 0 && *count == 1) chosen = kFirstPassedFd;
  if (chosen < 0) {
    return absl::InvalidArgumentError(StrCat("systemd passed ", *count,
                                             " sockets and none is named '", name,
                                             "' (FileDescriptorName= in the socket unit)"));
  }
  if (SocketOption(chosen, SO_DOMAIN) != AF_UNIX || SocketOption(chosen, SO_TYPE) != SOCK_STREAM ||
      SocketOption(chosen, SO_ACCEPTCONN) != 1) {
    return absl::InvalidArgumentError(
        StrCat("the socket systemd passed (fd ", chosen,
               ") is not a listening Unix stream socket (ListenStream= with a path)"));
  }
  return std::optional<int>(chosen);
}

std::string BoundPath(int fd) {
  sockaddr_un address{};
  socklen_t length = sizeof(address);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) return "";
  if (length <= offsetof(sockaddr_un, sun_path) || address.sun_path[0] == '\0') return "";
  return std::string(address.sun_path,
                     strnlen(address.sun_path, length - offsetof(sockaddr_un, sun_path)));
}

}  // namespace packstore::daemon
