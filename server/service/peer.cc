#include <algorithm>
#include <charconv>

#include "common/str_cat.h"
#include "server/service/service.h"

namespace packstore::service {

absl::Status NotAllowedError(const PeerCredentials& peer) {
  return absl::PermissionDeniedError(
      StrCat("uid ", peer.uid, " gid ", peer.gid, " is not allowed to use this store"));
}

void PeerRegistry::Register(int fd, const PeerCredentials& credentials) {
  if (fd < 0) return;
  absl::MutexLock lock(&mu_);
  if (static_cast<size_t>(fd) >= by_fd_.size()) by_fd_.resize(fd + 1);
  by_fd_[fd] = credentials;
}

std::optional<PeerCredentials> PeerRegistry::Find(std::string_view grpc_peer) const {
  constexpr std::string_view kPrefix = "fd:";
  if (!grpc_peer.starts_with(kPrefix)) return std::nullopt;
  std::string_view digits = grpc_peer.substr(kPrefix.size());
  int fd = -1;
  auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), fd);
  if (error != std::errc() || end != digits.data() + digits.size() || fd < 0) return std::nullopt;
  absl::MutexLock lock(&mu_);
  if (static_cast<size_t>(fd) >= by_fd_.size()) return std::nullopt;
  return by_fd_[fd];
}

namespace {
template <typename T>
bool Contains(const std::vector<T>& list, T value) {
  return std::find(list.begin(), list.end(), value) != list.end();
}
}  // namespace

bool AccessPolicy::IsAdmin(const PeerCredentials& peer) const {
  return Contains(admin_uids, peer.uid) || Contains(admin_gids, peer.gid);
}

bool AccessPolicy::IsAllowed(const PeerCredentials& peer) const {
  if (allow_uids.empty() && allow_gids.empty()) return true;
  return Contains(allow_uids, peer.uid) || Contains(allow_gids, peer.gid) || IsAdmin(peer);
}

}  // namespace packstore::service
