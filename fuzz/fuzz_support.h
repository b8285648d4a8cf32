// FuzzStore: the service the fuzz targets drive, over a container in a
// temporary folder of its own. The store is made on first use and
// replaced by a fresh one every kInputsPerStore inputs, so that what the
// inputs write stays small (objects are also capped by the service's
// own --max-object-size, kMaxObjectSize here) and Status, List and
// Validate stay fast.
//
// Thread-safety: one fuzzing thread calls it; the service inside is
// thread-safe.
//
//   FuzzStore& store = FuzzStore::Get();
//   store.StartInput();            // may replace the store
//   store.service()->Locate(...);
#ifndef PACKSTORE_FUZZ_FUZZ_SUPPORT_H_
#define PACKSTORE_FUZZ_FUZZ_SUPPORT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "server/service/service.h"
#include "server/store/container.h"

namespace packstore::fuzz {

class FuzzStore {
 public:
  static constexpr uint64_t kInputsPerStore = 1000;
  static constexpr uint64_t kMaxObjectSize = uint64_t{256} << 10;
  // Small, so that short inputs reach the loose write path and several packs.
  static constexpr uint64_t kAutoPackedMaxSize = uint64_t{4} << 10;
  static constexpr int64_t kPackSizeTarget = int64_t{64} << 10;

  // The process's one store (made by the first call).
  static FuzzStore& Get();

  // Called at the start of every input: replaces the store when it is due.
  // `on_replace` runs before the old service goes away and after the new
  // one exists (with nullptr and the new service), for a target that wraps
  // the service in a server.
  void StartInput();
  void set_on_replace(std::function<void(service::ObjectStoreService*)> on_replace) {
    on_replace_ = std::move(on_replace);
  }

  service::ObjectStoreService* service() { return service_.get(); }
  service::PeerRegistry* peers() { return &peers_; }
  // This process, as the peer of every call: allowed and an admin.
  const service::PeerCredentials& self() const { return self_; }
  const std::string& folder() const { return folder_; }

 private:
  FuzzStore();
  void Open();
  void Close();

  std::string folder_;  // holds the container ("store") and scratch files
  service::PeerCredentials self_;
  service::PeerRegistry peers_;
  std::unique_ptr<Container> container_;
  std::unique_ptr<service::ObjectStoreService> service_;
  std::function<void(service::ObjectStoreService*)> on_replace_;
  uint64_t inputs_ = 0;
};

}  // namespace packstore::fuzz

#endif  // PACKSTORE_FUZZ_FUZZ_SUPPORT_H_
