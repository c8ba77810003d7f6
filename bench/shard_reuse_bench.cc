// Shards that cost nothing extra: one search cut into component shards, run
// by two workers leasing from the real Scheduler (a fake clock, no sockets; a
// seeded coin picks which worker asks next; worker time is wall time), side by side:
//   before  no base-run cache, shards leased in plan order (what lensgrid did)
//   cache   --shard-cache-bytes 256 MiB, plan order (reuse only by chance)
//   both    the cache and prompt-range affinity (what lensgrid does now)
// It prints per method the shards, the base runs computed (each a clean
// forward, plus a corrupted one for patching or resampling; for path-patch
// the corruption batch: the clean and corrupted runs; for mean ablation the
// dataset's mean counts as one more, a forward of every prompt, kept apart
// since every prompt range shares it), the base runs reused, the workers'
// seconds, and whether the merged results are the same bits as before's.
//
//   build/bench/shard_reuse_bench [--prompts 32] [--pos 16] [--prompts-per-shard 8]
//                                 [--components-per-shard 8] [--reps 3]
// The model: `lensgrid init --layers 6 --heads 8 --d-model 256 --vocab 1000`.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "service/clock.h"
#include "service/scheduler.h"
#include "worker/core/worker_core.h"
#include "worker/model/cpu_threads.h"

namespace lensgrid {
namespace {

using service::Array;

struct Flags {
  int prompts = 32, pos = 16, prompts_per_shard = 8, components_per_shard = 8, reps = 3;
};

// The scheduler logs each job's events to stderr: the bench keeps it for its
// own errors only.
int error_fd = 2;

template <typename T>
T Must(absl::StatusOr<T> v, const char* what) {
  if (!v.ok()) {
    dprintf(error_fd, "%s: %s\n", what, v.status().ToString().c_str());
    std::exit(1);
  }
  return std::move(*v);
}

v1::JobSpec Job(v1::SearchMethod method, v1::Ablation ablation, const Flags& f,
                const std::string& sha) {
  v1::JobSpec s;
  s.set_model_id("bench");
  s.set_weights_sha256(sha);
  s.set_method(method);
  s.set_ablation(ablation);
  s.set_n_layers(6);
  s.set_n_heads(8);
  s.set_prompts_per_shard(f.prompts_per_shard);
  s.set_components_per_shard(f.components_per_shard);
  std::mt19937_64 rng(0);
  for (int i = 0; i < f.prompts; ++i) {
    v1::InlinePrompt* p = s.add_prompts();
    for (int t = 0; t < f.pos; ++t) {
      const int64_t token = static_cast<int64_t>(rng() % 999);
      p->add_tokens(token);
      p->add_corrupted_tokens(rng() % 2 == 0 ? token : static_cast<int64_t>(rng() % 999));
    }
    p->add_answers(static_cast<int64_t>(rng() % 999));
    p->add_wrongs(static_cast<int64_t>(rng() % 999));
  }
  return s;
}

std::vector<Array> ToArrays(const RunResult& r) {
  std::vector<Array> out;
  for (const TensorBytes& t : r.tensors) {
    Array a{t.name, t.shape, {}};
    a.values.resize(t.bytes.size() / sizeof(float));
    std::memcpy(a.values.data(), t.bytes.data(), a.values.size() * sizeof(float));
    out.push_back(std::move(a));
  }
  return out;
}

struct Outcome {
  int64_t shards = 0, base_runs = 0, reused = 0;
  double worker_s = 0;
  std::vector<Array> merged;
};

// Two workers (each its own WorkerCore) take turns: lease, run, complete.
Outcome RunJob(const std::string& model_dir, const v1::JobSpec& job_spec, bool cache,
               bool affinity) {
  service::FakeClock clock;
  service::SchedulerOptions options;
  options.prompt_affinity = affinity;
  service::Scheduler scheduler(&clock, options, nullptr);
  std::vector<std::unique_ptr<WorkerCore>> cores;
  std::vector<std::string> ids;
  for (int w = 0; w < 2; ++w) {
    WorkerOptions o;
    o.model_dir = model_dir;
    o.shard_cache_bytes = cache ? int64_t{256} << 20 : 0;
    cores.push_back(Must(WorkerCore::Load(o), "loading the model"));
    v1::RegisterRequest r;
    r.set_model_id("bench");
    r.set_weights_sha256(cores.back()->Info().weights_sha256());
    r.set_name(absl::StrCat("w", w));
    ids.push_back(Must(scheduler.RegisterWorker(r), "Register"));
  }
  const std::string job = Must(scheduler.Submit(Caller::Anonymous(), job_spec), "Submit");
  Outcome out;
  std::mt19937 order(1);  // which worker asks next: a seeded coin, the same in every run
  for (int turn = 0;; turn = static_cast<int>(order() % 2)) {
    std::optional<v1::ShardLease> lease = Must(scheduler.Lease(ids[turn]), "Lease");
    if (!lease) break;
    v1::RunShardRequest request;
    request.set_weights_sha256(cores[turn]->Info().weights_sha256());
    *request.mutable_shard() = lease->shard();
    const auto t0 = std::chrono::steady_clock::now();
    RunResult result = Must(cores[turn]->RunShard(request, [] { return false; }), "RunShard");
    out.worker_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ++out.shards;
    if (!Must(scheduler.Complete(ids[turn], lease->lease_id(), ToArrays(result)), "Complete")) {
      dprintf(error_fd, "shard %lld not accepted\n", static_cast<long long>(lease->shard_id()));
      std::exit(1);
    }
  }
  for (const auto& core : cores) {
    const BaseRunCache::Stats s = core->ShardCacheStats();
    out.base_runs += cache ? s.misses : 0;
    out.reused += s.hits;
  }
  // Without the cache every shard computes its base run (and the mean).
  if (!cache) out.base_runs = out.shards * (job_spec.ablation() == v1::ABLATION_MEAN ? 2 : 1);
  out.merged = Must(scheduler.GetResult(Caller::Anonymous(), job), "GetResult").tensors;
  return out;
}

bool SameBits(const std::vector<Array>& a, const std::vector<Array>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].name != b[i].name || a[i].shape != b[i].shape ||
        a[i].values.size() != b[i].values.size() ||
        std::memcmp(a[i].values.data(), b[i].values.data(), a[i].values.size() * sizeof(float)) !=
            0) {
      return false;
    }
  }
  return true;
}

int Main(int argc, char** argv) {
  Flags f;
  for (int i = 1; i + 1 < argc; i += 2) {
    const int v = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--prompts") == 0) f.prompts = v;
    if (std::strcmp(argv[i], "--pos") == 0) f.pos = v;
    if (std::strcmp(argv[i], "--prompts-per-shard") == 0) f.prompts_per_shard = v;
    if (std::strcmp(argv[i], "--components-per-shard") == 0) f.components_per_shard = v;
    if (std::strcmp(argv[i], "--reps") == 0) f.reps = std::max(1, v);
  }
  ConfigureCpuThreads(0);
  const std::string dir = "/tmp/lensgrid_shard_reuse_bench_model";
  const std::string bin =
      std::getenv("LENSGRID_BINARY_DIR") ? std::getenv("LENSGRID_BINARY_DIR") : "build";
  const std::string init = absl::StrCat(bin, "/client/lensgrid init --out ", dir,
                                        " --layers 6 --heads 8 --d-model 256 --vocab 1000"
                                        " --n-ctx 128 --seed 0 > /dev/null");
  if (std::system(init.c_str()) != 0) {
    std::fprintf(stderr, "cannot run: %s\n", init.c_str());
    return 1;
  }
  std::string sha;
  {
    WorkerOptions o;
    o.model_dir = dir;
    sha = Must(WorkerCore::Load(o), "loading the model")->Info().weights_sha256();
  }
  error_fd = dup(2);
  const int null_fd = open("/dev/null", O_WRONLY);
  if (error_fd < 0 || null_fd < 0 || dup2(null_fd, 2) < 0) return 1;
  std::printf(
      "shard_reuse_bench: 2 workers (a seeded coin picks who asks next), %d prompts x %d tokens, "
      "%d prompts and %d "
      "heads per shard (6 layers x 8 heads, d_model 256); worker s: median of %d runs\n",
      f.prompts, f.pos, f.prompts_per_shard, f.components_per_shard, f.reps);
  std::printf("%-28s %-7s %7s %10s %7s %10s %9s %10s\n", "method", "run", "shards", "base runs",
              "reused", "worker s", "speedup", "same bits");
  struct Case {
    const char* name;
    v1::SearchMethod method;
    v1::Ablation ablation;
  };
  for (const Case& c :
       {Case{"ablate-heads (zero)", v1::METHOD_ABLATE_HEADS, v1::ABLATION_ZERO},
        Case{"ablate-heads (mean)", v1::METHOD_ABLATE_HEADS, v1::ABLATION_MEAN},
        Case{"patch-heads", v1::METHOD_PATCH_HEADS, v1::ABLATION_ZERO},
        Case{"path-patch (to the logits)", v1::METHOD_PATH_PATCH, v1::ABLATION_ZERO}}) {
    const v1::JobSpec spec = Job(c.method, c.ablation, f, sha);
    // The three runs interleaved, each repeated: a median of each.
    Outcome before, cache, both;
    std::vector<double> times[3];
    for (int rep = 0; rep < f.reps; ++rep) {
      before = RunJob(dir, spec, /*cache=*/false, /*affinity=*/false);
      cache = RunJob(dir, spec, /*cache=*/true, /*affinity=*/false);
      both = RunJob(dir, spec, /*cache=*/true, /*affinity=*/true);
      times[0].push_back(before.worker_s);
      times[1].push_back(cache.worker_s);
      times[2].push_back(both.worker_s);
    }
    for (int i = 0; i < 3; ++i) std::sort(times[i].begin(), times[i].end());
    before.worker_s = times[0][f.reps / 2];
    cache.worker_s = times[1][f.reps / 2];
    both.worker_s = times[2][f.reps / 2];
    for (const auto& [label, o] : {std::pair<const char*, const Outcome*>{"before", &before},
                                   {"cache", &cache},
                                   {"both", &both}}) {
      std::printf("%-28s %-7s %7lld %10lld %7lld %10.3f %8.2fx %10s\n", c.name, label,
                  static_cast<long long>(o->shards), static_cast<long long>(o->base_runs),
                  static_cast<long long>(o->reused), o->worker_s, before.worker_s / o->worker_s,
                  SameBits(before.merged, o->merged) ? "yes" : "NO");
    }
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace
}  // namespace lensgrid

int main(int argc, char** argv) { return lensgrid::Main(argc, argv); }
