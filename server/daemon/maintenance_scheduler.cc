#include "server/daemon/maintenance_scheduler.h"

#include <chrono>
#include <utility>

#include "asio/post.hpp"
#include "common/status_util.h"
#include "common/str_cat.h"
#include "server/daemon/logging.h"
#include "server/service/service.h"
#include "server/store/container.h"
#include "server/store/file_io.h"
#include "spdlog/spdlog.h"

namespace packstore::daemon {
namespace {

// How often auto-pack may update STATUS= while it runs.
constexpr absl::Duration kStatusEvery = absl::Seconds(1);

uint64_t SaturatingSub(uint64_t a, uint64_t b) { return a > b ? a - b : 0; }

std::string Took(absl::Time start) { return ShortDuration(absl::Now() - start); }

}  // namespace

MaintenanceScheduler::MaintenanceScheduler(asio::io_context& io, Container* container,
                                           service::ObjectStoreService* service,
                                           const SystemdNotifier* notifier,
                                           const MaintenancePolicy& policy, std::string status)
    : io_(io),
      container_(container),
      service_(service),
      notifier_(notifier),
      serving_status_(std::move(status)),
      policy_(policy),
      maintenance_work_(maintenance_io_.get_executor()) {
  auto add = [&](int64_t (*interval)(const MaintenancePolicy&),
                 std::function<void(const MaintenancePolicy&)> work) {
    tasks_.push_back(
        std::unique_ptr<Task>(new Task{asio::steady_timer(io_), interval, std::move(work)}));
  };
  add([](const MaintenancePolicy& p) { return p.maintenance_interval_seconds; },
      [this](const MaintenancePolicy& p) { AutoPack(p); });
  add([](const MaintenancePolicy& p) { return p.checkpoint_interval_seconds; },
      [this](const MaintenancePolicy&) { Checkpoint(); });
  add([](const MaintenancePolicy& p) { return p.unmap_idle_interval_seconds; },
      [this](const MaintenancePolicy&) { UnmapIdle(); });
}

MaintenanceScheduler::~MaintenanceScheduler() {
  if (maintenance_thread_.joinable()) {
    maintenance_work_.reset();
    maintenance_io_.stop();
    maintenance_thread_.join();
  }
}

void MaintenanceScheduler::Start() {
  maintenance_thread_ = std::thread([this] {
    maintenance_io_.run();
    maintenance_done_.Notify();
  });
  // First, so the first auto-pack check sees the backlog left from before.
  asio::post(maintenance_io_, [this] { CountStore(); });
  asio::post(io_, [this] {
    for (auto& task : tasks_) Arm(*task);
  });
}

void MaintenanceScheduler::Arm(Task& task) {
  if (stopped_ || task.running) return;
  task.armed_seconds = task.interval(policy_);
  // Whatever was armed before is void, even if its expiry is already
  // queued and so beyond cancel's reach.
  uint64_t generation = ++task.generation;
  if (task.armed_seconds <= 0) return;
  task.timer.expires_after(std::chrono::seconds(task.armed_seconds));
  task.timer.async_wait([this, &task, generation](const asio::error_code& error) {
    if (error || stopped_ || generation != task.generation) return;
    task.running = true;
    asio::post(maintenance_io_, [this, &task, policy = policy_] {
      task.work(policy);
      asio::post(io_, [this, &task] {
        task.running = false;
        Arm(task);
      });
    });
  });
}

void MaintenanceScheduler::SetPolicy(const MaintenancePolicy& policy) {
  asio::post(io_, [this, policy] {
    policy_ = policy;
    for (auto& task : tasks_) {
      if (task->running || task->interval(policy_) == task->armed_seconds) continue;
      task->timer.cancel();
      Arm(*task);
    }
  });
}

void MaintenanceScheduler::Stop() {
  absl::Notification timers_stopped;
  asio::post(io_, [this, &timers_stopped] {
    stopped_ = true;
    for (auto& task : tasks_) task->timer.cancel();
    timers_stopped.Notify();
  });
  timers_stopped.WaitForNotification();
  maintenance_work_.reset();
  maintenance_io_.stop();
}

bool MaintenanceScheduler::Join(absl::Time deadline) {
  if (!maintenance_thread_.joinable()) return true;
  if (!maintenance_done_.WaitForNotificationWithDeadline(deadline)) return false;
  maintenance_thread_.join();
  return true;
}

void MaintenanceScheduler::NotifyStatus(std::string_view status) const {
  absl::Status sent = notifier_->Notify(StrCat("STATUS=", status));
  if (!sent.ok()) spdlog::debug("{}", sent.ToString());
}

void MaintenanceScheduler::CountStore() {
  absl::Time start = absl::Now();
  service::LooseBacklog before = service_->loose_backlog();
  absl::StatusOr<StoreCounts> counts = container_->Counts();
  if (!counts.ok()) {
    spdlog::error("counting the store failed; auto-pack counts only new loose objects: {}",
                  counts.status().ToString());
    return;
  }
  // Loose writes since start-up were counted by the service as they
  // happened; some may be in the counts too, which only packs sooner.
  service::LooseBacklog now = service_->loose_backlog();
  service_->set_loose_backlog({counts->loose_objects + SaturatingSub(now.objects, before.objects),
                               counts->loose_bytes + SaturatingSub(now.bytes, before.bytes)});
  spdlog::info(
      "store: {} packed objects ({}) in {} packs ({}, {} in holes), {} loose objects ({}); "
      "counted in {}",
      counts->packed_objects, HumanSize(counts->packed_bytes), counts->pack_files,
      HumanSize(counts->pack_file_bytes), HumanSize(counts->hole_bytes), counts->loose_objects,
      HumanSize(counts->loose_bytes), Took(start));
}

void MaintenanceScheduler::AutoPack(const MaintenancePolicy& policy) {
  if (!policy.auto_pack) return;
  service::LooseBacklog before = service_->loose_backlog();
  if (before.objects < policy.pack_loose_objects && before.bytes < policy.pack_loose_bytes) {
    spdlog::debug("auto-pack: {} loose objects ({}) since the last pack, below the thresholds",
                  before.objects, HumanSize(before.bytes));
    return;
  }

  absl::Time start = absl::Now();
  absl::Time last_status = absl::InfinitePast();
  ProgressFn progress = [&](const Progress& step) {
    absl::Time now = absl::Now();
    if (now - last_status < kStatusEvery) return;
    last_status = now;
    NotifyStatus(step.total > 0
                     ? StrCat("auto-pack: ", step.phase, " ", step.done, " of ", step.total)
                     : StrCat("auto-pack: ", step.phase, " ", step.done));
  };
  NotifyStatus(StrCat("auto-pack: packing ", before.objects, " loose objects"));
  PackResult packed;
  CleanResult cleaned;
  absl::Status status = service_->RunMaintenance("auto-pack", [&]() -> absl::Status {
    PackOptions options;
    // With clean-after-pack off the loose copies stay, as after
    // disk-objectstore's pack_all_loose without clean_storage.
    options.delete_loose = policy.clean_after_pack;
    PACKSTORE_ASSIGN_OR_RETURN(packed, container_->PackAllLoose(options, progress));
    if (policy.clean_after_pack) {
      PACKSTORE_ASSIGN_OR_RETURN(cleaned, container_->Clean(CleanOptions{}, progress));
    }
    return absl::OkStatus();
  });
  NotifyStatus(serving_status_);
  if (absl::IsFailedPrecondition(status)) {
    spdlog::debug("auto-pack: skipped this round: {}", std::string(status.message()));
    return;
  }
  if (!status.ok()) {
    spdlog::error("auto-pack failed after {}: {}", Took(start), status.ToString());
    return;
  }
  // What was written while packing stays in the backlog, packed or not:
  // the next round finds out. Corrupt objects left loose drop out of it,
  // so they do not trigger a pack every round.
  service::LooseBacklog after = service_->loose_backlog();
  service_->set_loose_backlog(
      {SaturatingSub(after.objects, before.objects), SaturatingSub(after.bytes, before.bytes)});
  spdlog::info(
      "auto-pack: packed {} objects ({}; {} more already packed), deleted {} loose copies; "
      "clean: {} loose copies, {} sandbox files, {} duplicates removed; took {}",
      packed.packed, HumanSize(packed.bytes), packed.already_packed, packed.loose_deleted,
      cleaned.loose_deleted, cleaned.sandbox_deleted, cleaned.duplicates_resolved, Took(start));
  if (!packed.corrupt.empty()) {
    spdlog::warn(
        "auto-pack: {} loose objects do not match their key and were left loose (first: {})",
        packed.corrupt.size(), packed.corrupt.front());
  }
}

void MaintenanceScheduler::Checkpoint() {
  absl::Time start = absl::Now();
  absl::StatusOr<uint64_t> wal = PathSize(JoinPath(container_->dir(), "packs.idx-wal"));
  absl::Status status = container_->Checkpoint();
  if (!status.ok()) {
    spdlog::error("checkpoint failed after {}: {}", Took(start), status.ToString());
    return;
  }
  uint64_t wal_bytes = wal.ok() ? *wal : 0;
  spdlog::log(wal_bytes > 0 ? spdlog::level::info : spdlog::level::debug,
              "checkpoint: {} of WAL written into the index in {}", HumanSize(wal_bytes),
              Took(start));
}

void MaintenanceScheduler::UnmapIdle() {
  absl::Time start = absl::Now();
  uint64_t unmapped = container_->UnmapIdleWindows();
  spdlog::log(unmapped > 0 ? spdlog::level::info : spdlog::level::debug,
              "unmap idle: {} pack windows nobody read lately unmapped in {}", unmapped,
              Took(start));
}

}  // namespace packstore::daemon
