// Helpers shared by the model tests: temp dirs, the Python reference, tensor
// comparison with a useful failure message.
#ifndef LENSGRID_TESTS_WORKER_MODEL_TEST_UTIL_H_
#define LENSGRID_TESTS_WORKER_MODEL_TEST_UTIL_H_

#include <torch/torch.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "worker/model/analysis/dataset.h"
#include "worker/model/config.h"
#include "worker/model/hooked_transformer.h"
#include "worker/model/processing.h"
#include "worker/model/weights.h"

namespace lensgrid::testing {

inline std::string SourceDir() {
  const char* d = std::getenv("LENSGRID_SOURCE_DIR");
  return d != nullptr ? d : ".";
}

inline std::string Python() {
  const char* p = std::getenv("LENSGRID_PYTHON");
  return p != nullptr ? p : "/usr/bin/python3";
}

// A fresh directory under the test's temp dir.
inline std::string MakeTempDir(const std::string& name) {
  std::string dir = ::testing::TempDir() + "/lensgrid_" + name;
  std::system(("rm -rf '" + dir + "' && mkdir -p '" + dir + "'").c_str());
  return dir;
}

// Runs the independent Python reference (tests/reference/hf_gpt2.py).
inline void RunReference(const std::string& out_dir, const std::string& args) {
  std::string cmd = absl::StrCat(Python(), " ", SourceDir(), "/tests/reference/hf_gpt2.py --out '",
                                 out_dir, "' ", args, " > '", out_dir, "/reference.log' 2>&1");
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "reference failed: " << cmd;
}

// A small GPT-2-family config; BOS/EOS are the last token.
inline HookedTransformerConfig TestConfig(int64_t layers, int64_t heads, int64_t d_model,
                                          int64_t d_mlp, int64_t n_ctx, int64_t vocab) {
  HookedTransformerConfig cfg;
  cfg.n_layers = layers;
  cfg.n_heads = heads;
  cfg.d_model = d_model;
  cfg.d_head = d_model / heads;
  cfg.d_mlp = d_mlp;
  cfg.n_ctx = n_ctx;
  cfg.d_vocab = vocab;
  cfg.bos_token_id = cfg.eos_token_id = vocab - 1;
  return cfg;
}

// A prompt with one answer, one wrong token and a corrupted version.
inline Prompt TestPrompt(std::vector<int64_t> tokens, int64_t answer, int64_t wrong,
                         std::vector<int64_t> corrupted) {
  Prompt p;
  p.tokens = std::move(tokens);
  p.answers = {answer};
  p.wrongs = {wrong};
  p.corrupted_tokens = std::move(corrupted);
  return p;
}

// Every defined weight in float64 (the circuit tests compare methods, not float32 rounding).
inline void WeightsToDouble(GPT2Weights* w) {
  auto d = [](at::Tensor* t) {
    if (t->defined()) *t = t->to(torch::kFloat64);
  };
  for (at::Tensor* t : {&w->W_E, &w->W_pos, &w->W_U, &w->b_U, &w->ln_final.w, &w->ln_final.b}) {
    d(t);
  }
  for (auto& b : w->blocks) {
    for (at::Tensor* t : {&b.ln1.w, &b.ln1.b, &b.ln2.w, &b.ln2.b, &b.W_Q, &b.W_K, &b.W_V, &b.b_Q,
                          &b.b_K, &b.b_V, &b.W_O, &b.b_O, &b.W_in, &b.b_in, &b.W_out, &b.b_out}) {
      d(t);
    }
  }
}

// The circuit tests' model: random weights of `cfg` with sharp attention and large embeddings
// (W_Q, W_K and W_E x `scale`; W_O and W_out x 10, so that every edge matters), processed, in
// float64.
inline std::shared_ptr<HookedTransformer> CircuitTestModel(const HookedTransformerConfig& cfg,
                                                           uint64_t seed, double scale) {
  torch::manual_seed(seed);
  GPT2Weights w = RandomWeights(cfg, seed);
  for (auto& b : w.blocks) {
    b.W_Q = b.W_Q * scale;
    b.W_K = b.W_K * scale;
    b.W_O = b.W_O * 10;
    if (b.W_out.defined()) b.W_out = b.W_out * 10;
  }
  w.W_E = w.W_E * scale;
  ProcessWeights(ProcessingOptions{}, cfg, &w);
  WeightsToDouble(&w);
  return HookedTransformer::FromWeights(cfg, w).value();
}

inline ::testing::AssertionResult AllClose(const torch::Tensor& actual,
                                           const torch::Tensor& expected, double atol,
                                           const std::string& what) {
  if (actual.sizes() != expected.sizes()) {
    return ::testing::AssertionFailure()
           << what << ": shape " << actual.sizes() << " vs expected " << expected.sizes();
  }
  torch::Tensor diff = (actual.to(torch::kFloat64) - expected.to(torch::kFloat64)).abs();
  double max_diff = diff.numel() == 0 ? 0.0 : diff.max().item<double>();
  if (max_diff > atol || std::isnan(max_diff)) {
    return ::testing::AssertionFailure() << what << ": max |diff| " << max_diff << " > " << atol;
  }
  return ::testing::AssertionSuccess();
}

}  // namespace lensgrid::testing

#endif  // LENSGRID_TESTS_WORKER_MODEL_TEST_UTIL_H_
