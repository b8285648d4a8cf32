// Socket activation (sd_listen_fds(3)) without libsystemd: the listening
// socket systemd (or systemd-socket-activate) opened for the daemon.
// LISTEN_PID must name this process, LISTEN_FDS counts the descriptors
// passed from 3 on, and LISTEN_FDNAMES names them (FileDescriptorName= in
// the socket unit).
//
// Thread-safety: call once at start-up, before other threads read the
// environment.
#ifndef PACKSTORE_SERVER_DAEMON_SOCKET_ACTIVATION_H_
#define PACKSTORE_SERVER_DAEMON_SOCKET_ACTIVATION_H_

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace packstore::daemon {

// The passed descriptor named `name` (the caller owns it), or the only one
// passed when none has that name; nullopt when nothing was passed to this
// process. Unsets the
// LISTEN_* variables either way. INVALID_ARGUMENT when several descriptors
// were passed and none is named `name`, or the chosen one is not a
// listening Unix stream socket.
absl::StatusOr<std::optional<int>> TakeSystemdSocket(std::string_view name);

// The path a Unix socket is bound to ("" when unnamed or abstract).
std::string BoundPath(int fd);

}  // namespace packstore::daemon

#endif  // PACKSTORE_SERVER_DAEMON_SOCKET_ACTIVATION_H_
