// MaintenanceScheduler: the maintenance the daemon does by itself, on Asio
// steady_timers, with the blocking work on one maintenance thread of its
// own (never on the io_context's thread, which accepts connections and
// handles signals).
//
// Steps (MaintenancePolicy; intervals measured from the end of the step's
// previous run, so a slow step never queues up behind itself):
//   auto-pack   every maintenance-interval: when the service's loose
//               backlog reaches pack-loose-objects or pack-loose-bytes,
//               packs all loose objects (and cleans, if clean-after-pack)
//               as the service's maintenance operation "auto-pack"; skipped
//               for the round while a maintenance call runs.
//   checkpoint  every checkpoint-interval: checkpoints the index's WAL.
//   unmap idle  every unmap-idle-interval: unmaps pack windows nobody read
//               since the previous time.
// Start first counts the store in the background to seed the loose
// backlog (counting scans the loose folder, which must not delay serving).
// Each step logs one line (info when it did something, debug otherwise)
// and auto-pack reports its progress in systemd's STATUS=.
//
// Thread-safety: Start, Stop and Join from the thread that owns the
// io_context (not its runner), while it runs; SetPolicy from any thread.
// The container, service and notifier must outlive the scheduler.
#ifndef PACKSTORE_SERVER_DAEMON_MAINTENANCE_SCHEDULER_H_
#define PACKSTORE_SERVER_DAEMON_MAINTENANCE_SCHEDULER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "asio/executor_work_guard.hpp"
#include "asio/io_context.hpp"
#include "asio/steady_timer.hpp"
#include "server/daemon/notify.h"
#include "server/daemon/options.h"

namespace packstore {
class Container;
namespace service {
class ObjectStoreService;
}  // namespace service
}  // namespace packstore

namespace packstore::daemon {

class MaintenanceScheduler {
 public:
  // `io` runs the timers; its thread is not the maintenance thread.
  // `status` is the STATUS= line to return to after a step reported
  // progress.
  MaintenanceScheduler(asio::io_context& io, Container* container,
                       service::ObjectStoreService* service, const SystemdNotifier* notifier,
                       const MaintenancePolicy& policy, std::string status);
  // Joins the maintenance thread, waiting for the running step if Join did
  // not return true.
  ~MaintenanceScheduler();
  MaintenanceScheduler(const MaintenanceScheduler&) = delete;
  MaintenanceScheduler& operator=(const MaintenanceScheduler&) = delete;

  // Starts the maintenance thread (counting the store first) and the timers.
  void Start();

  // A new policy (SIGHUP): changed intervals restart their timers; a step
  // running now finishes under the policy it started with.
  void SetPolicy(const MaintenancePolicy& policy);

  // Stops the timers and drops the steps not yet started; the running one
  // goes on. Call from outside the io_context's thread while it runs.
  void Stop();
  // After Stop: waits until `deadline` for the running step. True when the
  // maintenance thread has finished; false when a step still runs (the
  // caller should then exit without destroying what the step uses: the
  // engine recovers at the next start).
  bool Join(absl::Time deadline);

 private:
  // One scheduled step.
  struct Task {
    asio::steady_timer timer;
    // Seconds between runs under `policy` (0: off).
    int64_t (*interval)(const MaintenancePolicy& policy);
    // The blocking work, run on the maintenance thread with the policy of
    // the moment it was posted.
    std::function<void(const MaintenancePolicy&)> work;
    int64_t armed_seconds = 0;
    // Bumped by every Arm; a timer expiry from an older one is ignored.
    uint64_t generation = 0;
    bool running = false;
  };

  void Arm(Task& task);
  void CountStore();
  void AutoPack(const MaintenancePolicy& policy);
  void Checkpoint();
  void UnmapIdle();
  void NotifyStatus(std::string_view status) const;

  asio::io_context& io_;
  Container* const container_;
  service::ObjectStoreService* const service_;
  const SystemdNotifier* const notifier_;
  const std::string serving_status_;

  // On the io_context's thread (SetPolicy posts there).
  MaintenancePolicy policy_;
  bool stopped_ = false;
  std::vector<std::unique_ptr<Task>> tasks_;

  // The maintenance thread runs maintenance_io_ until Stop.
  asio::io_context maintenance_io_;
  asio::executor_work_guard<asio::io_context::executor_type> maintenance_work_;
  std::thread maintenance_thread_;
  absl::Notification maintenance_done_;
};

}  // namespace packstore::daemon

#endif  // PACKSTORE_SERVER_DAEMON_MAINTENANCE_SCHEDULER_H_
