// Forward-pass throughput on GPT-2-small dimensions (random weights), next to
// the machine's fp32 GEMM peak measured in the same run and eager PyTorch's
// forward of the same shapes on the same OpenBLAS kernels
// (bench/ablation_sweep_torch.py --forward-iters, Debian's python3-torch).
// Numbers, not pass/fail.
//
//   build/bench/forward_bench [--iters N] [--threads N] [--no-openblas-fix]
//
// --no-openblas-fix keeps OpenBLAS's own kernel choice (see common/openblas_env.h).
#include <dlfcn.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "bench/timing.h"
#include "bench/torch_peer.h"
#include "common/openblas_env.h"
#include "worker/model/cpu_threads.h"
#include "worker/model/hooked_transformer.h"

namespace lensgrid {
namespace {

// The kernel set OpenBLAS chose, when the BLAS in use is OpenBLAS.
std::string BlasCoreName() {
  using CoreName = char* (*)();
  auto fn = reinterpret_cast<CoreName>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  return fn != nullptr ? fn() : "not OpenBLAS";
}

// Best fp32 GEMM rate over shapes like the model's own.
double GemmPeakFlops(int iters) {
  torch::NoGradGuard no_grad;
  double best = 0;
  for (auto [m, k, n] : {std::tuple{2048, 768, 3072}, std::tuple{2048, 3072, 768},
                         std::tuple{1024, 1024, 1024}, std::tuple{2048, 768, 2304}}) {
    auto a = torch::randn({m, k}), b = torch::randn({k, n});
    double s = MedianSeconds(iters, [&] { torch::mm(a, b); });
    best = std::max(best, 2.0 * m * k * n / s);
  }
  return best;
}

// Matmul FLOPs of one forward: the GEMMs of every block (QKV, O, MLP in/out),
// attention scores and mixing (full square, as computed), and the unembed.
double ForwardFlops(const HookedTransformerConfig& c, int64_t batch, int64_t pos) {
  double tokens = static_cast<double>(batch * pos);
  double per_layer = 2.0 * tokens * (4.0 * c.d_model * c.d_model + 2.0 * c.d_model * c.d_mlp) +
                     2.0 * 2.0 * batch * pos * pos * c.d_model;
  return c.n_layers * per_layer + 2.0 * tokens * c.d_model * c.d_vocab;
}

int Main(int argc, char** argv) {
  int iters = 10;
  int threads = static_cast<int>(std::thread::hardware_concurrency());
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--iters") == 0)
      iters = std::stoi(argv[++i]);
    else if (std::strcmp(argv[i], "--threads") == 0)
      threads = std::stoi(argv[++i]);
  }
  ConfigureCpuThreads(threads);
  HookedTransformerConfig cfg = ModelConfigPreset("gpt2").value();
  GPT2Weights w = RandomWeights(cfg, 0);
  ProcessWeights(ProcessingOptions{}, cfg, &w);
  auto model = HookedTransformer::FromWeights(cfg, w).value();

  double peak = GemmPeakFlops(iters);
  std::printf(
      "lensgrid forward benchmark: GPT-2 small dims (12 layers, d_model 768, vocab 50257),"
      " random weights, %d BLAS threads + 1 LibTorch thread, median of %d\n",
      BlasThreads(), iters);
  std::printf("OpenBLAS kernels: %s\n", BlasCoreName().c_str());
  std::printf("fp32 GEMM peak (torch::mm, best of 4 shapes): %.1f GFLOP/s\n\n", peak / 1e9);
  std::printf("%-8s %-12s %10s %12s %10s %10s %12s\n", "shape", "mode", "ms", "tokens/s", "GFLOP/s",
              "of peak", "cached MB");
  for (auto [batch, pos] : {std::pair<int64_t, int64_t>{1, 128}, {16, 16}}) {
    ForwardInput in;
    in.tokens = torch::randint(cfg.d_vocab, {batch, pos}, torch::kInt64);
    double plain_s = 0;
    for (bool cache_all : {false, true}) {
      ActivationCache cache;
      double s = MedianSeconds(iters, [&] {
        if (cache_all) {
          model->RunWithCache(in, {}, {}, &cache).value();
        } else {
          model->Run(in, {}).value();
        }
      });
      if (!cache_all) plain_s = s;
      double flops = ForwardFlops(cfg, batch, pos) / s;
      std::printf("%-8s %-12s %10.1f %12.0f %10.1f %9.0f%% %12.1f",
                  (std::to_string(batch) + "x" + std::to_string(pos)).c_str(),
                  cache_all ? "full cache" : "plain", s * 1e3, batch * pos / s, flops / 1e9,
                  100.0 * flops / peak, cache.TotalBytes() / 1e6);
      if (cache_all) std::printf("   (+%.0f%% over plain)", 100.0 * (s / plain_s - 1));
      std::printf("\n");
    }
    // Eager PyTorch's plain forward, median of `iters`, same kernels (the
    // environment is inherited).
    const double torch_s =
        TorchPeerSeconds(cfg, batch, pos, "--forward-iters " + std::to_string(iters));
    if (torch_s > 0) {
      const double flops = ForwardFlops(cfg, batch, pos) / torch_s;
      std::printf(
          "%-8s %-12s %10.1f %12.0f %10.1f %9.0f%%   (eager PyTorch, same kernels; "
          "lensgrid plain is %.2fx its speed)\n",
          (std::to_string(batch) + "x" + std::to_string(pos)).c_str(), "PyTorch", torch_s * 1e3,
          batch * pos / torch_s, flops / 1e9, 100.0 * flops / peak, torch_s / plain_s);
    }
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
