// FuzzStore: a service over a container in a temporary folder.
#include "fuzz/fuzz_support.h"

#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <system_error>

#include "absl/time/clock.h"
#include "common/str_cat.h"
#include "fuzz/fuzz_check.h"

namespace packstore::fuzz {

FuzzStore& FuzzStore::Get() {
  // Never destroyed: the service's threads may outlive static destruction.
  static FuzzStore* const store = new FuzzStore();
  return *store;
}

FuzzStore::FuzzStore() : self_{getuid(), getgid(), getpid()} {
  std::string pattern = std::filesystem::temp_directory_path().string() + "/packstore-fuzz-XXXXXX";
  FUZZ_CHECK(::mkdtemp(pattern.data()) != nullptr, "mkdtemp " + pattern);
  folder_ = pattern;
  // Left behind when the process ends (a crash must keep the store that
  // shows it); scripts/fuzz points TMPDIR into the run's own folder.
  Open();
}

void FuzzStore::Open() {
  const std::string dir = folder_ + "/store";
  InitOptions init;
  init.pack_size_target = kPackSizeTarget;
  absl::Status made = Container::Init(dir, init);
  FUZZ_CHECK(made.ok(), made.ToString());
  absl::StatusOr<std::unique_ptr<Container>> opened = Container::Open(dir);
  FUZZ_CHECK(opened.ok(), opened.status().ToString());
  container_ = std::move(*opened);
  service::ServiceOptions options;
  options.auto_packed_max_size = kAutoPackedMaxSize;
  options.worker_threads = 2;
  options.limits.max_object_size = kMaxObjectSize;
  options.limits.max_concurrent_streams = 8;
  options.limits.free_disk_reserve = 0;
  options.access.admin_uids = {self_.uid};
  options.version = "packstore fuzz";
  service_ = service::ObjectStoreService::Create(container_.get(), &peers_, options);
}

void FuzzStore::Close() {
  FUZZ_CHECK(service_->Shutdown(absl::Now() + absl::Seconds(10)),
             "the service did not shut down within 10 s");
  service_.reset();
  container_.reset();
  std::error_code error;
  std::filesystem::remove_all(folder_ + "/store", error);
  FUZZ_CHECK(!error, "removing the store: " + error.message());
}

void FuzzStore::StartInput() {
  if (++inputs_ % kInputsPerStore != 0) return;
  if (on_replace_) on_replace_(nullptr);
  Close();
  Open();
  if (on_replace_) on_replace_(service_.get());
}

}  // namespace packstore::fuzz
