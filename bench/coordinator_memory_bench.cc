// The coordinator's memory with many finished jobs: stores N finished jobs
// (ablate-heads, real small results) through a real Scheduler and SQLite
// StateStore, and prints the process's resident set size (VmRSS, from
// /proc/self/status) before any job and after storing them, then in a fresh
// process whose Scheduler restores them from the store; and, for comparison,
// with all of them held whole and then summarized at once. Each measurement
// runs in a process of its own (this binary again). Numbers, not pass/fail.
//
//   build/bench/coordinator_memory_bench [--jobs 10000] [--dir DIR]
#include <fcntl.h>
#include <malloc.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "service/scheduler.h"
#include "service/state_store.h"

namespace lensgrid::service {
namespace {

// VmRSS of this process, in MiB.
double RssMiB() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atof(line.c_str() + 6) / 1024.0;
  }
  return -1;
}

// Memory freed by the allocator goes back to the system before a reading.
double TrimmedRssMiB() {
  malloc_trim(0);
  return RssMiB();
}

// Bytes the allocator has handed out and not got back, in MiB: what RSS would
// be without fragmentation (freed chunks between live ones stay resident).
double HeapInUseMiB() { return static_cast<double>(mallinfo2().uordblks) / (1 << 20); }

// 8 prompts of 16 tokens on a 12 x 12 model, one shard: a result of
// 8 x 144 per-prompt deltas plus means (~10 KB), like a small real sweep.
v1::JobSpec Spec(int i) {
  v1::JobSpec s;
  s.set_model_id("m");
  s.set_weights_sha256("sha");
  s.set_method(v1::METHOD_ABLATE_HEADS);
  s.set_n_layers(12);
  s.set_n_heads(12);
  s.set_prompts_per_shard(8);
  s.set_components_per_shard(144);
  s.set_label("bench job " + std::to_string(i));
  for (int p = 0; p < 8; ++p) {
    v1::InlinePrompt* prompt = s.add_prompts();
    for (int t = 0; t < 16; ++t) prompt->add_tokens(100 + p + t + i % 50);
    prompt->add_answers(7);
    prompt->add_wrongs(9);
  }
  return s;
}

std::vector<Array> ResultFor(const v1::ShardSpec& shard) {
  const int64_t n = shard.prompt_end() - shard.prompt_begin();
  const int64_t c = shard.component_end() - shard.component_begin();
  Array baseline{"baseline", {n}, std::vector<float>(n, 1.5f)};
  Array delta{"delta", {n, c}, std::vector<float>(n * c)};
  for (size_t k = 0; k < delta.values.size(); ++k) delta.values[k] = 0.001f * k;
  return {baseline, delta};
}

// The second half, in a process of its own: a fresh Scheduler restores the store.
int Restore(const std::string& dir) {
  const double before = TrimmedRssMiB();
  auto store = StateStore::Open(dir);
  if (!store.ok()) {
    std::fprintf(stderr, "%s\n", store.status().ToString().c_str());
    return 1;
  }
  RealClock clock;
  Scheduler scheduler(&clock, SchedulerOptions{}, store->get());
  const auto start = std::chrono::steady_clock::now();
  auto jobs = (*store)->Load();
  if (!jobs.ok()) {
    std::fprintf(stderr, "%s\n", jobs.status().ToString().c_str());
    return 1;
  }
  const size_t n = jobs->size();
  for (StoredJob& job : *jobs) (void)scheduler.Restore(std::move(job));
  jobs->clear();
  jobs->shrink_to_fit();
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  const double after = TrimmedRssMiB(), heap = HeapInUseMiB();
  // One result read back on demand, to show it still is there.
  std::string next;
  auto listed = scheduler.ListJobs(Caller::Anonymous(), {1, ""}, &next);
  const bool served = listed.ok() && !listed->empty() &&
                      scheduler.GetResult(Caller::Anonymous(), listed->front().job_id()).ok();
  std::printf(
      "restart: RSS %.1f MiB before loading, %.1f MiB after restoring %zu jobs in %.0f ms "
      "(%.2f KiB a job; heap in use %.1f MiB); a result read on demand: %s\n",
      before, after, n, ms, (after - before) * 1024 / static_cast<double>(n), heap,
      served ? "ok" : "FAILED");
  return served ? 0 : 1;
}

// Stores n_jobs finished jobs in DIR. steady: as a live coordinator runs
// (each finished job becomes a summary at the next Tick); else all are held
// whole first and summarized at once at the end (the two side by side).
int Store(const std::string& dir, int n_jobs, bool steady) {
  const double empty = TrimmedRssMiB();
  auto store = StateStore::Open(dir);
  if (!store.ok()) {
    std::fprintf(stderr, "%s\n", store.status().ToString().c_str());
    return 1;
  }
  FakeClock clock;
  SchedulerOptions options;
  options.summarize_after_ms = steady ? 0 : 3600 * 1000;
  Scheduler scheduler(&clock, options, store->get());
  const double before = TrimmedRssMiB();
  // The scheduler logs each job's lifecycle; not 20,000 lines here.
  const int saved_stderr = dup(2);
  const int devnull = open("/dev/null", O_WRONLY);
  dup2(devnull, 2);
  close(devnull);
  v1::RegisterRequest reg;
  reg.set_model_id("m");
  reg.set_weights_sha256("sha");
  const std::string worker = scheduler.RegisterWorker(reg).value();
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < n_jobs; ++i) {
    if (!scheduler.Submit(Caller::Anonymous(), Spec(i)).ok()) return 1;
    while (auto lease = scheduler.Lease(worker).value()) {
      if (!scheduler.Complete(worker, lease->lease_id(), ResultFor(lease->shard())).value()) {
        return 1;
      }
    }
    if (steady) scheduler.Tick();
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double stored = TrimmedRssMiB(), stored_heap = HeapInUseMiB();
  double summaries = stored, summaries_heap = stored_heap;
  if (!steady) {
    clock.Advance(3600 * 1000);
    scheduler.Tick();  // keeps them as summaries
    summaries = TrimmedRssMiB();
    summaries_heap = HeapInUseMiB();
  }
  dup2(saved_stderr, 2);
  std::printf("%d finished jobs stored in %.1f s (%.0f jobs/s), %s; RSS in MiB:\n", n_jobs, s,
              n_jobs / s,
              steady ? "each kept as a summary once finished (a live coordinator)"
                     : "all held whole, then summarized at once");
  std::printf("  before any job      %8.1f (%.1f with the store open)\n", empty, before);
  if (steady) {
    std::printf("  after storing them  %8.1f (%.2f KiB a job; heap in use %.1f)\n", stored,
                (stored - before) * 1024 / n_jobs, stored_heap);
  } else {
    std::printf("  jobs held whole     %8.1f (%.2f KiB a job; heap in use %.1f)\n", stored,
                (stored - before) * 1024 / n_jobs, stored_heap);
    std::printf(
        "  then as summaries   %8.1f (heap in use %.1f; the rest is freed memory the "
        "allocator keeps between live chunks)\n",
        summaries, summaries_heap);
  }
  std::fflush(stdout);
  return 0;
}

// Runs this binary again with `args`: each measurement starts from a fresh heap.
int Child(const char* self, std::vector<std::string> args) {
  std::vector<char*> argv = {const_cast<char*>(self)};
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::fflush(stdout);
  const pid_t pid = fork();
  if (pid == 0) {
    execv(self, argv.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

int Run(int n_jobs, std::string dir, const char* self) {
  const bool own_dir = dir.empty();
  if (own_dir) {
    dir = (std::filesystem::temp_directory_path() /
           ("lensgrid-memory-bench-" + std::to_string(::getpid())))
              .string();
  }
  const std::string whole_dir = dir + "-whole";
  std::filesystem::remove_all(dir);
  std::filesystem::remove_all(whole_dir);
  int rc = Child(self, {"--store-steady", dir, "--jobs", std::to_string(n_jobs)});
  if (rc == 0) rc = Child(self, {"--restore", dir});
  if (rc == 0) rc = Child(self, {"--store-whole", whole_dir, "--jobs", std::to_string(n_jobs)});
  if (own_dir) std::filesystem::remove_all(dir);
  std::filesystem::remove_all(whole_dir);
  return rc;
}

}  // namespace
}  // namespace lensgrid::service

int main(int argc, char** argv) {
  int jobs = 10000;
  std::string dir, mode;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--jobs") {
      jobs = std::atoi(argv[i + 1]);
    } else if (flag == "--dir") {
      dir = argv[i + 1];
    } else {
      mode = flag;
      dir = argv[i + 1];
    }
  }
  if (mode == "--restore") return lensgrid::service::Restore(dir);
  if (mode == "--store-steady") return lensgrid::service::Store(dir, jobs, /*steady=*/true);
  if (mode == "--store-whole") return lensgrid::service::Store(dir, jobs, /*steady=*/false);
  return lensgrid::service::Run(jobs, dir, "/proc/self/exe");
}
