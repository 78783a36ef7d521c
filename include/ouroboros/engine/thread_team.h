// One team of worker threads for every threaded method (Ouroboros engine, GPipe, data
// parallelism): a job is a function of the worker index, run on all workers at once.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace ouroboros {

// W workers: worker 0 runs on the caller's thread, workers 1..W-1 on threads of their own (each
// with `intra_op_threads` libtorch threads). run(fn) calls fn(w) on every worker and returns when
// all are done; the first failure is rethrown (a TransportError caused by another worker's failure
// is not the one reported). on_failure (e.g. a hub abort) wakes workers blocked on a failed peer.
class ThreadTeam {
 public:
  ThreadTeam(int64_t workers, int64_t intra_op_threads, std::function<void()> on_failure = {});
  ~ThreadTeam();
  ThreadTeam(const ThreadTeam&) = delete;
  ThreadTeam& operator=(const ThreadTeam&) = delete;
  void run(const std::function<void(int64_t)>& fn);
  int64_t size() const { return workers_; }

 private:
  void loop(int64_t w);
  int64_t workers_;
  int64_t intra_op_threads_;
  std::function<void()> on_failure_;
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable cv_;
  const std::function<void(int64_t)>* job_ = nullptr;
  int64_t job_id_ = 0, done_ = 0;
  bool stopping_ = false;
  std::vector<std::exception_ptr> failures_;  // of workers 1..W-1 in the current run
};

}  // namespace ouroboros
