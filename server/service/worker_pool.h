// A fixed pool of threads for the service's blocking work (index lookups,
// pack reads, loose writes), so that gRPC's polling threads never wait on
// the disk.
#ifndef PACKSTORE_SERVER_SERVICE_WORKER_POOL_H_
#define PACKSTORE_SERVER_SERVICE_WORKER_POOL_H_

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace packstore::service {

class WorkerPool {
 public:
  explicit WorkerPool(int threads);
  ~WorkerPool();  // runs what is queued, then joins
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  void Submit(std::function<void()> task);
  // Runs what is queued and joins the threads; later tasks run inline.
  void Stop();
  int size() const { return static_cast<int>(threads_.size()); }

 private:
  void Run();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace packstore::service

#endif  // PACKSTORE_SERVER_SERVICE_WORKER_POOL_H_
