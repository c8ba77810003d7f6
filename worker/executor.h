// A fixed pool of threads for model work, with a bounded queue: gRPC callback
// threads hand work here and never run a model themselves.
//
//   Executor executor({.threads = 1, .max_pending = 64});
//   absl::Status s = executor.Submit([] { ... });  // UNAVAILABLE when full
//
// `max_pending` counts queued and running tasks. The destructor runs every
// task already accepted, then joins.
#ifndef LENSGRID_WORKER_EXECUTOR_H_
#define LENSGRID_WORKER_EXECUTOR_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace lensgrid {

class Executor {
 public:
  struct Options {
    int threads = 1;       // Default: 1 (GEMMs use their own BLAS threads)
    int max_pending = 64;  // queued + running
  };
  explicit Executor(Options options);
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Queues `task`; UNAVAILABLE (and `task` dropped) when max_pending tasks are
  // already queued or running, or after Shutdown().
  absl::Status Submit(std::function<void()> task);
  // Stops accepting tasks; those accepted still run.
  void Shutdown();
  int pending() const;
  // Time spent running tasks, summed over the threads (for /metrics).
  double busy_seconds() const;
  // Says that a running task is making progress (a run polls its cancel check
  // between blocks and calls this). Thread-safe, cheap.
  void MarkProgress();
  // How long tasks have been running without a start, an end or a
  // MarkProgress; 0 when none runs. A wedged executor (a task stuck in a loop
  // that never polls) shows here: the liveness check turns health NOT_SERVING.
  int64_t StalledMs() const;

 private:
  void Loop();
  const Options options_;
  mutable absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  int pending_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  double busy_seconds_ ABSL_GUARDED_BY(mu_) = 0;
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  std::atomic<int64_t> last_progress_ns_{0};  // steady clock
  std::vector<std::thread> threads_;
};

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_EXECUTOR_H_
