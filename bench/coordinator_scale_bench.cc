// The coordinator at scale: a real lensgrid-coordinator process (SQLite state
// store, its own process so its CPU and memory are its own), 1,000 simulated
// workers in this process leasing over real gRPC (one connection each, the
// callback API: no thread per worker), and one ablate-heads job of 100,000
// shards (625 prompts x a 10 x 16 grid, one prompt and one head per shard).
// Each worker registers, then leases, completes its shard with well-formed
// zeros after its simulated shard time, and leases again, until the job is
// done. Shard times are uniform in work-ms x [1 - jitter, 1 + jitter]: real
// shards vary, and with equal times the 1,000 workers stay in lockstep and
// hit the coordinator in waves (--work-jitter 0 measures that worst case).
// --pin puts the coordinator on CPU 0 and the simulated workers on CPU 1, so
// on a small machine the two do not take each other's time.
//
// Prints: dispatch rate (shards/s), lease latency p50/p99/max (LeaseShard
// calls that got a shard, measured here from the call to its reply; the first
// wave, each worker's first lease when the job arrives, apart), the
// completion round trip, the coordinator's CPU (user + system, and as cores)
// and peak RSS, and its state store's size and write rate (/proc/PID/io).
//
//   build/bench/coordinator_scale_bench [--coordinator BIN] [--workers 1000]
//       [--prompts 625] [--layers 10] [--heads 16] [--work-ms 0]
//       [--work-jitter 0.5] [--pin]
#include <grpcpp/grpcpp.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <queue>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/fake_shard_result.h"
#include "lensgrid/v1/coordinator.grpc.pb.h"

namespace lensgrid::bench {
namespace {

using Clock = std::chrono::steady_clock;

double MsSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// Latencies in ms, collected from gRPC's callback threads.
class Samples {
 public:
  void Add(double ms) {
    std::lock_guard<std::mutex> lock(mu_);
    values_.push_back(ms);
  }
  double Percentile(double p) {
    std::lock_guard<std::mutex> lock(mu_);
    if (values_.empty()) return 0;
    std::sort(values_.begin(), values_.end());
    const size_t i = std::min(values_.size() - 1, static_cast<size_t>(p * values_.size()));
    return values_[i];
  }
  size_t size() {
    std::lock_guard<std::mutex> lock(mu_);
    return values_.size();
  }

 private:
  std::mutex mu_;
  std::vector<double> values_;
};

// Runs callbacks at their time, on one thread: the simulated compute of
// every worker without a thread each.
class Timer {
 public:
  Timer() : thread_([this] { Loop(); }) {}
  ~Timer() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void After(int ms, std::function<void()> fn) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push({Clock::now() + std::chrono::milliseconds(ms), seq_++, std::move(fn)});
    }
    cv_.notify_all();
  }

 private:
  struct Item {
    Clock::time_point at;
    uint64_t seq;
    std::function<void()> fn;
    bool operator>(const Item& o) const { return at != o.at ? at > o.at : seq > o.seq; }
  };
  void Loop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!done_) {
      if (queue_.empty()) {
        cv_.wait(lock);
        continue;
      }
      if (Clock::now() < queue_.top().at) {
        cv_.wait_until(lock, queue_.top().at);
        continue;
      }
      std::function<void()> fn = queue_.top().fn;
      queue_.pop();
      lock.unlock();
      fn();
      lock.lock();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::priority_queue<Item, std::vector<Item>, std::greater<Item>> queue_;
  uint64_t seq_ = 0;
  bool done_ = false;
  std::thread thread_;
};

struct Shared {
  std::atomic<bool> stop{false};
  std::atomic<int64_t> completed{0};
  std::atomic<int64_t> failed_calls{0};
  std::atomic<int> running{0};
  // lease_ms: every lease after a worker's first; first_lease_ms: the first
  // wave, every parked worker woken at once by the job's arrival, measured
  // from SubmitJob's start (the job's planning included), not from the park.
  Samples lease_ms, first_lease_ms, complete_ms;
  std::atomic<int64_t> submit_ns{0};  // steady_clock, when SubmitJob was called
  int work_ms = 0;
  double work_jitter = 0.5;
  std::unique_ptr<Timer> timer;  // made after --pin, so its thread is pinned too
  std::mutex mu;
  std::condition_variable all_stopped;
};

class FakeWorker;

// One CompleteShard call: the header and the chunks, then the reply.
class CompleteCall : public grpc::ClientWriteReactor<v1::CompleteShardRequest> {
 public:
  CompleteCall(FakeWorker* worker, v1::WorkQueue::Stub* stub,
               std::vector<v1::CompleteShardRequest> messages);
  void OnWriteDone(bool ok) override {
    if (!ok) return;  // OnDone follows with the status
    if (++next_ < messages_.size()) Write();
  }
  void OnDone(const grpc::Status& status) override;

 private:
  void Write() {
    if (next_ + 1 == messages_.size()) {
      StartWriteLast(&messages_[next_], grpc::WriteOptions());
    } else {
      StartWrite(&messages_[next_]);
    }
  }
  FakeWorker* worker_;
  grpc::ClientContext ctx_;
  v1::CompleteShardResponse resp_;
  std::vector<v1::CompleteShardRequest> messages_;
  size_t next_ = 0;
  Clock::time_point t0_ = Clock::now();
};

class FakeWorker {
 public:
  FakeWorker(const std::string& address, int index, Shared* shared) : shared_(shared) {
    grpc::ChannelArguments args;
    args.SetInt("lensgrid.bench.worker", index);  // a connection of its own
    channel_ = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
    stub_ = v1::WorkQueue::NewStub(channel_);
    name_ = "fake-" + std::to_string(index);
    rng_.seed(static_cast<uint32_t>(index) + 1);
  }

  bool Register() {
    v1::RegisterRequest req;
    req.set_name(name_);
    req.set_model_id("m");
    req.set_weights_sha256("sha");
    v1::RegisterResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    if (!stub_->Register(&ctx, req, &resp).ok()) return false;
    id_ = resp.worker_id();
    return true;
  }

  void Start() {
    ++shared_->running;
    Lease();
  }

  void Lease() {
    if (shared_->stop) return Stopped();
    lease_ctx_ = std::make_unique<grpc::ClientContext>();
    lease_req_.set_worker_id(id_);
    lease_req_.set_wait_ms(1000);
    lease_resp_.Clear();
    const Clock::time_point t0 = Clock::now();
    stub_->async()->LeaseShard(lease_ctx_.get(), &lease_req_, &lease_resp_,
                               [this, t0](grpc::Status status) { OnLease(status, t0); });
  }

  void Completed(const grpc::Status& status, bool accepted, double ms) {
    if (status.ok() && accepted) {
      ++shared_->completed;
      shared_->complete_ms.Add(ms);
    } else {
      ++shared_->failed_calls;
    }
    Lease();
  }

 private:
  void OnLease(const grpc::Status& status, Clock::time_point t0) {
    if (!status.ok()) {
      ++shared_->failed_calls;
      return Lease();
    }
    if (!lease_resp_.has_shard()) return Lease();  // parked the whole wait: nothing queued
    if (leased_before_) {
      shared_->lease_ms.Add(MsSince(t0));
    } else {
      const Clock::time_point submitted{Clock::duration(shared_->submit_ns.load())};
      shared_->first_lease_ms.Add(MsSince(std::max(t0, submitted)));
      leased_before_ = true;
    }
    auto messages = FakeShardResult(id_, lease_resp_.lease());
    if (shared_->work_ms > 0) {
      // The simulated compute, off gRPC's threads.
      auto held = std::make_shared<std::vector<v1::CompleteShardRequest>>(std::move(messages));
      const double spread = std::uniform_real_distribution<double>(1 - shared_->work_jitter,
                                                                   1 + shared_->work_jitter)(rng_);
      shared_->timer->After(static_cast<int>(shared_->work_ms * spread), [this, held] {
        new CompleteCall(this, stub_.get(), std::move(*held));
      });
    } else {
      new CompleteCall(this, stub_.get(), std::move(messages));
    }
  }

  void Stopped() {
    std::lock_guard<std::mutex> lock(shared_->mu);
    if (--shared_->running == 0) shared_->all_stopped.notify_all();
  }

  Shared* shared_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::WorkQueue::Stub> stub_;
  std::string name_, id_;
  std::unique_ptr<grpc::ClientContext> lease_ctx_;
  v1::LeaseShardRequest lease_req_;
  v1::LeaseShardResponse lease_resp_;
  bool leased_before_ = false;
  std::mt19937 rng_;  // its shard times (used on one gRPC callback at a time)
};

CompleteCall::CompleteCall(FakeWorker* worker, v1::WorkQueue::Stub* stub,
                           std::vector<v1::CompleteShardRequest> messages)
    : worker_(worker), messages_(std::move(messages)) {
  stub->async()->CompleteShard(&ctx_, &resp_, this);
  Write();
  StartCall();
}

void CompleteCall::OnDone(const grpc::Status& status) {
  worker_->Completed(status, resp_.accepted(), MsSince(t0_));
  delete this;
}

// /proc/PID figures of the coordinator.
struct ProcFigures {
  double cpu_s = 0;           // user + system
  int64_t peak_rss_kb = 0;    // VmHWM
  int64_t write_bytes = 0;    // bytes it caused to be written to storage
  int64_t written_chars = 0;  // bytes passed to write() and friends
};

ProcFigures ReadProc(pid_t pid) {
  ProcFigures f;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const size_t close = text.rfind(')');
  if (close != std::string::npos) {
    std::istringstream rest(text.substr(close + 2));
    std::string field;
    std::vector<std::string> fields;
    while (rest >> field) fields.push_back(field);
    if (fields.size() > 12) {  // utime, stime are fields 14 and 15 of stat (11, 12 here)
      f.cpu_s = (std::stod(fields[11]) + std::stod(fields[12])) / sysconf(_SC_CLK_TCK);
    }
  }
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmHWM:", 0) == 0) f.peak_rss_kb = std::stoll(line.substr(6));
  }
  std::ifstream io("/proc/" + std::to_string(pid) + "/io");
  for (std::string line; std::getline(io, line);) {
    if (line.rfind("write_bytes:", 0) == 0) f.write_bytes = std::stoll(line.substr(12));
    if (line.rfind("wchar:", 0) == 0) f.written_chars = std::stoll(line.substr(6));
  }
  return f;
}

int64_t DirBytes(const std::filesystem::path& dir) {
  int64_t total = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir, ec)) {
    if (e.is_regular_file(ec)) total += static_cast<int64_t>(e.file_size(ec));
  }
  return total;
}

void PinTo(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  sched_setaffinity(0, sizeof set, &set);
}

// Starts the coordinator on a free port and returns its pid and address.
pid_t StartCoordinator(const std::string& binary, const std::string& state_dir, bool pin,
                       std::string* address) {
  int pipe_fds[2];
  if (pipe(pipe_fds) != 0) return -1;
  const pid_t pid = fork();
  if (pid == 0) {
    if (pin) PinTo(0);
    dup2(pipe_fds[1], STDOUT_FILENO);
    dup2(pipe_fds[1], STDERR_FILENO);
    close(pipe_fds[0]);
    execl(binary.c_str(), binary.c_str(), "--listen", "127.0.0.1:0", "--state-dir",
          state_dir.c_str(), "--max-workers", "100000", static_cast<char*>(nullptr));
    _exit(127);
  }
  close(pipe_fds[1]);
  FILE* out = fdopen(pipe_fds[0], "r");
  char line[4096];
  while (std::fgets(line, sizeof line, out) != nullptr) {
    const char* at = std::strstr(line, "listening on ");
    if (at != nullptr) {
      *address = std::string(at + 13);
      while (!address->empty() && std::isspace(static_cast<unsigned char>(address->back()))) {
        address->pop_back();
      }
      // Keep draining its log so it never blocks on a full pipe.
      std::thread([out] {
        char sink[4096];
        while (std::fgets(sink, sizeof sink, out) != nullptr) {
        }
        std::fclose(out);
      }).detach();
      return pid;
    }
  }
  std::fclose(out);
  return -1;
}

int Main(int argc, char** argv) {
  std::string binary = LENSGRID_COORDINATOR_BIN;
  int workers = 1000, prompts = 625, layers = 10, heads = 16;
  Shared shared;
  bool pin = false;
  for (int i = 1; i < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--pin") {
      pin = true;
      --i;
      continue;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "coordinator_scale_bench: %s needs a value\n", flag.c_str());
      return 2;
    }
    if (flag == "--coordinator")
      binary = argv[i + 1];
    else if (flag == "--workers")
      workers = std::atoi(argv[i + 1]);
    else if (flag == "--prompts")
      prompts = std::atoi(argv[i + 1]);
    else if (flag == "--layers")
      layers = std::atoi(argv[i + 1]);
    else if (flag == "--heads")
      heads = std::atoi(argv[i + 1]);
    else if (flag == "--work-ms")
      shared.work_ms = std::atoi(argv[i + 1]);
    else if (flag == "--work-jitter")
      shared.work_jitter = std::clamp(std::atof(argv[i + 1]), 0.0, 1.0);
    else {
      std::fprintf(stderr, "coordinator_scale_bench: unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  const auto dir = std::filesystem::temp_directory_path() /
                   ("lensgrid-coordinator-scale-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  std::string address;
  const pid_t pid = StartCoordinator(binary, dir.string(), pin, &address);
  if (pid <= 0) {
    std::fprintf(stderr, "coordinator_scale_bench: %s did not start\n", binary.c_str());
    return 1;
  }
  if (pin) PinTo(1);  // this process's threads, gRPC's included, start after this
  shared.timer = std::make_unique<Timer>();

  std::vector<std::unique_ptr<FakeWorker>> fleet;
  const Clock::time_point t_register = Clock::now();
  for (int i = 0; i < workers; ++i) {
    fleet.push_back(std::make_unique<FakeWorker>(address, i, &shared));
    if (!fleet.back()->Register()) {
      std::fprintf(stderr, "coordinator_scale_bench: worker %d could not register\n", i);
      kill(pid, SIGKILL);
      return 1;
    }
  }
  const double register_s = MsSince(t_register) / 1000;

  auto coordinator =
      v1::Coordinator::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  v1::JobSpec spec;
  spec.set_model_id("m");
  spec.set_weights_sha256("sha");
  spec.set_method(v1::METHOD_ABLATE_HEADS);
  spec.set_n_layers(layers);
  spec.set_n_heads(heads);
  spec.set_prompts_per_shard(1);
  spec.set_components_per_shard(1);
  for (int p = 0; p < prompts; ++p) {
    v1::InlinePrompt* pr = spec.add_prompts();
    for (int t = 0; t < 16; ++t) pr->add_tokens(t + p);
    pr->add_answers(1);
    pr->add_wrongs(2);
  }
  // Parked first, then the job arrives: the wake-up is part of what is measured.
  for (auto& w : fleet) w->Start();
  const ProcFigures before = ReadProc(pid);
  const Clock::time_point t0 = Clock::now();
  shared.submit_ns = t0.time_since_epoch().count();
  v1::SubmitJobRequest submit;
  *submit.mutable_spec() = spec;
  v1::SubmitJobResponse job;
  grpc::ClientContext submit_ctx;
  grpc::Status submitted = coordinator->SubmitJob(&submit_ctx, submit, &job);
  if (!submitted.ok()) {
    std::fprintf(stderr, "coordinator_scale_bench: SubmitJob: %s\n",
                 submitted.error_message().c_str());
    kill(pid, SIGKILL);
    return 1;
  }
  const int64_t total = job.shards_total();
  int64_t peak_rss_kb = 0;
  v1::JobState state = v1::JOB_QUEUED;
  for (;;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    v1::GetJobRequest get;
    get.set_job_id(job.job_id());
    v1::JobStatus now;
    grpc::ClientContext ctx;
    if (coordinator->GetJob(&ctx, get, &now).ok()) state = now.state();
    peak_rss_kb = std::max(peak_rss_kb, ReadProc(pid).peak_rss_kb);
    if (state == v1::JOB_SUCCEEDED || state == v1::JOB_FAILED || state == v1::JOB_CANCELLED) {
      break;
    }
  }
  const double seconds = MsSince(t0) / 1000;
  const ProcFigures after = ReadProc(pid);
  const int64_t store_bytes = DirBytes(dir);
  shared.stop = true;
  {
    std::unique_lock<std::mutex> lock(shared.mu);
    shared.all_stopped.wait_for(lock, std::chrono::seconds(30),
                                [&] { return shared.running.load() == 0; });
  }
  kill(pid, SIGTERM);
  waitpid(pid, nullptr, 0);
  std::filesystem::remove_all(dir);

  const double rate = static_cast<double>(shared.completed) / seconds;
  const double cpu = after.cpu_s - before.cpu_s;
  std::printf(
      "coordinator_scale_bench: %d simulated workers (registered in %.1f s), %lld "
      "shards of one job, %s, shard time %d ms +- %.0f%%%s\n",
      workers, register_s, static_cast<long long>(total), v1::JobState_Name(state).c_str(),
      shared.work_ms, 100 * shared.work_jitter,
      pin ? ", coordinator pinned to CPU 0 and workers to CPU 1" : "");
  std::printf("  %-34s %12s   %s\n", "figure", "measured", "goal (issue 20)");
  std::printf("  %-34s %12.0f   >= 2,000\n", "dispatch rate (shards/s)", rate);
  std::printf("  %-34s %12.1f\n", "lease latency p50 (ms)", shared.lease_ms.Percentile(0.50));
  std::printf("  %-34s %12.1f   <= 50\n", "lease latency p99 (ms)",
              shared.lease_ms.Percentile(0.99));
  std::printf("  %-34s %12.1f\n", "lease latency max (ms)", shared.lease_ms.Percentile(1.0));
  std::printf(
      "  %-34s %12.1f   (p50 %.1f: %zu parked workers woken by the job,"
      " from its SubmitJob)\n",
      "first wave's lease p99 (ms)", shared.first_lease_ms.Percentile(0.99),
      shared.first_lease_ms.Percentile(0.50), shared.first_lease_ms.size());
  std::printf("  %-34s %12.1f\n", "complete round trip p99 (ms)",
              shared.complete_ms.Percentile(0.99));
  std::printf("  %-34s %12.1f   (%.2f cores over %.1f s)\n", "coordinator CPU (s)", cpu,
              cpu / seconds, seconds);
  std::printf("  %-34s %12.1f\n", "coordinator peak RSS (MiB)", peak_rss_kb / 1024.0);
  std::printf("  %-34s %12.1f\n", "state store size (MiB)", store_bytes / 1048576.0);
  std::printf("  %-34s %12.1f   (write() %.1f MiB/s)\n", "state store writes (MiB/s)",
              (after.write_bytes - before.write_bytes) / 1048576.0 / seconds,
              (after.written_chars - before.written_chars) / 1048576.0 / seconds);
  std::printf("  %-34s %12lld\n", "failed calls", static_cast<long long>(shared.failed_calls));
  return state == v1::JOB_SUCCEEDED && shared.completed == total ? 0 : 1;
}

}  // namespace
}  // namespace lensgrid::bench

int main(int argc, char** argv) { return lensgrid::bench::Main(argc, argv); }
