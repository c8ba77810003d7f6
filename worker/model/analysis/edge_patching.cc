#include "worker/model/analysis/edge_patching.h"

#include <torch/torch.h>

#include <array>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/model/analysis/metrics.h"
#include "worker/model/analysis/prompt_batch.h"

namespace lensgrid {
namespace {

std::string BlockHook(int64_t layer, const char* name) {
  return absl::StrCat("blocks.", layer, ".", name);
}

// LN(x) = (x - mean) / sqrt(var + eps) * w + b, as worker/model/layer_norm.cc (w, b undefined
// when folded).
torch::Tensor LayerNormOf(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b,
                          double eps) {
  const torch::Tensor centered = x - x.mean(-1, true);
  torch::Tensor n = centered / (centered.pow(2).mean(-1, true) + eps).sqrt();
  if (w.defined()) n = n * w;
  if (b.defined()) n = n + b;
  return n;
}

}  // namespace

// What the recomputed inputs need, per layer, in float64.
struct EdgePatcher::Weights {
  std::vector<torch::Tensor> W_O;  // [head, d_head, d_model]
  std::vector<std::array<torch::Tensor, 3>> W,
      b;  // q, k, v: [head, d_model, d_head], [head, d_head]
  std::vector<torch::Tensor> ln1_w, ln1_b, ln2_w, ln2_b, W_in, b_in;
  std::vector<int64_t> head_node0;  // node index of each layer's head 0
  std::vector<int64_t> mlp_node;    // node index of each layer's MLP (-1: attention-only)
};

EdgePatcher::EdgePatcher() = default;
EdgePatcher::~EdgePatcher() = default;
EdgePatcher::EdgePatcher(EdgePatcher&&) noexcept = default;
EdgePatcher& EdgePatcher::operator=(EdgePatcher&&) noexcept = default;

std::vector<std::string> SenderHooks(const HookedTransformerConfig& cfg) {
  std::vector<std::string> hooks = {"hook_embed", "hook_pos_embed"};
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    hooks.push_back(BlockHook(l, "attn.hook_z"));
    if (!cfg.attn_only) hooks.push_back(BlockHook(l, "hook_mlp_out"));
  }
  return hooks;
}

absl::StatusOr<at::Tensor> SenderValues(const HookedTransformer& model,
                                        const ActivationCache& cache) {
  const HookedTransformerConfig& cfg = model.cfg();
  LG_ASSIGN_OR_RETURN(torch::Tensor embed, cache.Get("hook_embed"));
  LG_ASSIGN_OR_RETURN(torch::Tensor pos_embed, cache.Get("hook_pos_embed"));
  std::vector<torch::Tensor> parts = {(embed + pos_embed).unsqueeze(2)};
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    LG_ASSIGN_OR_RETURN(torch::Tensor z, cache.Get(BlockHook(l, "attn.hook_z")));
    parts.push_back(torch::einsum("bphe,hem->bphm", {z, model.W_O(static_cast<int>(l))}));
    if (!cfg.attn_only) {
      LG_ASSIGN_OR_RETURN(torch::Tensor mlp, cache.Get(BlockHook(l, "hook_mlp_out")));
      parts.push_back(mlp.unsqueeze(2));
    }
  }
  return torch::cat(parts, 2).to(torch::kFloat64);
}

absl::StatusOr<EdgePatcher> EdgePatcher::Create(const HookedTransformer& model,
                                                const CircuitGraph& graph) {
  const HookedTransformerConfig& cfg = model.cfg();
  if (graph.shape().n_layers != cfg.n_layers || graph.shape().n_heads != cfg.n_heads ||
      graph.shape().attn_only != cfg.attn_only) {
    return absl::FailedPreconditionError("the circuit graph is not this model's");
  }
  // One export of the weights (a copy per block), in float64 on the model's device.
  const GPT2Weights exported = model.ExportWeights();
  auto f64 = [&](const at::Tensor& t) {
    return t.defined() ? t.to(model.device(), torch::kFloat64) : t;
  };
  auto w = std::make_shared<Weights>();
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    const BlockWeights& b = exported.blocks[l];
    w->W_O.push_back(f64(b.W_O));
    w->W.push_back({f64(b.W_Q), f64(b.W_K), f64(b.W_V)});
    w->b.push_back({f64(b.b_Q), f64(b.b_K), f64(b.b_V)});
    w->ln1_w.push_back(f64(b.ln1.w));  // undefined when folded
    w->ln1_b.push_back(f64(b.ln1.b));
    w->head_node0.push_back(graph.HeadNode(static_cast<int>(l), 0));
    w->mlp_node.push_back(cfg.attn_only ? -1 : graph.MlpNode(static_cast<int>(l)));
    if (cfg.attn_only) continue;
    w->ln2_w.push_back(f64(b.ln2.w));
    w->ln2_b.push_back(f64(b.ln2.b));
    w->W_in.push_back(f64(b.W_in));
    w->b_in.push_back(f64(b.b_in));
  }
  EdgePatcher patcher;
  patcher.model_ = &model;
  patcher.graph_ = &graph;
  patcher.weights_ = std::move(w);
  return patcher;
}

absl::StatusOr<RunOutput> EdgePatcher::Run(const ForwardInput& input, const ForwardOptions& options,
                                           const at::Tensor& corrupted_senders,
                                           const std::vector<bool>& corrupted) const {
  const HookedTransformerConfig& cfg = model_->cfg();
  const CircuitGraph& graph = *graph_;
  const int64_t n_senders = static_cast<int64_t>(graph.nodes().size()) - 1;
  if (corrupted.size() != graph.edges().size()) {
    return absl::InvalidArgumentError(absl::StrCat("the edge mask has ", corrupted.size(),
                                                   " entries; the graph has ", graph.edges().size(),
                                                   " edges"));
  }
  const int64_t batch = input.tokens.size(0), pos = input.tokens.size(1);
  if (corrupted_senders.dim() != 4 || corrupted_senders.size(0) != batch ||
      corrupted_senders.size(1) != pos || corrupted_senders.size(2) != n_senders ||
      corrupted_senders.size(3) != cfg.d_model) {
    return absl::InvalidArgumentError(
        absl::StrCat("corrupted sender values are ", c10::str(corrupted_senders.sizes()),
                     "; expected [", batch, ", ", pos, ", ", n_senders, ", ", cfg.d_model, "]"));
  }
  // Which corrupted edges enter each receiving input: per layer and channel [head, sender];
  // per MLP and for the logits [sender].
  const int64_t L = cfg.n_layers, H = cfg.n_heads;
  torch::Tensor head_mask = torch::zeros({L, 3, H, n_senders}, torch::kFloat64);
  torch::Tensor mlp_mask = torch::zeros({L, n_senders}, torch::kFloat64);
  torch::Tensor logits_mask = torch::zeros({n_senders}, torch::kFloat64);
  for (size_t e = 0; e < corrupted.size(); ++e) {
    if (!corrupted[e]) continue;
    const CircuitEdge& edge = graph.edges()[e];
    const CircuitNode& r = graph.nodes()[edge.receiver];
    switch (r.kind) {
      case CircuitNode::Kind::kHead:
        head_mask[r.layer][static_cast<int>(edge.channel) - 1][r.head][edge.sender] = 1.0;
        break;
      case CircuitNode::Kind::kMlp:
        mlp_mask[r.layer][edge.sender] = 1.0;
        break;
      default:
        logits_mask[edge.sender] = 1.0;
    }
  }
  const torch::Device device = model_->device();
  head_mask = head_mask.to(device);
  mlp_mask = mlp_mask.to(device);
  logits_mask = logits_mask.to(device);

  // The run's own sender values minus the corrupted ones, filled as the senders run.
  struct State {
    torch::Tensor diff;  // [batch, pos, sender, d_model] float64
    torch::Tensor embed, resid_pre, resid_mid;
  };
  auto state = std::make_shared<State>();
  state->diff = torch::zeros({batch, pos, n_senders, cfg.d_model},
                             torch::dtype(torch::kFloat64).device(device));
  const torch::Tensor corr = corrupted_senders.to(device, torch::kFloat64);
  std::shared_ptr<const Weights> w = weights_;
  auto record = [state](torch::Tensor State::*field) {
    return
        [state, field](const at::Tensor& act, const HookPointImpl&) -> std::optional<at::Tensor> {
          (*state).*field = act;
          return std::nullopt;
        };
  };
  auto shift = [state](const torch::Tensor& mask) {  // sum over masked senders of diff
    return torch::einsum("bpsd,s->bpd", {state->diff, mask});
  };
  std::vector<NamedHook> hooks;
  hooks.push_back({"hook_embed", record(&State::embed)});
  hooks.push_back(
      {"hook_pos_embed",
       [state, corr](const at::Tensor& act, const HookPointImpl&) -> std::optional<at::Tensor> {
         state->diff.select(2, 0).copy_((state->embed + act).to(torch::kFloat64) -
                                        corr.select(2, 0));
         return std::nullopt;
       }});
  for (int64_t l = 0; l < L; ++l) {
    hooks.push_back({BlockHook(l, "hook_resid_pre"), record(&State::resid_pre)});
    const char* qkv[] = {"attn.hook_q", "attn.hook_k", "attn.hook_v"};
    for (int c = 0; c < 3; ++c) {
      const torch::Tensor mask = head_mask[l][c];      // [head, sender]
      const torch::Tensor heads = mask.sum(-1).gt(0);  // heads with a corrupted input here
      if (!heads.any().item<bool>()) continue;
      hooks.push_back(
          {BlockHook(l, qkv[c]),
           [state, w, mask, heads, l, c, eps = cfg.eps](
               const at::Tensor& act, const HookPointImpl&) -> std::optional<at::Tensor> {
             // Each head's own input: the residual stream minus its corrupted edges' shifts.
             const torch::Tensor x = state->resid_pre.to(torch::kFloat64).unsqueeze(2) -
                                     torch::einsum("bpsd,hs->bphd", {state->diff, mask});
             const torch::Tensor ln = LayerNormOf(x, w->ln1_w[l], w->ln1_b[l], eps);
             const torch::Tensor out =
                 torch::einsum("bphd,hde->bphe", {ln, w->W[l][c]}) + w->b[l][c];
             return torch::where(heads.view({1, 1, -1, 1}), out.to(act.scalar_type()), act);
           }});
    }
    hooks.push_back({BlockHook(l, "attn.hook_z"),
                     [state, w, corr, l](const at::Tensor& z,
                                         const HookPointImpl&) -> std::optional<at::Tensor> {
                       const int64_t first = w->head_node0[l], n = z.size(2);
                       state->diff.narrow(2, first, n)
                           .copy_(
                               torch::einsum("bphe,hem->bphm", {z.to(torch::kFloat64), w->W_O[l]}) -
                               corr.narrow(2, first, n));
                       return std::nullopt;
                     }});
    if (cfg.attn_only) continue;
    hooks.push_back({BlockHook(l, "hook_resid_mid"), record(&State::resid_mid)});
    const torch::Tensor mask = mlp_mask[l];
    if (mask.any().item<bool>()) {
      hooks.push_back(
          {BlockHook(l, "mlp.hook_pre"),
           [state, w, mask, l, shift, eps = cfg.eps](
               const at::Tensor& act, const HookPointImpl&) -> std::optional<at::Tensor> {
             const torch::Tensor x = state->resid_mid.to(torch::kFloat64) - shift(mask);
             const torch::Tensor ln = LayerNormOf(x, w->ln2_w[l], w->ln2_b[l], eps);
             return (torch::matmul(ln, w->W_in[l]) + w->b_in[l]).to(act.scalar_type());
           }});
    }
    hooks.push_back({BlockHook(l, "hook_mlp_out"),
                     [state, w, corr, l](const at::Tensor& out,
                                         const HookPointImpl&) -> std::optional<at::Tensor> {
                       const int64_t node = w->mlp_node[l];
                       state->diff.select(2, node).copy_(out.to(torch::kFloat64) -
                                                         corr.select(2, node));
                       return std::nullopt;
                     }});
  }
  if (logits_mask.any().item<bool>()) {
    hooks.push_back({BlockHook(L - 1, "hook_resid_post"),
                     [shift, logits_mask](const at::Tensor& act,
                                          const HookPointImpl&) -> std::optional<at::Tensor> {
                       return (act.to(torch::kFloat64) - shift(logits_mask)).to(act.scalar_type());
                     }});
  }
  return model_->Run(input, options, hooks);
}

int64_t PromptsPerBatch(const Dataset& dataset, int64_t max_batch_tokens) {
  return std::max<int64_t>(1, max_batch_tokens / std::max<int64_t>(1, dataset.max_length()));
}

absl::StatusOr<CorruptionBatch> MakeCorruptionBatch(const HookedTransformer& model,
                                                    const Dataset& dataset, int64_t begin,
                                                    int64_t end, MetricKind metric,
                                                    bool clean_senders) {
  const HookedTransformerConfig& cfg = model.cfg();
  CorruptionBatch b;
  LG_ASSIGN_OR_RETURN(b.prompts, MakePromptBatch(dataset, begin, end, /*need_corrupted=*/true,
                                                 cfg.d_vocab, cfg.bos_token_id));
  if (!MetricNeedsAllPositions(metric)) {
    b.options.logit_positions = torch::full({end - begin}, b.prompts.pos - 1, torch::kInt64);
  }
  CacheOptions senders;
  senders.names = SenderHooks(cfg);
  ActivationCache clean_cache;
  LG_ASSIGN_OR_RETURN(RunOutput clean,
                      clean_senders
                          ? model.RunWithCache(b.prompts.clean, b.options, senders, &clean_cache)
                          : model.Run(b.prompts.clean, b.options));
  if (clean_senders) {
    LG_ASSIGN_OR_RETURN(b.clean_senders, SenderValues(model, clean_cache));
  }
  b.prompts.targets.clean_log_probs = torch::log_softmax(clean.logits.select(1, -1), -1);
  b.clean_metric = ComputeMetric(metric, clean.logits, b.prompts.targets);
  ActivationCache cache;
  LG_ASSIGN_OR_RETURN(RunOutput corrupted,
                      model.RunWithCache(b.prompts.corrupted, b.options, senders, &cache));
  b.corrupted_metric = ComputeMetric(metric, corrupted.logits, b.prompts.targets);
  LG_ASSIGN_OR_RETURN(b.corrupted_senders, SenderValues(model, cache));
  return b;
}

absl::StatusOr<Faithfulness> CircuitFaithfulness(const HookedTransformer& model,
                                                 const Dataset& dataset, const CircuitGraph& graph,
                                                 const std::vector<bool>& kept, MetricKind metric,
                                                 int64_t max_batch_tokens) {
  LG_ASSIGN_OR_RETURN(EdgePatcher patcher, EdgePatcher::Create(model, graph));
  if (kept.size() != graph.edges().size()) {
    return absl::InvalidArgumentError(absl::StrCat("the circuit has ", kept.size(),
                                                   " entries; the graph has ", graph.edges().size(),
                                                   " edges"));
  }
  std::vector<bool> corrupted(kept.size());
  for (size_t e = 0; e < kept.size(); ++e) corrupted[e] = !kept[e];
  const int64_t n_prompts = static_cast<int64_t>(dataset.prompts.size());
  if (n_prompts == 0) return absl::InvalidArgumentError("the dataset has no prompts");
  const int64_t per_batch = PromptsPerBatch(dataset, max_batch_tokens);
  double circuit = 0, full = 0, corrupt = 0;
  for (int64_t b = 0; b < n_prompts; b += per_batch) {
    LG_ASSIGN_OR_RETURN(
        CorruptionBatch batch,
        MakeCorruptionBatch(model, dataset, b, std::min(b + per_batch, n_prompts), metric));
    LG_ASSIGN_OR_RETURN(RunOutput in_circuit, patcher.Run(batch.prompts.clean, batch.options,
                                                          batch.corrupted_senders, corrupted));
    full += batch.clean_metric.sum().item<double>();
    corrupt += batch.corrupted_metric.sum().item<double>();
    circuit += ComputeMetric(metric, in_circuit.logits, batch.prompts.targets).sum().item<double>();
  }
  Faithfulness f;
  f.circuit = circuit / n_prompts;
  f.full = full / n_prompts;
  f.corrupted = corrupt / n_prompts;
  return f;
}

}  // namespace lensgrid
