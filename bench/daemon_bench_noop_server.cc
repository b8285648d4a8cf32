#include "bench/daemon_bench_noop_server.h"

#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>

#include "bench/daemon_bench_noop.grpc.pb.h"
#include "common/hasher.h"

namespace packstore::bench {
namespace {

// Sends `total` bytes in messages of `chunk` bytes, each copied out of a
// buffer as the daemon copies out of its cache, one write in flight at a
// time.
class Sender : public grpc::ServerWriteReactor<Chunk> {
 public:
  Sender(const std::string& source, uint64_t total, uint64_t chunk)
      : source_(source), total_(total), chunk_(chunk) {
    if (chunk_ == 0 || chunk_ > source_.size()) {
      Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "chunk must be 1 byte to 4 MiB"));
      return;
    }
    Next();
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "write failed"));
      return;
    }
    Next();
  }

  void OnDone() override { delete this; }

 private:
  void Next() {
    if (sent_ == total_) {
      Finish(grpc::Status::OK);
      return;
    }
    uint64_t n = std::min(chunk_, total_ - sent_);
    message_.set_data(source_.data(), n);
    sent_ += n;
    StartWrite(&message_);
  }

  const std::string& source_;
  const uint64_t total_;
  const uint64_t chunk_;
  uint64_t sent_ = 0;
  Chunk message_;
};

// Hashes every byte it receives (SHA-256, OpenSSL EVP) on the thread that
// receives it, and answers the digest.
class HashingReceiver : public grpc::ServerReadReactor<Chunk> {
 public:
  explicit HashingReceiver(Digest* digest) : digest_(digest), hasher_(HashType::kSha256) {
    StartRead(&message_);
  }

  void OnReadDone(bool ok) override {
    if (ok) {
      hasher_.Update(message_.data());
      bytes_ += message_.data().size();
      StartRead(&message_);
      return;
    }
    digest_->set_sha256(hasher_.HexDigest());
    digest_->set_bytes(bytes_);
    Finish(grpc::Status::OK);
  }

  void OnDone() override { delete this; }

 private:
  Digest* const digest_;
  Hasher hasher_;
  uint64_t bytes_ = 0;
  Chunk message_;
};

class NoopService final : public Noop::CallbackService {
 public:
  NoopService() : source_(kNoopMaxChunk, '\0') {
    std::mt19937_64 rng(7);
    for (size_t i = 0; i + 8 <= source_.size(); i += 8) {
      uint64_t v = rng();
      std::memcpy(source_.data() + i, &v, 8);
    }
  }

  grpc::ServerUnaryReactor* Echo(grpc::CallbackServerContext* context, const EchoRequest*,
                                 EchoResponse*) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerWriteReactor<Chunk>* ServerStream(grpc::CallbackServerContext*,
                                                const ServerStreamRequest* request) override {
    return new Sender(source_, request->bytes(), request->chunk());
  }

  grpc::ServerReadReactor<Chunk>* ClientStream(grpc::CallbackServerContext*,
                                               Digest* digest) override {
    return new HashingReceiver(digest);
  }

 private:
  std::string source_;
};

}  // namespace

int RunNoopServer(const std::string& socket_path, uint64_t max_message_size) {
  // Blocked before gRPC starts its threads, so that only sigwait sees them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  NoopService service;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("unix:" + socket_path, grpc::InsecureServerCredentials());
  builder.SetMaxReceiveMessageSize(static_cast<int>(max_message_size));
  builder.SetMaxSendMessageSize(static_cast<int>(max_message_size));
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr) {
    std::fprintf(stderr, "daemon_bench noop server: cannot listen on unix:%s\n",
                 socket_path.c_str());
    return 1;
  }
  std::printf("ready\n");
  std::fflush(stdout);

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  server->Wait();
  return 0;
}

}  // namespace packstore::bench
