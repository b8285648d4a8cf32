// Group commit: packed puts from many callers queue here, and one writer
// thread appends each batch to a pack with one fdatasync and one index
// transaction (Container::PutPacked); a second thread then answers every
// caller in it while the writer goes on with the next batch. While a batch
// commits the next one gathers, so the batch size follows the load with no
// timer: one caller alone waits for one commit, sixteen share one.
#ifndef PACKSTORE_SERVER_SERVICE_GROUP_COMMIT_H_
#define PACKSTORE_SERVER_SERVICE_GROUP_COMMIT_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/store/container.h"

namespace packstore::service {

class GroupCommitter {
 public:
  using Done = std::function<void(absl::StatusOr<std::vector<WrittenObject>>)>;
  // Checks there is room for `bytes` more before a batch is written.
  using SpaceCheck = std::function<absl::Status(uint64_t bytes)>;

  GroupCommitter(Container* container, SpaceCheck space_check);
  ~GroupCommitter();  // Stop()

  // Queues `objects` (which must stay valid until `done` runs) to be
  // written to a pack; `done` runs on the answering thread after the
  // commit that covers them, with their keys in order.
  void Submit(std::vector<std::string_view> objects, CompressMode compress, Done done);
  // Commits what is queued, then joins the writer; later submissions fail
  // with UNAVAILABLE.
  void Stop();

 private:
  struct Job {
    std::vector<std::string_view> objects;
    CompressMode compress;
    Done done;
  };
  struct Answer {
    Done done;
    absl::StatusOr<std::vector<WrittenObject>> written;
  };
  void Run();
  void Commit(std::vector<Job>& jobs, std::vector<Answer>& answers);
  // Hands answers to the answering thread.
  void Post(std::vector<Answer>& answers);
  void RunAnswers();

  // A batch stops growing at this many bytes or objects (one transaction
  // of bounded size; the rest waits for the next commit).
  static constexpr uint64_t kMaxBatchBytes = uint64_t{64} << 20;
  static constexpr size_t kMaxBatchObjects = 50000;

  Container* const container_;
  const SpaceCheck space_check_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;
  bool stopping_ = false;
  std::mutex answers_mu_;
  std::condition_variable answers_cv_;
  std::deque<Answer> answers_;
  bool answers_done_ = false;
  std::thread answer_thread_;
  std::thread thread_;
};

}  // namespace packstore::service

#endif  // PACKSTORE_SERVER_SERVICE_GROUP_COMMIT_H_
