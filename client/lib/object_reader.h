// Reads of one object through Get: whole or ranged reads to a sink, and the
// seekable ObjectReader of client.h.
//
// Thread-safety: StreamGet is safe from any thread; a reader from one
// thread at a time.
#ifndef PACKSTORE_CLIENT_LIB_OBJECT_READER_H_
#define PACKSTORE_CLIENT_LIB_OBJECT_READER_H_

#include <memory>
#include <optional>
#include <string_view>

#include "absl/status/statusor.h"
#include "client/lib/fast_path.h"
#include "client/lib/rpc_util.h"
#include "packstore/client.h"

namespace packstore::client::internal {

// Sends bytes [offset, offset + length) of `key` (no length: to the end) to
// `sink` and returns the object's metadata. Retried on UNAVAILABLE as long
// as nothing was given to the sink yet. A sink error cancels the call.
absl::StatusOr<ObjectInfo> StreamGet(const Rpc& rpc, std::string_view key, uint64_t offset,
                                     std::optional<uint64_t> length, bool verify,
                                     const Client::Sink& sink);

// A reader of the object `info` describes, through gRPC.
std::unique_ptr<ObjectReader> NewObjectReader(std::shared_ptr<const Rpc> rpc, ObjectInfo info);

// A reader of an uncompressed object through the descriptor the fast path
// passed: pread, no round trips.
std::unique_ptr<ObjectReader> NewLocatedReader(ObjectInfo info, LocatedObject located);

}  // namespace packstore::client::internal

#endif  // PACKSTORE_CLIENT_LIB_OBJECT_READER_H_
