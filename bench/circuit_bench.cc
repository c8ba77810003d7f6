// Circuit discovery's costs on GPT-2-small dims (random weights), 16 prompts x 16 tokens: EAP and
// EAP-IG scores for every edge of the graph (wall time, forwards, backwards), and one
// edge-patched forward, the unit of ACDC's evaluations (so an ACDC run costs about
// evaluations x that). Numbers, not pass/fail.
//
//   build/bench/circuit_bench [--prompts 16] [--pos 16] [--ig-steps 5] [--iters 3]
#include <torch/torch.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "bench/random_prompts.h"
#include "bench/timing.h"
#include "common/openblas_env.h"
#include "worker/model/analysis/circuit.h"
#include "worker/model/analysis/edge_patching.h"
#include "worker/model/analysis/prompt_batch.h"
#include "worker/model/cpu_threads.h"
#include "worker/model/processing.h"
#include "worker/model/weights.h"

namespace lensgrid {
namespace {

int Main(int argc, char** argv) {
  int64_t prompts = 16, pos = 16;
  int ig_steps = 5, iters = 3;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--prompts") == 0)
      prompts = std::stoll(argv[++i]);
    else if (std::strcmp(argv[i], "--pos") == 0)
      pos = std::stoll(argv[++i]);
    else if (std::strcmp(argv[i], "--ig-steps") == 0)
      ig_steps = std::stoi(argv[++i]);
    else if (std::strcmp(argv[i], "--iters") == 0)
      iters = std::max(1, std::stoi(argv[++i]));
  }
  ConfigureCpuThreads(0);
  HookedTransformerConfig cfg = ModelConfigPreset("gpt2").value();
  GPT2Weights w = RandomWeights(cfg, 0);
  ProcessWeights(ProcessingOptions{}, cfg, &w);
  auto model = HookedTransformer::FromWeights(cfg, w).value();
  const Dataset ds = RandomPrompts(cfg, prompts, pos, /*corrupted=*/true);
  const CircuitGraph graph = CircuitGraphOf(cfg);
  std::printf(
      "circuit discovery on GPT-2 small dims (random weights): %zu edges, %lld prompts x %lld "
      "tokens, median of %d\n\n",
      graph.edges().size(), static_cast<long long>(prompts), static_cast<long long>(pos), iters);
  std::printf("%-34s %9s %10s %10s\n", "what", "forwards", "backwards", "seconds");
  for (int steps : {0, ig_steps}) {
    EdgeAttributionOptions o;
    o.ig_steps = steps;
    EdgeScores scores;
    const double s =
        MedianSeconds(iters, [&] { scores = EdgeAttribution(*model, ds, graph, o).value(); });
    const std::string what =
        steps == 0 ? "EAP, every edge" : "EAP-IG (" + std::to_string(steps) + " steps), every edge";
    std::printf("%-34s %9lld %10lld %10.2f\n", what.c_str(),
                static_cast<long long>(scores.counts.forwards),
                static_cast<long long>(scores.counts.backwards), s);
  }
  // One ACDC evaluation: the batch with one edge corrupted.
  EdgePatcher patcher = EdgePatcher::Create(*model, graph).value();
  PromptBatch batch = MakePromptBatch(ds, 0, prompts, true, cfg.d_vocab, cfg.bos_token_id).value();
  ForwardOptions opts;
  opts.logit_positions = torch::full({prompts}, batch.pos - 1, torch::kInt64);
  CacheOptions senders;
  senders.names = SenderHooks(cfg);
  ActivationCache corrupted;
  model->RunWithCache(batch.corrupted, opts, senders, &corrupted).value();
  const torch::Tensor corrupted_senders = SenderValues(*model, corrupted).value();
  std::vector<bool> mask(graph.edges().size(), false);
  mask[graph.FindEdge("L0H1 -> L1H1.k").value()] = true;
  const double plain = MedianSeconds(iters, [&] { model->Run(batch.clean, opts).value(); });
  const double patched = MedianSeconds(
      iters, [&] { patcher.Run(batch.clean, opts, corrupted_senders, mask).value(); });
  std::printf("%-34s %9d %10d %10.3f\n", "plain forward (for scale)", 1, 0, plain);
  std::printf("%-34s %9d %10d %10.3f\n", "edge-patched forward (ACDC unit)", 1, 0, patched);
  return 0;
}

}  // namespace
}  // namespace lensgrid

int main(int argc, char** argv) {
  lensgrid::EnsureOpenBlasCoreType(argv);
  return lensgrid::Main(argc, argv);
}
