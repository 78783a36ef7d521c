// The thread team: workers 1..W-1 wait for a job, worker 0 runs it on the caller's thread.
#include "ouroboros/engine/thread_team.h"

#include <torch/torch.h>

#include "ouroboros/core/errors.h"

namespace ouroboros {

ThreadTeam::ThreadTeam(int64_t workers, int64_t intra_op_threads, std::function<void()> on_failure)
    : workers_(workers), intra_op_threads_(intra_op_threads), on_failure_(std::move(on_failure)) {
  for (int64_t w = 1; w < workers_; ++w) threads_.emplace_back([this, w] { loop(w); });
}

ThreadTeam::~ThreadTeam() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void ThreadTeam::loop(int64_t w) {
  at::set_num_threads(static_cast<int>(intra_op_threads_));
  int64_t seen = 0;
  while (true) {
    const std::function<void(int64_t)>* job = nullptr;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || job_id_ != seen; });
      if (stopping_) return;
      seen = job_id_;
      job = job_;
    }
    std::exception_ptr error;
    try {
      (*job)(w);
    } catch (...) {
      error = std::current_exception();
      if (on_failure_) on_failure_();
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (error) failures_.push_back(error);
      ++done_;
    }
    cv_.notify_all();
  }
}

namespace {

bool is_transport_error(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const TransportError&) {
    return true;
  } catch (...) {
    return false;
  }
}

}  // namespace

void ThreadTeam::run(const std::function<void(int64_t)>& fn) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    job_ = &fn;
    done_ = 0;
    ++job_id_;
  }
  cv_.notify_all();
  std::exception_ptr mine;
  try {
    fn(0);
  } catch (...) {
    mine = std::current_exception();
    if (on_failure_) on_failure_();
  }
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return done_ == workers_ - 1; });
  std::vector<std::exception_ptr> all;
  if (mine) all.push_back(mine);
  all.insert(all.end(), failures_.begin(), failures_.end());
  failures_.clear();
  if (all.empty()) return;
  // Report the real failure, not the aborts it caused in the other workers.
  for (const auto& e : all) {
    if (!is_transport_error(e)) std::rethrow_exception(e);
  }
  std::rethrow_exception(all.front());
}

}  // namespace ouroboros
