// The no-op gRPC server daemon_bench measures its baselines against
// (packstore.bench.Noop, bench/daemon_bench_noop.proto), run as a child
// process of its own so that its calls cross a process boundary as the
// daemon's do.
#ifndef PACKSTORE_BENCH_DAEMON_BENCH_NOOP_SERVER_H_
#define PACKSTORE_BENCH_DAEMON_BENCH_NOOP_SERVER_H_

#include <cstdint>
#include <string>

namespace packstore::bench {

// Largest chunk ServerStream sends (larger requests: INVALID_ARGUMENT).
inline constexpr uint64_t kNoopMaxChunk = uint64_t{4} << 20;

// Serves Noop with the callback API on unix:`socket_path` until SIGTERM or
// SIGINT, with `max_message_size` as its send and receive limits. Writes
// "ready" and a newline to stdout once it listens. Returns the exit code.
int RunNoopServer(const std::string& socket_path, uint64_t max_message_size);

}  // namespace packstore::bench

#endif  // PACKSTORE_BENCH_DAEMON_BENCH_NOOP_SERVER_H_
