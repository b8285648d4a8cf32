// MutexLock: absl::MutexLock that ThreadSanitizer can see through.
//
// Debian's Abseil libraries are built without ThreadSanitizer, so a TSan
// build of the cache finds no happens-before edge in absl::Mutex::Lock and
// Unlock (their code is in the uninstrumented library) and reports every
// access the mutex guards as a race. This lock adds the edge TSan needs
// (release before unlock, acquire after lock) and compiles to exactly
// absl::MutexLock otherwise. Every mutex of the cache is taken through it.
//
// Thread-safety: as absl::MutexLock. Internal to server/cache.
#ifndef PACKSTORE_SERVER_CACHE_MUTEX_LOCK_H_
#define PACKSTORE_SERVER_CACHE_MUTEX_LOCK_H_

#include "absl/base/config.h"
#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

#ifdef ABSL_HAVE_THREAD_SANITIZER
#include <sanitizer/tsan_interface.h>
#endif

namespace packstore::cache_internal {

inline void TsanAcquire([[maybe_unused]] absl::Mutex* mu) {
#ifdef ABSL_HAVE_THREAD_SANITIZER
  __tsan_acquire(mu);
#endif
}

inline void TsanRelease([[maybe_unused]] absl::Mutex* mu) {
#ifdef ABSL_HAVE_THREAD_SANITIZER
  __tsan_release(mu);
#endif
}

class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(absl::Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) {
    mu_->Lock();
    TsanAcquire(mu_);
  }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() {
    TsanRelease(mu_);
    mu_->Unlock();
  }

  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  absl::Mutex* const mu_;
};

// cv->Wait(mu) with the same edges: the wait releases `mu` and takes it back.
inline void WaitOn(absl::CondVar* cv, absl::Mutex* mu) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
  TsanRelease(mu);
  cv->Wait(mu);
  TsanAcquire(mu);
}

}  // namespace packstore::cache_internal

#endif  // PACKSTORE_SERVER_CACHE_MUTEX_LOCK_H_
