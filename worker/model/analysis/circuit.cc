#include "worker/model/analysis/circuit.h"

#include <torch/torch.h>

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/model/analysis/edge_patching.h"
#include "worker/model/analysis/metrics.h"
#include "worker/model/analysis/prompt_batch.h"
#include "worker/model/gradients.h"

namespace lensgrid {
namespace {

std::string BlockHook(int64_t layer, const char* name) {
  return absl::StrCat("blocks.", layer, ".", name);
}

// The hooks whose gradients give the receivers' inputs' (ReceiverInputs).
std::vector<std::string> GradientHooks(const HookedTransformerConfig& cfg) {
  std::vector<std::string> hooks;
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    for (const char* name : {"attn.hook_q", "attn.hook_k", "attn.hook_v"}) {
      hooks.push_back(BlockHook(l, name));
    }
    if (!cfg.attn_only) hooks.push_back(BlockHook(l, "mlp.hook_pre"));
  }
  hooks.push_back(BlockHook(cfg.n_layers - 1, "hook_resid_post"));
  return hooks;
}

// The residual streams the LayerNorms in front of the receivers normalise.
std::vector<std::string> LayerNormInputs(const HookedTransformerConfig& cfg) {
  std::vector<std::string> hooks;
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    hooks.push_back(BlockHook(l, "hook_resid_pre"));
    if (!cfg.attn_only) hooks.push_back(BlockHook(l, "hook_resid_mid"));
  }
  return hooks;
}

// g . d LN(x) / dx for LN(x) = (x - mean) / sqrt(var + eps) * w (+ b): the LayerNorm's
// vector-Jacobian product, exact (eps included). x [..., d], g [..., d]; w may be undefined
// (folded).
torch::Tensor LayerNormVjp(const torch::Tensor& x, const torch::Tensor& g, const torch::Tensor& w,
                           double eps) {
  const torch::Tensor centered = x - x.mean(-1, true);
  const torch::Tensor sigma = (centered.pow(2).mean(-1, true) + eps).sqrt();
  const torch::Tensor n = centered / sigma;
  const torch::Tensor gn = w.defined() ? g * w : g;
  return (gn - gn.mean(-1, true) - n * (gn * n).mean(-1, true)) / sigma;
}

// What the receivers' inputs need of the weights, per layer.
struct ReceiverWeights {
  std::vector<torch::Tensor> W_Q, W_K, W_V, W_in, ln1_w, ln2_w;  // LN weights undefined if folded
};

// One export of the weights (a copy per block; asking Weight() for each name would copy a
// block once per name), in float64 on the model's device.
ReceiverWeights LoadReceiverWeights(const HookedTransformer& model) {
  const GPT2Weights exported = model.ExportWeights();
  auto f64 = [&](const at::Tensor& t) {
    return t.defined() ? t.to(model.device(), torch::kFloat64) : t;
  };
  ReceiverWeights w;
  for (const BlockWeights& b : exported.blocks) {
    w.W_Q.push_back(f64(b.W_Q));
    w.W_K.push_back(f64(b.W_K));
    w.W_V.push_back(f64(b.W_V));
    w.ln1_w.push_back(f64(b.ln1.w));  // undefined when folded
    if (!model.cfg().attn_only) {
      w.W_in.push_back(f64(b.W_in));
      w.ln2_w.push_back(f64(b.ln2.w));
    }
  }
  return w;
}

// d metric / d (each receiver's own input), from the gradients at q, k, v (each head's
// projection of its LayerNormed input), at the MLP's pre-activation and at the final residual
// stream, back through the projections and the LayerNorms: the inputs a model with
// use_split_qkv_input and use_hook_mlp_in exposes as hook points, named as those hooks
// ("blocks.L.hook_q_input" [batch, pos, head, d_model], "blocks.L.hook_mlp_in" [batch, pos,
// d_model]), and the final residual stream.
absl::StatusOr<ActivationCache> ReceiverInputs(const HookedTransformerConfig& cfg,
                                               const ReceiverWeights& w,
                                               const ActivationCache& grads,
                                               const ActivationCache& streams) {
  ActivationCache out;
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    LG_ASSIGN_OR_RETURN(torch::Tensor resid_pre, streams.Get(BlockHook(l, "hook_resid_pre")));
    const torch::Tensor x = resid_pre.to(torch::kFloat64).unsqueeze(2);  // [b, p, 1, d]
    const std::vector<torch::Tensor>* weights[] = {&w.W_Q, &w.W_K, &w.W_V};
    const char* grad_hooks[] = {"attn.hook_q", "attn.hook_k", "attn.hook_v"};
    const char* input_hooks[] = {"hook_q_input", "hook_k_input", "hook_v_input"};
    for (int c = 0; c < 3; ++c) {
      LG_ASSIGN_OR_RETURN(torch::Tensor g, grads.Get(BlockHook(l, grad_hooks[c])));
      // [b, p, h, e] x [h, d, e] -> [b, p, h, d]: the gradient at each head's LayerNorm output.
      const torch::Tensor g_ln =
          torch::einsum("bphe,hde->bphd", {g.to(torch::kFloat64), (*weights[c])[l]});
      out.Put(BlockHook(l, input_hooks[c]), LayerNormVjp(x, g_ln, w.ln1_w[l], cfg.eps));
    }
    if (!cfg.attn_only) {
      LG_ASSIGN_OR_RETURN(torch::Tensor resid_mid, streams.Get(BlockHook(l, "hook_resid_mid")));
      LG_ASSIGN_OR_RETURN(torch::Tensor g, grads.Get(BlockHook(l, "mlp.hook_pre")));
      const torch::Tensor g_ln = torch::matmul(g.to(torch::kFloat64), w.W_in[l].t());
      out.Put(BlockHook(l, "hook_mlp_in"),
              LayerNormVjp(resid_mid.to(torch::kFloat64), g_ln, w.ln2_w[l], cfg.eps));
    }
  }
  const std::string final_stream = BlockHook(cfg.n_layers - 1, "hook_resid_post");
  LG_ASSIGN_OR_RETURN(torch::Tensor g, grads.Get(final_stream));
  out.Put(final_stream, g.to(torch::kFloat64));
  return out;
}

// d metric / d (a receiver's input) [batch, pos, d_model].
absl::StatusOr<torch::Tensor> ReceiverGradient(const CircuitGraph& graph,
                                               const ActivationCache& grads, int node,
                                               Channel channel) {
  const CircuitNode& n = graph.nodes()[node];
  switch (n.kind) {
    case CircuitNode::Kind::kHead: {
      const char* hook = channel == Channel::kQuery ? "hook_q_input"
                         : channel == Channel::kKey ? "hook_k_input"
                                                    : "hook_v_input";
      LG_ASSIGN_OR_RETURN(torch::Tensor g, grads.Get(BlockHook(n.layer, hook)));
      return g.select(2, n.head);
    }
    case CircuitNode::Kind::kMlp:
      return grads.Get(BlockHook(n.layer, "hook_mlp_in"));
    case CircuitNode::Kind::kLogits:
      return grads.Get(BlockHook(graph.shape().n_layers - 1, "hook_resid_post"));
    case CircuitNode::Kind::kEmbed:
      break;
  }
  return absl::InternalError("the embeddings receive nothing");
}

// Scores [batch, n_edges]: for each receiving input (its edges are consecutive in the graph),
// its senders' value differences dotted with its gradient, summed over positions.
absl::StatusOr<torch::Tensor> Scores(const CircuitGraph& graph, const torch::Tensor& delta,
                                     const ActivationCache& grads) {
  // One batched GEMM per chunk of receiving inputs against every sender ([batch, sender,
  // pos * d] x [batch, pos * d, receivers]), then each receiver's own senders picked from the
  // small product: no copy of the senders' values per receiver.
  const int64_t batch = delta.size(0), pos = delta.size(1), d = delta.size(3);
  const torch::Tensor senders_by_row =
      delta.permute({0, 2, 1, 3}).reshape({batch, delta.size(2), pos * d}).contiguous();
  const std::vector<CircuitEdge>& edges = graph.edges();
  const std::vector<std::pair<size_t, size_t>> groups = graph.ReceivingInputs();
  constexpr size_t kChunk = 64;  // receiving inputs per GEMM
  std::vector<torch::Tensor> columns;
  for (size_t c = 0; c < groups.size(); c += kChunk) {
    const size_t c_end = std::min(groups.size(), c + kChunk);
    std::vector<torch::Tensor> inputs;
    for (size_t i = c; i < c_end; ++i) {
      const CircuitEdge& first = edges[groups[i].first];
      LG_ASSIGN_OR_RETURN(torch::Tensor g,
                          ReceiverGradient(graph, grads, first.receiver, first.channel));
      inputs.push_back(g.to(torch::kFloat64).reshape({batch, pos * d}));
    }
    const torch::Tensor products =
        torch::bmm(senders_by_row, torch::stack(inputs, 2));  // [batch, sender, receivers]
    for (size_t i = c; i < c_end; ++i) {
      std::vector<int64_t> senders;
      for (size_t e = groups[i].first; e < groups[i].second; ++e) {
        senders.push_back(edges[e].sender);
      }
      const torch::Tensor index = torch::tensor(senders, torch::kInt64).to(delta.device());
      columns.push_back(products.select(2, static_cast<int64_t>(i - c)).index_select(1, index));
    }
  }
  return torch::cat(columns, 1);
}

}  // namespace

CircuitGraph CircuitGraphOf(const HookedTransformerConfig& cfg) {
  return CircuitGraph::Build(
      {static_cast<int>(cfg.n_layers), static_cast<int>(cfg.n_heads), cfg.attn_only});
}

absl::StatusOr<EdgeScores> EdgeAttribution(const HookedTransformer& model, const Dataset& dataset,
                                           const CircuitGraph& graph,
                                           const EdgeAttributionOptions& options) {
  const HookedTransformerConfig& cfg = model.cfg();
  if (graph.shape().n_layers != cfg.n_layers || graph.shape().n_heads != cfg.n_heads ||
      graph.shape().attn_only != cfg.attn_only) {
    return absl::FailedPreconditionError("the circuit graph is not this model's");
  }
  if (options.ig_steps < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("ig_steps must be >= 0 (0: EAP), got ", options.ig_steps));
  }
  const int64_t n_prompts = static_cast<int64_t>(dataset.prompts.size());
  const int64_t p_begin = options.prompt_begin;
  const int64_t p_end = options.prompt_end < 0 ? n_prompts : options.prompt_end;
  if (p_begin < 0 || p_begin >= p_end || p_end > n_prompts) {
    return absl::InvalidArgumentError(absl::StrCat("prompt range [", p_begin, ", ", p_end,
                                                   ") is not within the dataset's ", n_prompts,
                                                   " prompts"));
  }
  const int64_t pos = dataset.max_length();
  const int64_t per_batch =
      std::max<int64_t>(1, options.max_batch_tokens / std::max<int64_t>(1, pos));
  EdgeScores result;
  result.prompt_begin = p_begin;
  auto count = [&](const ForwardInput& in, bool backward) {
    result.counts.forwards += 1;
    result.counts.backwards += backward ? 1 : 0;
    result.counts.block_rows += in.tokens.size(0) * cfg.n_layers;
  };
  CacheOptions senders;
  senders.names = SenderHooks(cfg);
  GradientRequest request;
  request.hooks = GradientHooks(cfg);
  CacheOptions streams;
  streams.names = LayerNormInputs(cfg);
  const ReceiverWeights weights = LoadReceiverWeights(model);
  std::vector<torch::Tensor> scores, clean_metric, corrupted_metric;
  for (int64_t b = p_begin; b < p_end; b += per_batch) {
    if (options.is_cancelled && options.is_cancelled()) {
      return absl::CancelledError("edge attribution cancelled");
    }
    const int64_t e = std::min(b + per_batch, p_end), n = e - b;
    LG_ASSIGN_OR_RETURN(PromptBatch batch, MakePromptBatch(dataset, b, e, /*need_corrupted=*/true,
                                                           cfg.d_vocab, cfg.bos_token_id));
    ForwardOptions opts;
    opts.is_cancelled = options.is_cancelled;
    if (!MetricNeedsAllPositions(options.metric)) {
      opts.logit_positions = torch::full({n}, batch.pos - 1, torch::kInt64);
    }
    ActivationCache clean, corrupted;
    LG_ASSIGN_OR_RETURN(RunOutput clean_run,
                        model.RunWithCache(batch.clean, opts, senders, &clean));
    count(batch.clean, false);
    batch.targets.clean_log_probs = torch::log_softmax(clean_run.logits.select(1, -1), -1);
    clean_metric.push_back(ComputeMetric(options.metric, clean_run.logits, batch.targets));
    LG_ASSIGN_OR_RETURN(RunOutput corrupted_run,
                        model.RunWithCache(batch.corrupted, opts, senders, &corrupted));
    count(batch.corrupted, false);
    corrupted_metric.push_back(ComputeMetric(options.metric, corrupted_run.logits, batch.targets));
    request.objective = [&](const RunOutput& run) -> absl::StatusOr<at::Tensor> {
      return ComputeMetric(options.metric, run.logits, batch.targets).sum();
    };

    // The gradient at the clean input (EAP), or its mean over points on the way from the clean
    // to the corrupted input embeddings (EAP-IG).
    ActivationCache grads;
    if (options.ig_steps == 0) {
      ActivationCache raw, at;
      LG_RETURN_IF_ERROR(
          RunWithGradients(model, batch.clean, opts, request, &raw, nullptr, {}, &streams, &at)
              .status());
      count(batch.clean, true);
      LG_ASSIGN_OR_RETURN(grads, ReceiverInputs(cfg, weights, raw, at));
    } else {
      LG_ASSIGN_OR_RETURN(torch::Tensor clean_embed, clean.Get("hook_embed"));
      LG_ASSIGN_OR_RETURN(torch::Tensor corrupted_embed, corrupted.Get("hook_embed"));
      for (int step = 0; step < options.ig_steps; ++step) {
        const double alpha = (step + 0.5) / options.ig_steps;
        const torch::Tensor point = clean_embed + alpha * (corrupted_embed - clean_embed);
        std::vector<NamedHook> hooks = {
            {"hook_embed",
             [point](const at::Tensor&, const HookPointImpl&) -> std::optional<at::Tensor> {
               return point;
             }}};
        ActivationCache raw, at;
        LG_RETURN_IF_ERROR(
            RunWithGradients(model, batch.clean, opts, request, &raw, nullptr, hooks, &streams, &at)
                .status());
        count(batch.clean, true);
        LG_ASSIGN_OR_RETURN(ActivationCache step_grads, ReceiverInputs(cfg, weights, raw, at));
        if (step == 0) {
          grads = step_grads;
          continue;
        }
        ActivationCache sum;
        for (const auto& [name, g] : grads.entries())
          sum.Put(name, g + step_grads.Get(name).value());
        grads = std::move(sum);
      }
      ActivationCache mean;
      for (const auto& [name, g] : grads.entries()) mean.Put(name, g / options.ig_steps);
      grads = std::move(mean);
    }
    LG_ASSIGN_OR_RETURN(torch::Tensor clean_values, SenderValues(model, clean));
    LG_ASSIGN_OR_RETURN(torch::Tensor corrupted_values, SenderValues(model, corrupted));
    LG_ASSIGN_OR_RETURN(torch::Tensor batch_scores,
                        Scores(graph, corrupted_values - clean_values, grads));
    scores.push_back(batch_scores.to(torch::kFloat32).cpu());
  }
  result.per_prompt = torch::cat(scores, 0);
  result.clean_metric = torch::cat(clean_metric, 0).to(torch::kFloat32).cpu();
  result.corrupted_metric = torch::cat(corrupted_metric, 0).to(torch::kFloat32).cpu();
  return result;
}

}  // namespace lensgrid
