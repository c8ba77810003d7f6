#include "worker/executor.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"

namespace lensgrid {
namespace {

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

Executor::Executor(Options options) : options_(options) {
  for (int i = 0; i < std::max(1, options_.threads); ++i) threads_.emplace_back([this] { Loop(); });
}

Executor::~Executor() {
  Shutdown();
  for (auto& t : threads_) t.join();
}

absl::Status Executor::Submit(std::function<void()> task) {
  absl::MutexLock lock(&mu_);
  if (stopping_) return absl::UnavailableError("the worker is shutting down");
  if (pending_ >= options_.max_pending) {
    return absl::UnavailableError(
        absl::StrCat("the worker is busy: ", pending_, " requests queued or running (--max-queue ",
                     options_.max_pending, "); retry later or on another worker"));
  }
  ++pending_;
  queue_.push_back(std::move(task));
  return absl::OkStatus();
}

void Executor::Shutdown() {
  absl::MutexLock lock(&mu_);
  stopping_ = true;
}

int Executor::pending() const {
  absl::MutexLock lock(&mu_);
  return pending_;
}

double Executor::busy_seconds() const {
  absl::MutexLock lock(&mu_);
  return busy_seconds_;
}

void Executor::MarkProgress() { last_progress_ns_.store(NowNs()); }

int64_t Executor::StalledMs() const {
  {
    absl::MutexLock lock(&mu_);
    if (running_ == 0) return 0;
  }
  return std::max<int64_t>(0, (NowNs() - last_progress_ns_.load()) / 1000000);
}

void Executor::Loop() {
  for (;;) {
    std::function<void()> task;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](Executor* e)
               ABSL_EXCLUSIVE_LOCKS_REQUIRED(e->mu_) { return !e->queue_.empty() || e->stopping_; },
          this));
      if (queue_.empty()) return;  // stopping, and nothing left to run
      task = std::move(queue_.front());
      queue_.pop_front();
      ++running_;
    }
    MarkProgress();
    const auto start = std::chrono::steady_clock::now();
    task();
    task = nullptr;  // release captures before the slot frees
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    MarkProgress();
    absl::MutexLock lock(&mu_);
    --running_;
    --pending_;
    busy_seconds_ += seconds;
  }
}

}  // namespace lensgrid
