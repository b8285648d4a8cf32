#include "server/daemon/daemon.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <utility>

#include "absl/time/clock.h"
#include "common/str_cat.h"
#include "packstore/v1/packstore.grpc.pb.h"
#include "server/daemon/logging.h"
#include "server/daemon/socket_activation.h"
#include "server/store/container.h"
#include "spdlog/spdlog.h"

namespace packstore::daemon {
namespace {

// FileDescriptorName= of the socket unit.
constexpr std::string_view kSystemdSocketName = "packstore";

// Room for unary calls on one connection besides --max-streams streaming
// ones: more than the worker threads that run them.
constexpr uint64_t kUnaryStreamsPerConnection = 256;

std::string OctalText(mode_t mode) {
  char text[16];
  std::snprintf(text, sizeof(text), "%04o", static_cast<unsigned>(mode));
  return text;
}

std::string BoolText(bool value) { return value ? "true" : "false"; }

template <typename T>
std::string ListText(const std::vector<T>& values) {
  std::string text = "[";
  for (size_t i = 0; i < values.size(); ++i) text += StrCat(i == 0 ? "" : ", ", values[i]);
  return text + "]";
}

std::string Join(const std::vector<std::string>& items) {
  std::string text;
  for (const std::string& item : items) text += StrCat(text.empty() ? "" : ", ", item);
  return text;
}

uint64_t MonotonicMicros() {
  timespec now;
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<uint64_t>(now.tv_sec) * 1000000 + static_cast<uint64_t>(now.tv_nsec) / 1000;
}

const char* SignalName(int signal) {
  switch (signal) {
    case SIGTERM:
      return "SIGTERM";
    case SIGINT:
      return "SIGINT";
    case SIGHUP:
      return "SIGHUP";
    default:
      return "signal";
  }
}

}  // namespace

Daemon::Daemon(DaemonOptions options, std::vector<std::string> args)
    : options_(std::move(options)),
      args_(std::move(args)),
      notifier_(SystemdNotifier::FromEnvironment()),
      shutdown_timeout_seconds_(options_.shutdown_timeout_seconds),
      io_work_(io_.get_executor()),
      signals_(io_, SIGTERM, SIGINT, SIGHUP) {}

Daemon::~Daemon() {
  if (io_thread_.joinable()) {
    io_work_.reset();
    io_.stop();
    io_thread_.join();
  }
}

int Daemon::Run() {
  started_ = absl::Now();
  WaitForSignal();
  io_thread_ = std::thread([this] { io_.run(); });

  int exit_code = Start();
  if (exit_code == 0 && !stop_requested_.HasBeenNotified()) {
    serving_.store(true, std::memory_order_release);
    Notify(StrCat("READY=1\nSTATUS=", ServingStatus()));
    if (std::optional<absl::Duration> timeout = WatchdogTimeout()) {
      // The probe must answer well within the interval systemd waits.
      absl::Duration probe_timeout = *timeout / 4;
      watchdog_ = std::make_unique<Watchdog>(&notifier_, *timeout, [this, probe_timeout] {
        return service_->CheckLiveness(probe_timeout);
      });
      spdlog::debug("pinging the systemd watchdog every {}", ShortDuration(*timeout / 2));
    }
    spdlog::info("{}", ServingStatus());
    stop_requested_.WaitForNotification();
    Shutdown(SignalName(stop_signal_.load()));
  } else if (exit_code == 0) {
    Shutdown(StrCat(SignalName(stop_signal_.load()), " during start-up"));
  } else {
    Shutdown("start-up failed");
  }
  return exit_code;
}

int Daemon::Start() {
  absl::StatusOr<std::optional<int>> passed = TakeSystemdSocket(kSystemdSocketName);
  if (!passed.ok()) {
    spdlog::error("{}", std::string(passed.status().message()));
    return 1;
  }
  systemd_socket_ = *passed;
  if (!systemd_socket_) {
    // Before the store: a second daemon started on the same socket by
    // mistake must fail here, not after taking a writer lock it cannot use.
    absl::StatusOr<SocketLock> lock = SocketLock::Acquire(options_.socket);
    if (absl::IsFailedPrecondition(lock.status())) {
      spdlog::error("{}", std::string(lock.status().message()));  // names socket and holder
      return 1;
    }
    if (!lock.ok()) {
      spdlog::error("cannot use socket {}: {}", options_.socket,
                    std::string(lock.status().message()));
      return 1;
    }
    socket_lock_ = std::move(*lock);
  }

  absl::Status status = OpenStore();
  if (!status.ok()) {
    spdlog::error("{}", std::string(status.message()));
    return 1;
  }
  if (stop_requested_.HasBeenNotified()) return 0;

  status = StartServer();
  if (!status.ok()) {
    spdlog::error("{}", std::string(status.message()));
    return 1;
  }
  return 0;
}

absl::Status Daemon::OpenStore() {
  const std::string& store = options_.store;
  if (options_.init) {
    absl::Status created = Container::Init(store, InitOptions{});
    if (created.ok()) {
      spdlog::info("created a new store in {}", store);
    } else if (!absl::IsAlreadyExists(created)) {
      return absl::Status(created.code(),
                          StrCat("cannot create a store in ", store, ": ", created.message()));
    }
  }
  Notify(StrCat("STATUS=opening ", store));
  absl::Time start = absl::Now();
  OpenOptions open;
  open.mode = OpenMode::kWriter;
  open.cache.max_mapped_bytes = options_.cache_max_mapped_bytes;
  absl::StatusOr<std::unique_ptr<Container>> container = Container::Open(store, open);
  if (!container.ok()) {
    const absl::Status& error = container.status();
    if (absl::IsFailedPrecondition(error)) {
      return absl::FailedPreconditionError(
          StrCat("store ", store,
                 " is in use by another writer (another packstored?): ", error.message()));
    }
    if (absl::IsNotFound(error)) {
      return absl::NotFoundError(
          StrCat("no store in ", store, " (start with --init to create one): ", error.message()));
    }
    return absl::Status(error.code(), StrCat("cannot open store ", store, ": ", error.message()));
  }
  container_ = std::move(*container);
  spdlog::info("opened store {} in {}", store, ShortDuration(absl::Now() - start));
  return absl::OkStatus();
}

absl::Status Daemon::StartServer() {
  service::ServiceOptions service_options = options_.service;
  service_options.access = WithDefaultAdmins(options_.service.access, ::geteuid());
  service_ = service::ObjectStoreService::Create(container_.get(), &peers_, service_options);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.RegisterService(service_->grpc_service());
  const service::Limits& limits = options_.service.limits;
  builder.SetMaxReceiveMessageSize(
      static_cast<int>(std::min<uint64_t>(limits.max_message_size, INT_MAX)));
  // HTTP/2's per-connection stream limit. Streams past it wait in the
  // client instead of being refused, and unary calls count too; so it sits
  // above the service's own limit on streaming calls (which answers
  // RESOURCE_EXHAUSTED, across all connections) and only bounds what one
  // connection can open.
  builder.AddChannelArgument(
      GRPC_ARG_MAX_CONCURRENT_STREAMS,
      static_cast<int>(std::min<uint64_t>(
          uint64_t{limits.max_concurrent_streams} + kUnaryStreamsPerConnection, INT_MAX)));
  // No listening port: every connection comes from the listener, which
  // checked its peer first.
  server_ = builder.BuildAndStart();
  if (server_ == nullptr) return absl::InternalError("cannot start the gRPC server");

  absl::StatusOr<std::unique_ptr<Listener>> listener =
      systemd_socket_ ? Listener::Adopt(io_, *systemd_socket_)
                      : Listener::Bind(io_, options_.socket, options_.socket_mode);
  systemd_socket_.reset();  // the listener owns it now, or closed it
  if (!listener.ok()) {
    return absl::Status(listener.status().code(),
                        StrCat("cannot listen: ", listener.status().message()));
  }
  listener_ = std::move(*listener);
  if (!listener_->bound_here()) {
    spdlog::info("using the socket systemd passed{}",
                 listener_->path().empty() ? std::string() : StrCat(": ", listener_->path()));
  }
  fast_path_ = std::make_unique<FastPathServer>(service_.get(), options_.fast_path);
  fast_path_->SetIdleTimeout(options_.service.limits.stream_idle_timeout_seconds);
  listener_->Start(server_.get(), fast_path_.get(), &peers_, service_options.access);

  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  health->SetServingStatus(packstore::v1::ObjectStore::service_full_name(), true);
  health->SetServingStatus(true);

  scheduler_ = std::make_unique<MaintenanceScheduler>(
      io_, container_.get(), service_.get(), &notifier_, options_.maintenance, ServingStatus());
  scheduler_->Start();
  return absl::OkStatus();
}

void Daemon::Shutdown(std::string_view reason) {
  absl::Time deadline =
      absl::Now() + absl::Seconds(shutdown_timeout_seconds_.load(std::memory_order_relaxed));
  if (serving_.exchange(false, std::memory_order_acq_rel)) {
    spdlog::info("{}: shutting down; calls in flight have {}s to finish", reason,
                 shutdown_timeout_seconds_.load(std::memory_order_relaxed));
  } else if (stop_requested_.HasBeenNotified()) {
    spdlog::info("{}: stopping", reason);
  }
  if (server_ != nullptr) server_->GetHealthCheckService()->SetServingStatus(false);
  Notify("STOPPING=1\nSTATUS=shutting down");
  watchdog_.reset();
  if (listener_ != nullptr) listener_->Stop();
  if (scheduler_ != nullptr) scheduler_->Stop();
  // Before the service drains: a fast-path request in flight may still
  // need the group commit.
  bool fast_path_done = fast_path_ == nullptr || fast_path_->Stop(deadline);
  if (server_ != nullptr) {
    // Calls in flight get until the deadline. Idle connections are not
    // waited for: gRPC would wait for each client to close its connection
    // after the GOAWAY, which an idle grpcio client takes seconds to do.
    while (service_->active_calls() > 0 && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(10));
    }
    server_->Shutdown(absl::ToChronoTime(absl::Now()));
  }
  bool drained = service_ == nullptr || service_->Shutdown(deadline);
  bool maintenance_done = scheduler_ == nullptr || scheduler_->Join(deadline);
  if (!drained || !maintenance_done || !fast_path_done) {
    // Waiting longer would only make systemd kill us; what a maintenance
    // step left half done, the engine's recovery finishes or undoes at the
    // next start.
    spdlog::warn(
        "{} still running at the shutdown deadline: exiting without waiting "
        "(the store recovers at the next start)",
        fast_path_done ? "maintenance" : "a fast-path request");
    std::_Exit(0);
  }

  io_work_.reset();
  io_.stop();
  if (io_thread_.joinable()) io_thread_.join();
  scheduler_.reset();
  uint64_t accepted = listener_ != nullptr ? listener_->accepted() : 0;
  uint64_t refused = listener_ != nullptr ? listener_->refused() : 0;
  uint64_t fast_path = fast_path_ != nullptr ? fast_path_->served() : 0;
  listener_.reset();
  fast_path_.reset();
  // Every call has finished (Shutdown above). grpc::Server's destructor
  // would still wait, up to 10 s, for client connections to go away on
  // their own; the process exits next, so the object is left to it.
  static_cast<void>(server_.release());
  service_.reset();
  bool had_store = container_ != nullptr;
  container_.reset();  // closes the index cleanly
  if (had_store) {
    spdlog::info("stopped after {} ({} connections accepted, {} of them fast-path, {} refused)",
                 ShortDuration(absl::Now() - started_), accepted, fast_path, refused);
  }
}

void Daemon::WaitForSignal() {
  signals_.async_wait([this](const asio::error_code& error, int signal) {
    if (error) return;
    OnSignal(signal);
    WaitForSignal();
  });
}

void Daemon::OnSignal(int signal) {
  if (signal == SIGHUP) {
    Reload();
    return;
  }
  if (stop_requested_.HasBeenNotified()) {
    spdlog::warn("{} again while shutting down: exiting now", SignalName(signal));
    std::_Exit(1);
  }
  stop_signal_.store(signal);
  stop_requested_.Notify();
}

void Daemon::Reload() {
  if (!serving_.load(std::memory_order_acquire)) {
    spdlog::warn("SIGHUP before the daemon serves (or while it stops): ignored");
    return;
  }
  Notify(StrCat("RELOADING=1\nSTATUS=reloading the configuration\nMONOTONIC_USEC=",
                MonotonicMicros()));
  absl::StatusOr<DaemonOptions> loaded = LoadOptions(args_);
  if (!loaded.ok()) {
    spdlog::error("reload failed, the running configuration stays: {}",
                  std::string(loaded.status().message()));
    Notify(StrCat("READY=1\nSTATUS=", ServingStatus()));
    return;
  }
  const DaemonOptions& next = *loaded;
  const DaemonOptions& now = options_;
  std::vector<std::string> applied;
  std::vector<std::string> fixed;
  auto note = [](std::vector<std::string>& list, std::string_view name, const std::string& before,
                 const std::string& after) {
    if (before != after) list.push_back(StrCat(name, " ", before, " -> ", after));
  };
  const service::Limits& limits_now = now.service.limits;
  const service::Limits& limits_next = next.service.limits;
  const service::AccessPolicy& access_now = now.service.access;
  const service::AccessPolicy& access_next = next.service.access;
  const MaintenancePolicy& m_now = now.maintenance;
  const MaintenancePolicy& m_next = next.maintenance;
  note(applied, "log-level", now.log_level, next.log_level);
  note(applied, "max-object-size", FormatSize(limits_now.max_object_size),
       FormatSize(limits_next.max_object_size));
  note(applied, "max-streams", StrCat(limits_now.max_concurrent_streams),
       StrCat(limits_next.max_concurrent_streams));
  note(applied, "max-streams-per-client", StrCat(limits_now.max_streams_per_client),
       StrCat(limits_next.max_streams_per_client));
  note(applied, "stream-idle-timeout", StrCat(limits_now.stream_idle_timeout_seconds),
       StrCat(limits_next.stream_idle_timeout_seconds));
  note(applied, "free-disk-reserve", FormatSize(limits_now.free_disk_reserve),
       FormatSize(limits_next.free_disk_reserve));
  note(applied, "allow-uid", ListText(access_now.allow_uids), ListText(access_next.allow_uids));
  note(applied, "allow-gid", ListText(access_now.allow_gids), ListText(access_next.allow_gids));
  note(applied, "admin-uid", ListText(access_now.admin_uids), ListText(access_next.admin_uids));
  note(applied, "admin-gid", ListText(access_now.admin_gids), ListText(access_next.admin_gids));
  note(applied, "fast-path", BoolText(now.fast_path), BoolText(next.fast_path));
  note(applied, "auto-pack", BoolText(m_now.auto_pack), BoolText(m_next.auto_pack));
  note(applied, "pack-loose-objects", StrCat(m_now.pack_loose_objects),
       StrCat(m_next.pack_loose_objects));
  note(applied, "pack-loose-bytes", FormatSize(m_now.pack_loose_bytes),
       FormatSize(m_next.pack_loose_bytes));
  note(applied, "clean-after-pack", BoolText(m_now.clean_after_pack),
       BoolText(m_next.clean_after_pack));
  note(applied, "maintenance-interval", StrCat(m_now.maintenance_interval_seconds),
       StrCat(m_next.maintenance_interval_seconds));
  note(applied, "checkpoint-interval", StrCat(m_now.checkpoint_interval_seconds),
       StrCat(m_next.checkpoint_interval_seconds));
  note(applied, "unmap-idle-interval", StrCat(m_now.unmap_idle_interval_seconds),
       StrCat(m_next.unmap_idle_interval_seconds));
  note(applied, "shutdown-timeout", StrCat(now.shutdown_timeout_seconds),
       StrCat(next.shutdown_timeout_seconds));
  // Built into the open store, the socket or the server.
  note(fixed, "store", now.store, next.store);
  note(fixed, "socket", now.socket, next.socket);
  note(fixed, "socket-mode", OctalText(now.socket_mode), OctalText(next.socket_mode));
  note(fixed, "cache-max-mapped", FormatSize(now.cache_max_mapped_bytes),
       FormatSize(next.cache_max_mapped_bytes));
  note(fixed, "default-mode", std::string(DefaultPutModeName(now.service.default_mode)),
       std::string(DefaultPutModeName(next.service.default_mode)));
  note(fixed, "auto-packed-max-size", FormatSize(now.service.auto_packed_max_size),
       FormatSize(next.service.auto_packed_max_size));
  note(fixed, "workers", StrCat(now.service.worker_threads), StrCat(next.service.worker_threads));
  note(fixed, "max-message-size", FormatSize(limits_now.max_message_size),
       FormatSize(limits_next.max_message_size));

  // LoadOptions validated the level.
  SetLogLevel(ParseLogLevel(next.log_level).value_or(spdlog::level::info));
  service::Limits limits = limits_next;
  limits.max_message_size = limits_now.max_message_size;
  service::AccessPolicy access = WithDefaultAdmins(access_next, ::geteuid());
  service_->Reload(limits, access);
  listener_->SetAccessPolicy(access);
  fast_path_->SetEnabled(next.fast_path);
  fast_path_->SetIdleTimeout(limits_next.stream_idle_timeout_seconds);
  scheduler_->SetPolicy(m_next);
  shutdown_timeout_seconds_.store(next.shutdown_timeout_seconds, std::memory_order_relaxed);

  options_.log_level = next.log_level;
  options_.service.limits = limits;
  options_.service.access = access_next;
  options_.fast_path = next.fast_path;
  options_.maintenance = m_next;
  options_.shutdown_timeout_seconds = next.shutdown_timeout_seconds;
  options_.config_file = next.config_file;

  Notify(StrCat("READY=1\nSTATUS=", ServingStatus()));
  spdlog::info("reloaded the configuration ({}): {}",
               options_.config_file.empty() ? "no config file" : options_.config_file,
               applied.empty() ? "nothing changed" : Join(applied));
  for (const std::string& change : fixed) {
    spdlog::warn("reload: {} takes effect only at the next start", change);
  }
}

void Daemon::Notify(std::string_view state) const {
  absl::Status sent = notifier_.Notify(state);
  if (!sent.ok()) spdlog::warn("{}", sent.ToString());
}

std::string Daemon::ServingStatus() const {
  std::string socket = listener_ == nullptr        ? options_.socket
                       : listener_->path().empty() ? std::string("the socket systemd passed")
                                                   : listener_->path();
  return StrCat("serving ", options_.store, " on ", socket);
}

}  // namespace packstore::daemon
