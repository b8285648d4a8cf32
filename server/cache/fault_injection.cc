// Fault injection; see fault_injection.h.
#include "server/cache/fault_injection.h"

#include <unistd.h>

#include <array>
#include <cstdio>
#include <mutex>

namespace packstore {
namespace {

struct State {
  std::mutex mu;
  bool armed = false;
  FaultSpec spec;
  std::string filter;  // what counted calls must contain
  std::array<uint64_t, kFaultOpCount> calls{};
  uint64_t injected = 0;
  std::string last_path;
};

State& GetState() {
  static State* state = new State;  // never destroyed: hooks may run at exit
  return *state;
}

std::string FdPath(int fd) {
  char link[64];
  snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
  char target[4096];
  ssize_t n = ::readlink(link, target, sizeof(target));
  return n > 0 ? std::string(target, static_cast<size_t>(n)) : std::string();
}

}  // namespace

std::atomic<bool> FaultInjector::active_{false};

std::string_view FaultOpName(FaultOp op) {
  switch (op) {
    case FaultOp::kOpen: return "open";
    case FaultOp::kWrite: return "write";
    case FaultOp::kSync: return "sync";
    case FaultOp::kRename: return "rename";
    case FaultOp::kLink: return "link";
    case FaultOp::kUnlink: return "unlink";
    case FaultOp::kTruncate: return "truncate";
    case FaultOp::kMmap: return "mmap";
  }
  return "unknown";
}

void FaultInjector::Arm(const FaultSpec& spec) {
  State& s = GetState();
  std::lock_guard lock(s.mu);
  s.armed = true;
  s.spec = spec;
  s.filter = spec.path_contains;
  s.calls.fill(0);
  s.injected = 0;
  s.last_path.clear();
  active_.store(true, std::memory_order_relaxed);
}

void FaultInjector::StartCounting(std::string path_contains) {
  State& s = GetState();
  std::lock_guard lock(s.mu);
  s.armed = false;
  s.filter = std::move(path_contains);
  s.calls.fill(0);
  s.injected = 0;
  active_.store(true, std::memory_order_relaxed);
}

void FaultInjector::Disarm() {
  State& s = GetState();
  std::lock_guard lock(s.mu);
  s.armed = false;
  active_.store(false, std::memory_order_relaxed);
}

uint64_t FaultInjector::Calls(FaultOp op) {
  State& s = GetState();
  std::lock_guard lock(s.mu);
  return s.calls[static_cast<size_t>(op)];
}

uint64_t FaultInjector::Injected() {
  State& s = GetState();
  std::lock_guard lock(s.mu);
  return s.injected;
}

std::string FaultInjector::LastFaultPath() {
  State& s = GetState();
  std::lock_guard lock(s.mu);
  return s.last_path;
}

int FaultInjector::CheckSlow(FaultOp op, int fd, std::string_view path,
                             std::string_view other_path, size_t* write_size) {
  State& s = GetState();
  std::lock_guard lock(s.mu);
  if (!active_.load(std::memory_order_relaxed)) return 0;
  // Resolving a descriptor costs a readlink, paid only by filtered tests
  // and by injected calls.
  std::string resolved;
  auto resolve = [&] {
    if (path.empty() && fd >= 0 && resolved.empty()) {
      resolved = FdPath(fd);
      path = resolved;
    }
  };
  auto inject = [&] {
    resolve();
    ++s.injected;
    s.last_path = std::string(path);
  };
  if (!s.filter.empty()) {
    resolve();
    if (path.find(s.filter) == std::string_view::npos &&
        other_path.find(s.filter) == std::string_view::npos) {
      return 0;
    }
  }
  const uint64_t n = ++s.calls[static_cast<size_t>(op)];
  if (!s.armed || op != s.spec.op || n < s.spec.nth) return 0;
  uint64_t first_failing = s.spec.nth;
  if (s.spec.short_write) {
    if (n == s.spec.nth) {
      if (write_size == nullptr || *write_size < 2) return 0;  // cannot be made shorter
      *write_size /= 2;
      inject();
      return 0;
    }
    if (s.spec.error == 0) return 0;
    first_failing = s.spec.nth + 1;
  }
  if (s.spec.times != 0 && n >= first_failing + s.spec.times) return 0;
  inject();
  return s.spec.error;
}

}  // namespace packstore
