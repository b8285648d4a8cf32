#include "server/service/group_commit.h"

#include <utility>

namespace packstore::service {

GroupCommitter::GroupCommitter(Container* container, SpaceCheck space_check)
    : container_(container),
      space_check_(std::move(space_check)),
      answer_thread_([this] { RunAnswers(); }),
      thread_([this] { Run(); }) {}

GroupCommitter::~GroupCommitter() { Stop(); }

void GroupCommitter::Submit(std::vector<std::string_view> objects, CompressMode compress,
                            Done done) {
  if (objects.empty()) return done(std::vector<WrittenObject>{});
  {
    std::lock_guard lock(mu_);
    if (!stopping_) {
      queue_.push_back(Job{std::move(objects), compress, std::move(done)});
      cv_.notify_one();
      return;
    }
  }
  done(absl::UnavailableError("packstored is shutting down; retry against the next instance"));
}

void GroupCommitter::Stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
  {
    std::lock_guard lock(answers_mu_);
    answers_done_ = true;
  }
  answers_cv_.notify_all();
  answer_thread_.join();
}

void GroupCommitter::Run() {
  std::vector<Job> batch;
  std::vector<Answer> answers;
  for (;;) {
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;
      uint64_t bytes = 0;
      size_t count = 0;
      // Always take the first job, however large, then fill up to the caps.
      while (!queue_.empty() && (batch.empty() || (bytes < kMaxBatchBytes &&
                                                   count + queue_.front().objects.size() <=
                                                       kMaxBatchObjects))) {
        for (std::string_view object : queue_.front().objects) bytes += object.size();
        count += queue_.front().objects.size();
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    Commit(batch, answers);
    batch.clear();
    Post(answers);
  }
}

void GroupCommitter::Post(std::vector<Answer>& answers) {
  {
    std::lock_guard lock(answers_mu_);
    for (Answer& answer : answers) answers_.push_back(std::move(answer));
  }
  answers.clear();
  answers_cv_.notify_one();
}

void GroupCommitter::RunAnswers() {
  std::deque<Answer> ready;
  for (;;) {
    {
      std::unique_lock lock(answers_mu_);
      answers_cv_.wait(lock, [this] { return answers_done_ || !answers_.empty(); });
      if (answers_.empty()) return;  // done, and everything answered
      ready.swap(answers_);
    }
    for (Answer& answer : ready) answer.done(std::move(answer.written));
    ready.clear();
  }
}

void GroupCommitter::Commit(std::vector<Job>& jobs, std::vector<Answer>& answers) {
  uint64_t bytes = 0;
  for (const Job& job : jobs) {
    for (std::string_view object : job.objects) bytes += object.size();
  }
  if (absl::Status space = space_check_(bytes); !space.ok()) {
    for (Job& job : jobs) answers.push_back({std::move(job.done), space});
    return;
  }
  // One PutPacked per compression mode present (nearly always one).
  for (CompressMode mode : {CompressMode::kNo, CompressMode::kYes, CompressMode::kAuto}) {
    std::vector<std::string_view> objects;
    for (const Job& job : jobs) {
      if (job.compress != mode) continue;
      objects.insert(objects.end(), job.objects.begin(), job.objects.end());
    }
    if (objects.empty()) continue;
    absl::StatusOr<std::vector<WrittenObject>> written = container_->PutPacked(objects, mode);
    size_t next = 0;
    for (Job& job : jobs) {
      if (job.compress != mode) continue;
      if (!written.ok()) {
        answers.push_back({std::move(job.done), written.status()});
        continue;
      }
      std::vector<WrittenObject> mine(
          std::make_move_iterator(written->begin() + next),
          std::make_move_iterator(written->begin() + next + job.objects.size()));
      next += job.objects.size();
      answers.push_back({std::move(job.done), std::move(mine)});
    }
  }
}

}  // namespace packstore::service
