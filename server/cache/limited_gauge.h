// LimitedGauge: a count of something the region cache holds (mapped bytes,
// windows, descriptors, pins) with a hard ceiling and a high-water mark.
//
// The cache reserves before it acquires (TryAdd before mmap or open) and
// releases after it lets go (Sub after munmap or close), so the value is
// never below what the process really holds and never above the limit.
//
// Thread-safety: every member may be called concurrently; lock-free.
// Failure: TryAdd returns false at the limit. Internal to server/cache.
#ifndef PACKSTORE_SERVER_CACHE_LIMITED_GAUGE_H_
#define PACKSTORE_SERVER_CACHE_LIMITED_GAUGE_H_

#include <atomic>
#include <cstdint>
#include <limits>

namespace packstore::cache_internal {

class LimitedGauge {
 public:
  explicit LimitedGauge(uint64_t limit = std::numeric_limits<uint64_t>::max()) : limit_(limit) {}

  LimitedGauge(const LimitedGauge&) = delete;
  LimitedGauge& operator=(const LimitedGauge&) = delete;

  // Adds `n` and returns true, unless that would pass the limit: then
  // returns false and changes nothing.
  bool TryAdd(uint64_t n) {
    uint64_t current = value_.load(std::memory_order_relaxed);
    do {
      if (n > limit_ || current > limit_ - n) return false;
    } while (!value_.compare_exchange_weak(current, current + n, std::memory_order_relaxed));
    RaisePeak(current + n);
    return true;
  }

  // Adds `n` whatever the limit; for gauges whose limit is never reached
  // (pinned windows are bounded by the window limit already).
  void Add(uint64_t n) { RaisePeak(value_.fetch_add(n, std::memory_order_relaxed) + n); }

  // REQUIRES: `n` was added before and not yet subtracted.
  void Sub(uint64_t n) { value_.fetch_sub(n, std::memory_order_relaxed); }

  uint64_t value() const { return value_.load(std::memory_order_relaxed); }
  uint64_t peak() const { return peak_.load(std::memory_order_relaxed); }
  uint64_t limit() const { return limit_; }

 private:
  void RaisePeak(uint64_t candidate) {
    uint64_t peak = peak_.load(std::memory_order_relaxed);
    while (candidate > peak &&
           !peak_.compare_exchange_weak(peak, candidate, std::memory_order_relaxed)) {
    }
  }

  const uint64_t limit_;
  std::atomic<uint64_t> value_{0};
  std::atomic<uint64_t> peak_{0};
};

}  // namespace packstore::cache_internal

#endif  // PACKSTORE_SERVER_CACHE_LIMITED_GAUGE_H_
