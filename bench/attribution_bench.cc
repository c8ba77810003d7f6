// Attribution patching of all 144 heads (attribute-heads: one clean forward,
// one corrupted forward and one backward per prompt batch) against the exact
// patch-heads sweep (a clean and a corrupted base run, then one patched
// forward per head, resumed at the head's layer and packed), on GPT-2 small
// dims with random weights, 16 prompts x 16 tokens: forward and backward
// counts and wall time of each, side by side.
//
//   build/bench/attribution_bench [--prompts 16] [--pos 16] [--repeats 3]
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bench/random_prompts.h"
#include "common/openblas_env.h"
#include "worker/model/analysis/search.h"
#include "worker/model/cpu_threads.h"

namespace lensgrid {
namespace {

// The fastest of `repeats` runs (after one warm-up), and the last result.
double BestSeconds(const HookedTransformer& model, const Dataset& ds, const SearchSpec& spec,
                   int repeats, SearchResult* result) {
  *result = RunSearch(model, ds, spec).value();  // warm-up
  double best = 1e30;
  for (int i = 0; i < repeats; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    *result = RunSearch(model, ds, spec).value();
    best = std::min(best,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

double Pearson(torch::Tensor x, torch::Tensor y) {
  x = x.reshape({-1}).to(torch::kFloat64);
  y = y.reshape({-1}).to(torch::kFloat64);
  x = x - x.mean();
  y = y - y.mean();
  return ((x * y).sum() / (x.norm() * y.norm())).item<double>();
}

torch::Tensor Ranks(const torch::Tensor& t) {
  torch::Tensor order = t.reshape({-1}).argsort();
  torch::Tensor r = torch::empty({t.numel()}, torch::kFloat64);
  r.index_put_({order}, torch::arange(t.numel(), torch::kFloat64));
  return r;
}

int Main(int argc, char** argv) {
  int64_t prompts = 16, pos = 16;
  int repeats = 3;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--prompts") == 0 && i + 1 < argc)
      prompts = std::stoll(argv[++i]);
    else if (std::strcmp(argv[i], "--pos") == 0 && i + 1 < argc)
      pos = std::stoll(argv[++i]);
    else if (std::strcmp(argv[i], "--repeats") == 0 && i + 1 < argc)
      repeats = std::max(1, std::stoi(argv[++i]));
  }
  ConfigureCpuThreads(0);
  HookedTransformerConfig cfg = ModelConfigPreset("gpt2").value();
  GPT2Weights w = RandomWeights(cfg, 0);
  ProcessWeights(ProcessingOptions{}, cfg, &w);
  auto model = HookedTransformer::FromWeights(cfg, w).value();
  const Dataset ds = RandomPrompts(cfg, prompts, pos, /*corrupted=*/true);
  std::printf(
      "attribution patching vs exact activation patching of every head: %lld heads x %lld "
      "prompts x %lld tokens, GPT-2 small dims, random weights, logit-diff, %d BLAS threads, "
      "best of %d\n\n",
      static_cast<long long>(cfg.n_layers * cfg.n_heads), static_cast<long long>(prompts),
      static_cast<long long>(pos), BlasThreads(), repeats);
  SearchResult exact, approx;
  const double exact_s =
      BestSeconds(*model, ds, {Method::kPatchHeads, MetricKind::kLogitDiff}, repeats, &exact);
  const double approx_s =
      BestSeconds(*model, ds, {Method::kAttributeHeads, MetricKind::kLogitDiff}, repeats, &approx);

  std::printf("%-40s %9s %10s %26s %10s\n", "method", "forwards", "backwards",
              "block x prompt (forward)", "seconds");
  auto row = [&](const char* name, const SearchResult& r, double s) {
    std::printf(
        "%-40s %9lld %10lld %26lld %10.3f\n", name, static_cast<long long>(r.counts.forwards),
        static_cast<long long>(r.counts.backwards), static_cast<long long>(r.counts.block_rows), s);
  };
  row("patch-heads (exact; resume + pack)", exact, exact_s);
  row("attribute-heads (attribution patching)", approx, approx_s);
  std::printf("\nspeed-up: %.1fx; one patched forward per head would be %lld forwards\n",
              exact_s / approx_s, static_cast<long long>(cfg.n_layers * cfg.n_heads + 2));
  const torch::Tensor e = exact.outputs[0].mean, a = approx.outputs[0].mean;
  std::printf(
      "agreement of the [12, 12] mean deltas (random weights, so tiny effects): Pearson %.3f, "
      "Spearman %.3f, max |exact| %.2e, max |attribution - exact| %.2e\n",
      Pearson(a, e), Pearson(Ranks(a), Ranks(e)), e.abs().max().item<double>(),
      (a - e).abs().max().item<double>());
  return 0;
}

}  // namespace
}  // namespace lensgrid

int main(int argc, char** argv) {
  lensgrid::EnsureOpenBlasCoreType(argv);
  return lensgrid::Main(argc, argv);
}
