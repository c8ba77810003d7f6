// The exact head zero-ablation sweep (144 heads x 16 prompts x 16 tokens, GPT-2
// small dims, random weights): lensgrid's fast path, lensgrid's naive loop (one
// full forward per head), and eager PyTorch with forward hooks
// (bench/ablation_sweep_torch.py, Debian's python3-torch), in one run.
//
//   build/bench/ablation_bench [--prompts 16] [--pos 16] [--skip-naive]
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>

#include "bench/random_prompts.h"
#include "bench/torch_peer.h"
#include "common/openblas_env.h"
#include "worker/model/analysis/search.h"
#include "worker/model/cpu_threads.h"

namespace lensgrid {
namespace {

double Seconds(const std::function<void()>& f) {
  auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The OpenBLAS kernels lensgrid runs with: the value in the environment, or
// the one EnsureOpenBlasCoreType would choose ("" = OpenBLAS's own pick).
std::string OurCoreType() {
  if (const char* set = std::getenv("OPENBLAS_CORETYPE")) return set;
  return ChooseOpenBlasCoreType(DetectCpuFeatures()).value_or("");
}

// Runs the PyTorch baseline with OPENBLAS_CORETYPE = `core_type` (unset when
// empty) and returns its seconds (or -1).
double TorchSeconds(const HookedTransformerConfig& cfg, int64_t prompts, int64_t pos,
                    const std::string& core_type) {
  return TorchPeerSeconds(
      cfg, prompts, pos, "",
      core_type.empty() ? "env -u OPENBLAS_CORETYPE " : "env OPENBLAS_CORETYPE=" + core_type + " ");
}

int Main(int argc, char** argv) {
  int64_t prompts = 16, pos = 16;
  bool skip_naive = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--prompts") == 0 && i + 1 < argc)
      prompts = std::stoll(argv[++i]);
    else if (std::strcmp(argv[i], "--pos") == 0 && i + 1 < argc)
      pos = std::stoll(argv[++i]);
    else if (std::strcmp(argv[i], "--skip-naive") == 0)
      skip_naive = true;
  }
  ConfigureCpuThreads(0);
  HookedTransformerConfig cfg = ModelConfigPreset("gpt2").value();
  GPT2Weights w = RandomWeights(cfg, 0);
  ProcessWeights(ProcessingOptions{}, cfg, &w);
  auto model = HookedTransformer::FromWeights(cfg, w).value();
  const Dataset ds = RandomPrompts(cfg, prompts, pos, /*corrupted=*/false);
  SearchSpec spec{Method::kAblateHeads, MetricKind::kLogitDiff, AblationKind::kZero};
  const double work = static_cast<double>(cfg.n_layers * cfg.n_heads * prompts);
  std::printf(
      "head zero-ablation sweep: %lld heads x %lld prompts x %lld tokens, GPT-2 small "
      "dims, random weights, %d BLAS threads\n\n",
      static_cast<long long>(cfg.n_layers * cfg.n_heads), static_cast<long long>(prompts),
      static_cast<long long>(pos), BlasThreads());
  RunSearch(*model, ds, spec).value();  // warm-up
  SearchResult fast_result;
  double fast = Seconds([&] { fast_result = RunSearch(*model, ds, spec).value(); });
  double naive = -1;
  if (!skip_naive) {
    SearchOptions o;
    o.naive = true;
    SearchResult naive_result;
    naive = Seconds([&] { naive_result = RunSearch(*model, ds, spec, o).value(); });
    double diff =
        (fast_result.outputs[0].mean - naive_result.outputs[0].mean).abs().max().item<double>();
    std::printf("fast vs naive: max |diff| of the [12, 12] result = %.2e (max |delta| %.2e)\n",
                diff, fast_result.outputs[0].mean.abs().max().item<double>());
  }
  // The fair peer gets the same GEMM kernels as lensgrid; Debian's default pick
  // (SSE3 "Prescott" on some Xeons) is shown for reference only.
  const std::string core = OurCoreType();
  double torch_s = TorchSeconds(cfg, prompts, pos, core);
  double torch_default_s = core.empty() ? torch_s : TorchSeconds(cfg, prompts, pos, "");
  std::printf("\nOpenBLAS kernels: lensgrid and the fair PyTorch peer: %s\n",
              core.empty() ? "OpenBLAS's own choice" : core.c_str());
  std::printf("\n%-44s %10s %22s %18s\n", "implementation", "seconds", "head x prompt / s",
              "vs fair PyTorch");
  auto row = [&](const char* name, double s) {
    if (s <= 0) {
      std::printf("%-44s %10s\n", name, "n/a");
      return;
    }
    std::printf("%-44s %10.2f %22.1f %17.2fx\n", name, s, work / s,
                torch_s > 0 ? torch_s / s : 0.0);
  };
  if (!core.empty()) row("PyTorch eager + hooks, Debian's default BLAS", torch_default_s);
  row("PyTorch eager + hooks, same kernels (fair)", torch_s);
  row("lensgrid naive (1 forward / head)", naive);
  row("lensgrid fast (resume + pack)", fast);
  return 0;
}

}  // namespace
}  // namespace lensgrid

int main(int argc, char** argv) {
  lensgrid::EnsureOpenBlasCoreType(argv);
  return lensgrid::Main(argc, argv);
}
