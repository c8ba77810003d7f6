// The eager-PyTorch peer of the benches (bench/ablation_sweep_torch.py, run by
// Debian's python3-torch on a model of the same shape): one run, its seconds.
#ifndef LENSGRID_BENCH_TORCH_PEER_H_
#define LENSGRID_BENCH_TORCH_PEER_H_

#include <cstdio>
#include <string>

#include "worker/model/config.h"

#ifndef LENSGRID_SOURCE_DIR
#define LENSGRID_SOURCE_DIR "."
#endif

namespace lensgrid {

// Runs the script on `cfg`'s shape with [batch, pos] prompts and `extra`
// arguments, under `env` ("env OPENBLAS_CORETYPE=X " or ""), and returns the
// `seconds=` it prints (-1 when it could not run).
inline double TorchPeerSeconds(const HookedTransformerConfig& cfg, int64_t batch, int64_t pos,
                               const std::string& extra, const std::string& env = "") {
  const std::string cmd =
      env + "/usr/bin/python3 " + LENSGRID_SOURCE_DIR + "/bench/ablation_sweep_torch.py --layers " +
      std::to_string(cfg.n_layers) + " --heads " + std::to_string(cfg.n_heads) + " --d-model " +
      std::to_string(cfg.d_model) + " --vocab " + std::to_string(cfg.d_vocab) + " --batch " +
      std::to_string(batch) + " --pos " + std::to_string(pos) + " " + extra;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return -1;
  double seconds = -1;
  char line[256];
  while (fgets(line, sizeof(line), pipe) != nullptr) std::sscanf(line, "seconds=%lf", &seconds);
  pclose(pipe);
  return seconds;
}

}  // namespace lensgrid

#endif  // LENSGRID_BENCH_TORCH_PEER_H_
