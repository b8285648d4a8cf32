// DaemonStore: the Store interface over packstored, through the client
// library (client/include/packstore/client.h). The tool's mode when no
// store folder is named.
//
// Errors are the daemon's, with advice where a person needs some:
// UNAVAILABLE says whether a socket exists and answers, and how to name
// another one (--socket, PACKSTORE_SOCKET) or work without the daemon
// (--store); PERMISSION_DENIED on maintenance says admin rights are needed.
// Writes to a folder-only option (pack --keep-loose) are INVALID_ARGUMENT.
//
// Thread-safety: one thread at a time, like every Store.
#ifndef PACKSTORE_CLIENT_CLI_DAEMON_STORE_H_
#define PACKSTORE_CLIENT_CLI_DAEMON_STORE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "client/cli/store.h"

namespace packstore::cli {

// The socket used when none is given: $PACKSTORE_SOCKET, else
// /run/packstore/packstore.sock.
std::string DefaultDaemonSocket();

// Connects (lazily) to packstored on `socket` ("" for the default).
// UNAVAILABLE when no socket file is there.
absl::StatusOr<std::unique_ptr<Store>> OpenDaemonStore(const std::string& socket);

}  // namespace packstore::cli

#endif  // PACKSTORE_CLIENT_CLI_DAEMON_STORE_H_
