#include "worker/model/weights.h"

#include <sys/stat.h>
#include <torch/torch.h>

#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/checkpoint_files.h"
#include "common/safetensors.h"
#include "common/sha256.h"
#include "common/status_macros.h"
#include "worker/model/tensor_io.h"

namespace lensgrid {
namespace {

std::string Shape(const std::vector<int64_t>& s) {
  return absl::StrCat("[", absl::StrJoin(s, ", "), "]");
}

bool IsFloating(TensorDType dtype) {
  return dtype == TensorDType::kF32 || dtype == TensorDType::kF16 || dtype == TensorDType::kBF16 ||
         dtype == TensorDType::kF64;
}

// Reads HF tensors by name from a checkpoint's files (one, or the shards its
// index maps each tensor to), tracking which were used, and converts to F32.
class HfTensorReader {
 public:
  static absl::StatusOr<HfTensorReader> Open(const Checkpoint& checkpoint) {
    HfTensorReader r;
    r.where_ = checkpoint.Describe();
    std::map<std::string, const SafetensorsFile*> by_file;
    for (const std::string& file : checkpoint.files) {
      LG_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> opened,
                          SafetensorsFile::Open(checkpoint.Path(file)));
      by_file[file] = opened.get();
      r.files_.push_back(std::move(opened));
    }
    if (!checkpoint.sharded()) {
      for (const auto& e : r.files_.front()->entries())
        r.tensors_[e.name] = {r.files_[0].get(), &e};
      return r;
    }
    // The index says where each tensor is; each must be there.
    for (const auto& [name, file] : checkpoint.weight_map) {
      const SafetensorsFile* f = by_file.at(file);
      const SafetensorsEntry* e = f->Find(name);
      if (e == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat(r.where_, " maps tensor \"", name, "\" to ",
                                                       file, ", which has no such tensor"));
      }
      r.tensors_[name] = {f, e};
    }
    return r;
  }

  bool Has(const std::string& name) const { return Find(name) != nullptr; }

  absl::StatusOr<torch::Tensor> Get(const std::string& name, const std::vector<int64_t>& expected) {
    const Source* s = Find(name);
    if (s == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(where_, ": missing tensor \"", name,
                                                     "\" (expected shape ", Shape(expected), ")"));
    }
    const SafetensorsEntry& e = *s->entry;
    if (e.shape != expected) {
      return absl::InvalidArgumentError(absl::StrCat(s->file->path(), ": tensor \"", e.name,
                                                     "\" has shape ", Shape(e.shape), ", expected ",
                                                     Shape(expected), " for this config"));
    }
    if (!IsFloating(e.dtype)) {
      return absl::InvalidArgumentError(absl::StrCat(s->file->path(), ": tensor \"", e.name,
                                                     "\": dtype ", DTypeName(e.dtype),
                                                     " is not a floating type"));
    }
    used_.insert(e.name);
    LG_ASSIGN_OR_RETURN(torch::Tensor t, TensorFromEntry(*s->file, e));
    return t.to(torch::kFloat32);
  }

  std::vector<std::string> Unused() const {
    std::vector<std::string> out;
    for (const auto& [name, source] : tensors_) {
      if (used_.count(name)) continue;
      if (absl::EndsWith(name, ".attn.bias") || absl::EndsWith(name, ".attn.masked_bias")) {
        continue;  // HF's causal-mask buffers
      }
      out.push_back(name);
    }
    return out;
  }

 private:
  struct Source {
    const SafetensorsFile* file;
    const SafetensorsEntry* entry;
  };
  HfTensorReader() = default;

  const Source* Find(const std::string& name) const {
    for (const std::string& key : {"transformer." + name, name}) {
      auto it = tensors_.find(key);
      if (it != tensors_.end()) return &it->second;
    }
    return nullptr;
  }

  std::string where_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;  // mapped while the reader lives
  std::map<std::string, Source> tensors_;
  std::set<std::string> used_;
};

absl::StatusOr<LayerNormWeights> ReadLayerNorm(HfTensorReader& r, const std::string& prefix,
                                               int64_t d_model) {
  LayerNormWeights ln;
  LG_ASSIGN_OR_RETURN(ln.w, r.Get(prefix + ".weight", {d_model}));
  LG_ASSIGN_OR_RETURN(ln.b, r.Get(prefix + ".bias", {d_model}));
  return ln;
}

absl::StatusOr<BlockWeights> ReadBlock(HfTensorReader& r, const HookedTransformerConfig& cfg,
                                       int64_t layer) {
  const int64_t d = cfg.d_model, h = cfg.n_heads, dh = cfg.d_head;
  const std::string p = absl::StrCat("h.", layer, ".");
  BlockWeights b;
  LG_ASSIGN_OR_RETURN(b.ln1, ReadLayerNorm(r, p + "ln_1", d));
  // Conv1D: y = x @ W + b with W [in, out]; c_attn's out is (q|k|v, head, d_head).
  LG_ASSIGN_OR_RETURN(torch::Tensor c_attn_w, r.Get(p + "attn.c_attn.weight", {d, 3 * d}));
  LG_ASSIGN_OR_RETURN(torch::Tensor c_attn_b, r.Get(p + "attn.c_attn.bias", {3 * d}));
  torch::Tensor w = c_attn_w.view({d, 3, h, dh}).permute({1, 2, 0, 3});  // [3, h, d, dh]
  torch::Tensor bias = c_attn_b.view({3, h, dh});
  b.W_Q = w[0].contiguous();
  b.W_K = w[1].contiguous();
  b.W_V = w[2].contiguous();
  b.b_Q = bias[0].contiguous();
  b.b_K = bias[1].contiguous();
  b.b_V = bias[2].contiguous();
  LG_ASSIGN_OR_RETURN(torch::Tensor c_proj_w, r.Get(p + "attn.c_proj.weight", {d, d}));
  b.W_O = c_proj_w.view({h, dh, d}).contiguous();
  LG_ASSIGN_OR_RETURN(b.b_O, r.Get(p + "attn.c_proj.bias", {d}));
  if (cfg.attn_only) return b;
  LG_ASSIGN_OR_RETURN(b.ln2, ReadLayerNorm(r, p + "ln_2", d));
  LG_ASSIGN_OR_RETURN(b.W_in, r.Get(p + "mlp.c_fc.weight", {d, cfg.d_mlp}));
  LG_ASSIGN_OR_RETURN(b.b_in, r.Get(p + "mlp.c_fc.bias", {cfg.d_mlp}));
  LG_ASSIGN_OR_RETURN(b.W_out, r.Get(p + "mlp.c_proj.weight", {cfg.d_mlp, d}));
  LG_ASSIGN_OR_RETURN(b.b_out, r.Get(p + "mlp.c_proj.bias", {d}));
  return b;
}

}  // namespace

absl::StatusOr<GPT2Weights> LoadHfCheckpoint(const Checkpoint& checkpoint,
                                             const HookedTransformerConfig& cfg,
                                             LoadReport* report) {
  LG_ASSIGN_OR_RETURN(HfTensorReader r, HfTensorReader::Open(checkpoint));
  torch::NoGradGuard no_grad;
  GPT2Weights w;
  const int64_t d = cfg.d_model;
  try {
    LG_ASSIGN_OR_RETURN(w.W_E, r.Get("wte.weight", {cfg.d_vocab, d}));
    LG_ASSIGN_OR_RETURN(w.W_pos, r.Get("wpe.weight", {cfg.n_ctx, d}));
    for (int64_t layer = 0; layer < cfg.n_layers; ++layer) {
      LG_ASSIGN_OR_RETURN(BlockWeights block, ReadBlock(r, cfg, layer));
      w.blocks.push_back(std::move(block));
    }
    LG_ASSIGN_OR_RETURN(w.ln_final, ReadLayerNorm(r, "ln_f", d));
    // lm_head sits outside "transformer." in GPT2LMHeadModel; absent = tied.
    bool tied = !r.Has("lm_head.weight");
    if (tied) {
      w.W_U = w.W_E.t().contiguous();
    } else {
      LG_ASSIGN_OR_RETURN(torch::Tensor lm_head, r.Get("lm_head.weight", {cfg.d_vocab, d}));
      w.W_U = lm_head.t().contiguous();
    }
    w.b_U = torch::zeros({cfg.d_vocab});
    if (report != nullptr) {
      report->lm_head_tied = tied;
      report->unknown_tensors = r.Unused();
      report->sharded = checkpoint.sharded();
      LG_ASSIGN_OR_RETURN(report->weights_sha256, CheckpointSha256(checkpoint));
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("loading ", checkpoint.Describe(), ": ", e.what_without_backtrace()));
  }
  return w;
}

absl::StatusOr<GPT2Weights> LoadHfWeights(const std::string& safetensors_path,
                                          const HookedTransformerConfig& cfg, LoadReport* report) {
  Checkpoint one;
  const size_t slash = safetensors_path.rfind('/');
  one.dir = slash == std::string::npos ? "." : safetensors_path.substr(0, slash);
  one.files = {slash == std::string::npos ? safetensors_path : safetensors_path.substr(slash + 1)};
  return LoadHfCheckpoint(one, cfg, report);
}

absl::StatusOr<GPT2Weights> LoadHfModelDir(const std::string& model_dir,
                                           const HookedTransformerConfig& cfg, LoadReport* report) {
  LG_ASSIGN_OR_RETURN(Checkpoint checkpoint, FindCheckpoint(model_dir));
  return LoadHfCheckpoint(checkpoint, cfg, report);
}

GPT2Weights RandomWeights(const HookedTransformerConfig& cfg, uint64_t seed) {
  torch::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto normal = [&](std::vector<int64_t> shape, double std) {
    return at::normal(0.0, std, shape, gen);
  };
  const int64_t d = cfg.d_model, h = cfg.n_heads, dh = cfg.d_head;
  auto ln = [&] { return LayerNormWeights{torch::ones({d}), torch::zeros({d})}; };
  GPT2Weights w;
  w.W_E = normal({cfg.d_vocab, d}, 0.02);
  w.W_pos = normal({cfg.n_ctx, d}, 0.01);
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    BlockWeights b;
    b.ln1 = ln();
    b.W_Q = normal({h, d, dh}, 0.02);
    b.W_K = normal({h, d, dh}, 0.02);
    b.W_V = normal({h, d, dh}, 0.02);
    b.b_Q = torch::zeros({h, dh});
    b.b_K = torch::zeros({h, dh});
    b.b_V = torch::zeros({h, dh});
    b.W_O = normal({h, dh, d}, 0.02 / std::sqrt(2.0 * cfg.n_layers));
    b.b_O = torch::zeros({d});
    if (!cfg.attn_only) {
      b.ln2 = ln();
      b.W_in = normal({d, cfg.d_mlp}, 0.02);
      b.b_in = torch::zeros({cfg.d_mlp});
      b.W_out = normal({cfg.d_mlp, d}, 0.02 / std::sqrt(2.0 * cfg.n_layers));
      b.b_out = torch::zeros({d});
    }
    w.blocks.push_back(std::move(b));
  }
  w.ln_final = ln();
  w.W_U = w.W_E.t();  // tied, as GPT-2
  w.b_U = torch::zeros({cfg.d_vocab});
  return w;
}

absl::Status SaveHfCheckpoint(const GPT2Weights& w, const HookedTransformerConfig& cfg,
                              const std::string& dir, bool f16) {
  if (w.ln_final.folded()) {
    return absl::FailedPreconditionError(
        "cannot save processed (LayerNorm-folded) weights as a Hugging Face checkpoint");
  }
  ::mkdir(dir.c_str(), 0755);
  torch::NoGradGuard no_grad;
  const int64_t d = cfg.d_model;
  std::vector<std::pair<std::string, torch::Tensor>> named;
  auto add = [&](std::string name, const torch::Tensor& t) {
    named.emplace_back(
        std::move(name),
        t.detach().to(torch::kCPU).to(f16 ? torch::kFloat16 : torch::kFloat32).contiguous());
  };
  add("transformer.wte.weight", w.W_E);
  add("transformer.wpe.weight", w.W_pos);
  for (size_t l = 0; l < w.blocks.size(); ++l) {
    const BlockWeights& b = w.blocks[l];
    const std::string p = absl::StrCat("transformer.h.", l, ".");
    add(p + "ln_1.weight", b.ln1.w);
    add(p + "ln_1.bias", b.ln1.b);
    // [h, d, dh] x3 -> [d, 3, h, dh] -> [d, 3d]
    torch::Tensor qkv = torch::stack({b.W_Q, b.W_K, b.W_V}).permute({2, 0, 1, 3});
    add(p + "attn.c_attn.weight", qkv.reshape({d, 3 * d}));
    add(p + "attn.c_attn.bias", torch::stack({b.b_Q, b.b_K, b.b_V}).reshape({3 * d}));
    add(p + "attn.c_proj.weight", b.W_O.reshape({d, d}));
    add(p + "attn.c_proj.bias", b.b_O);
    if (cfg.attn_only) continue;
    add(p + "ln_2.weight", b.ln2.w);
    add(p + "ln_2.bias", b.ln2.b);
    add(p + "mlp.c_fc.weight", b.W_in);
    add(p + "mlp.c_fc.bias", b.b_in);
    add(p + "mlp.c_proj.weight", b.W_out);
    add(p + "mlp.c_proj.bias", b.b_out);
  }
  add("transformer.ln_f.weight", w.ln_final.w);
  add("transformer.ln_f.bias", w.ln_final.b);
  if (!w.W_U.t().equal(w.W_E)) add("lm_head.weight", w.W_U.t());
  std::vector<SafetensorsTensorView> views;
  for (const auto& [name, t] : named) {
    views.push_back({name, f16 ? TensorDType::kF16 : TensorDType::kF32,
                     std::vector<int64_t>(t.sizes().begin(), t.sizes().end()), t.data_ptr(),
                     static_cast<size_t>(t.nbytes())});
  }
  LG_RETURN_IF_ERROR(WriteSafetensors(dir + "/model.safetensors", views, {{"format", "pt"}}));
  std::ofstream cfg_out(dir + "/config.json");
  cfg_out << ModelConfigToHfJson(cfg);
  if (!cfg_out)
    return absl::PermissionDeniedError(absl::StrCat("cannot write ", dir, "/config.json"));
  return absl::OkStatus();
}

}  // namespace lensgrid
