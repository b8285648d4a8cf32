// The client side of the local fast path (PSFD1, docs/protocol.md): asks
// packstored where objects are and gets read-only file descriptors back
// (SCM_RIGHTS), or hands it the descriptor of a file to store. Reads then
// go straight to the page cache with pread instead of through gRPC.
//
// The fast path is optional: when the daemon does not speak it (turned off,
// an older daemon, a socket that is not a local one, the daemon at its limit
// of fast-path connections), every call returns UNAVAILABLE and the
// FastPath remembers it for 30 s, so the caller falls back to gRPC at the
// cost of one attempt per client and half minute.
//
// Thread-safety: safe from any thread. LOCATE requests share one
// connection, one at a time; each PutFile has a connection of its own. A
// LocatedObject's descriptor may be read from any thread.
#ifndef PACKSTORE_CLIENT_LIB_FAST_PATH_H_
#define PACKSTORE_CLIENT_LIB_FAST_PATH_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "packstore/client.h"

namespace packstore::client::internal {

// Keys per LOCATE request: the protocol's limit (docs/protocol.md). Locate
// takes more, in several requests.
inline constexpr size_t kMaxLocateKeys = 10000;

// A descriptor the daemon passed, closed when the last object using it is
// dropped.
class PassedFile {
 public:
  explicit PassedFile(int fd) : fd_(fd) {}
  ~PassedFile();
  PassedFile(const PassedFile&) = delete;
  PassedFile& operator=(const PassedFile&) = delete;
  int fd() const { return fd_; }

 private:
  const int fd_;
};

enum class Codec { kNone, kZlib, kZstd };

struct LocatedObject {
  std::string key;
  std::shared_ptr<const PassedFile> file;
  uint64_t offset = 0;  // of the stored bytes in the file
  uint64_t length = 0;  // stored bytes
  uint64_t size = 0;    // uncompressed
  Codec codec = Codec::kNone;
};

class FastPath {
 public:
  explicit FastPath(std::string socket) : socket_(std::move(socket)) {}
  FastPath(const FastPath&) = delete;
  FastPath& operator=(const FastPath&) = delete;

  // False for 30 s after the daemon turned out not to offer the fast path.
  bool available() const;

  // One entry per key, in order; nullopt for a key the store does not have.
  // UNAVAILABLE: use gRPC instead. Otherwise the daemon's error
  // (INVALID_ARGUMENT for a malformed key, PERMISSION_DENIED, ...).
  absl::StatusOr<std::vector<std::optional<LocatedObject>>> Locate(
      std::span<const std::string> keys);

  // Stores the regular file open on `fd` (the daemon reads it from offset
  // 0 to its end). UNAVAILABLE: use gRPC instead.
  absl::StatusOr<ObjectRef> PutFile(int fd, const PutOptions& options);

 private:
  // One connection to the daemon and what was received on it.
  struct Connection {
    int sock = -1;
    std::string pending;   // bytes received past the last response
    std::string response;  // the last response's lines
    ~Connection();
    void Close();
  };

  // Connects `connection` if it is not. UNAVAILABLE when nobody listens.
  absl::Status Connect(Connection& connection) const;
  // One request line (with `fd` attached when >= 0); the response's first
  // line and, after an OK, `lines_after_ok` more, and the descriptors that
  // came with them. The lines point into c.response, valid until the next
  // exchange. ABORTED when the connection broke; the daemon's ERR as its
  // code and message.
  absl::Status Exchange(Connection& c, const std::string& request, int fd, size_t lines_after_ok,
                        std::vector<std::string_view>* lines, std::vector<int>* fds);
  // Marks the fast path unavailable for this client for a while.
  // REQUIRES: mu_ held.
  absl::Status Unavailable(const std::string& why);
  bool AvailableLocked() const;

  const std::string socket_;
  mutable std::mutex mu_;
  Connection reads_;  // LOCATE requests, one at a time (mu_)
  std::chrono::steady_clock::time_point unavailable_until_;  // (mu_)
};

// Reads [offset, offset + n) of `object`'s uncompressed content into
// `out`: pread for uncompressed objects, inflate for zlib ones (from the
// start of the object up to the range). UNIMPLEMENTED for zstd.
absl::Status ReadLocated(const LocatedObject& object, uint64_t offset, size_t n, char* out);

// The whole object to `sink` in chunks of at most `chunk` bytes.
absl::Status StreamLocated(const LocatedObject& object, size_t chunk,
                           const std::function<absl::Status(std::string_view)>& sink);

}  // namespace packstore::client::internal

#endif  // PACKSTORE_CLIENT_LIB_FAST_PATH_H_
