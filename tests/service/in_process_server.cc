#include "tests/service/in_process_server.h"

#include <sys/socket.h>

#include <grpcpp/create_channel_posix.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>
#include <grpcpp/server_posix.h>
#include <grpcpp/support/channel_arguments.h>

#include <chrono>

namespace packstore::testing {

InProcessServer::InProcessServer(service::ObjectStoreService* service,
                                 service::PeerRegistry* peers, int max_message_size)
    : peers_(peers), max_message_size_(max_message_size) {
  grpc::ServerBuilder builder;
  builder.RegisterService(service->grpc_service());
  if (max_message_size_ > 0) builder.SetMaxReceiveMessageSize(max_message_size_);
  server_ = builder.BuildAndStart();
}

std::shared_ptr<grpc::Channel> InProcessServer::Connect(const service::PeerCredentials& peer) {
  // gRPC needs non-blocking descriptors, as the listener's are.
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) != 0) {
    return nullptr;
  }
  peers_->Register(fds[0], peer);
  grpc::AddInsecureChannelFromFd(server_.get(), fds[0]);
  grpc::ChannelArguments args;
  if (max_message_size_ > 0) args.SetMaxReceiveMessageSize(max_message_size_);
  return grpc::CreateCustomInsecureChannelFromFd("packstore", fds[1], args);
}

void InProcessServer::Shutdown() {
  if (server_ == nullptr) return;
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  server_.reset();
}

}  // namespace packstore::testing
