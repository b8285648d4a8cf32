// InProcessServer: a real grpc::Server for an ObjectStoreService, reached
// through socketpairs handed to it the way packstored's listener hands it
// accepted connections (grpc::AddInsecureChannelFromFd), so that a call's
// peer is "fd:N" and the service finds the credentials registered for it.
// Used by the service tests and the service fuzz target.
//
// Thread-safety: Connect may be called from any thread while the server
// runs; Shutdown (and destruction) by its owner once no Connect is under
// way. Failures are reported, not thrown: started() is false when gRPC
// could not build the server, Connect returns nullptr when no socketpair
// could be made (errno says why).
//
//   InProcessServer server(service.get(), &peers);
//   auto stub = pb::ObjectStore::NewStub(server.Connect({getuid(), getgid(), getpid()}));
#ifndef PACKSTORE_TESTS_SERVICE_IN_PROCESS_SERVER_H_
#define PACKSTORE_TESTS_SERVICE_IN_PROCESS_SERVER_H_

#include <grpcpp/channel.h>
#include <grpcpp/server.h>

#include <memory>

#include "server/service/service.h"

namespace packstore::testing {

class InProcessServer {
 public:
  // `service` and `peers` must outlive the server. A message size of 0
  // keeps gRPC's default limits (on both ends).
  InProcessServer(service::ObjectStoreService* service, service::PeerRegistry* peers,
                  int max_message_size = 0);
  ~InProcessServer() { Shutdown(); }
  InProcessServer(const InProcessServer&) = delete;
  InProcessServer& operator=(const InProcessServer&) = delete;

  // False if gRPC did not start the server.
  bool started() const { return server_ != nullptr; }
  // A channel over a new connection whose peer is `peer`; nullptr if no
  // socketpair could be made. REQUIRES: started().
  std::shared_ptr<grpc::Channel> Connect(const service::PeerCredentials& peer);
  // Ends the calls in flight within 5 s and stops the server (idempotent).
  void Shutdown();

 private:
  service::PeerRegistry* const peers_;
  const int max_message_size_;
  std::unique_ptr<grpc::Server> server_;
};

}  // namespace packstore::testing

#endif  // PACKSTORE_TESTS_SERVICE_IN_PROCESS_SERVER_H_
