// What hook programs cost: a plain forward on GPT-2-small dimensions (random
// weights) against the same forward with a 20-node program on every block's
// resid_post (12 programs, 240 nodes), and the time to check the programs.
// Numbers, not pass/fail.
//
//   build/bench/program_bench [--iters N] [--threads N] [--no-openblas-fix]
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/timing.h"
#include "common/openblas_env.h"
#include "worker/model/cpu_threads.h"
#include "worker/model/hook_program.h"
#include "worker/model/hooked_transformer.h"

namespace lensgrid {
namespace {

using P = ProgramNodeSpec;

// 20 nodes: remove a direction from the residual stream where its norm is
// large, rescale what is left to the old norm, record two statistics.
HookProgramSpec TwentyNodes(const std::string& hook, const torch::Tensor& direction) {
  HookProgramSpec p;
  p.hook = hook;
  p.nodes = {
      P::Activation("x"),
      P::Literal("d", direction),
      P::Op("out", ProgramOp::kProjectOut, {"x", "d"}),
      P::Reduce("n_x", ProgramOp::kNorm, "x", {-1}, true),
      P::Reduce("n_out", ProgramOp::kNorm, "out", {-1}, true),
      P::Constant("eps", 1e-6),
      P::Op("den", ProgramOp::kAdd, {"n_out", "eps"}),
      P::Op("ratio", ProgramOp::kDiv, {"n_x", "den"}),
      P::Op("rescaled", ProgramOp::kMul, {"out", "ratio"}),
      P::Reduce("mean_norm", ProgramOp::kMean, "n_x", {}),
      P::Op("big", ProgramOp::kGt, {"n_x", "mean_norm"}),
      P::Op("mixed", ProgramOp::kWhere, {"big", "rescaled", "x"}),
      P::Index("last", "mixed", {All(), At(-1)}),
      P::Constant("half", 0.5),
      P::Op("damped", ProgramOp::kMul, {"last", "half"}),
      P::Write("written", "mixed", "damped", {All(), At(-1)}),
      P::Op("delta", ProgramOp::kSub, {"written", "x"}),
      P::Reduce("change", ProgramOp::kNorm, "delta", {}),
      P::Reduce("peak", ProgramOp::kMax, "n_x", {}),
      P::Op("abs", ProgramOp::kAbs, {"written"}),
  };
  p.output = "written";
  p.saves = {{absl::StrCat(hook, ".change"), "change"}, {absl::StrCat(hook, ".peak"), "peak"}};
  return p;
}

int Main(int argc, char** argv) {
  int iters = 10, threads = 0;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--iters") == 0) iters = std::atoi(argv[++i]);
    if (std::strcmp(argv[i], "--threads") == 0) threads = std::atoi(argv[++i]);
  }
  ConfigureCpuThreads(threads);
  HookedTransformerConfig cfg = ModelConfigPreset("gpt2").value();
  auto model = HookedTransformer::FromWeights(cfg, RandomWeights(cfg, 0)).value();
  torch::manual_seed(0);
  const torch::Tensor direction = torch::randn({cfg.d_model});
  std::printf("program_bench: GPT-2-small dims, random weights, %d threads, median of %d\n",
              torch::get_num_threads(), iters);
  std::printf("%-8s %12s %16s %10s %14s\n", "input", "plain ms", "12 programs ms", "overhead",
              "check ms");
  for (auto [batch, pos] : {std::pair<int64_t, int64_t>{16, 16}, {1, 128}}) {
    ForwardInput in;
    in.tokens = torch::randint(0, cfg.d_vocab, {batch, pos}, torch::kInt64);
    ProgramEnv env;
    ActivationCache shapes;
    CacheOptions all;
    ForwardOptions none;
    none.return_type = ForwardReturn::kNone;
    model->RunWithCache(in, none, all, &shapes).value();
    for (const std::string& name : model->hook_names()) {
      env.hook_shapes.push_back(shapes.Get(name).value().sizes().vec());
    }
    std::vector<HookProgramSpec> programs;
    for (int64_t layer = 0; layer < cfg.n_layers; ++layer) {
      programs.push_back(
          TwentyNodes(absl::StrCat("blocks.", layer, ".hook_resid_post"), direction));
    }
    ProgramPlan plan;
    const double check = MedianSeconds(iters, [&] {
      plan = ProgramPlan::Compile(programs, *model, env, ProgramLimits{}).value();
    });
    const double plain = MedianSeconds(iters, [&] { model->Run(in, {}).value(); });
    const double with = MedianSeconds(iters, [&] {
      auto values = std::make_shared<ProgramValues>();
      model->Run(in, {}, plan.MakeHooks(nullptr, values)).value();
    });
    std::printf("%-8s %12.2f %16.2f %9.1f%% %14.3f\n", absl::StrCat(batch, "x", pos).c_str(),
                plain * 1e3, with * 1e3, 100.0 * (with - plain) / plain, check * 1e3);
  }
  return 0;
}

}  // namespace
}  // namespace lensgrid

int main(int argc, char** argv) {
  bool fix = true;
  for (int i = 1; i < argc; ++i) fix = fix && std::strcmp(argv[i], "--no-openblas-fix") != 0;
  if (fix) lensgrid::EnsureOpenBlasCoreType(argv);
  return lensgrid::Main(argc, argv);
}
