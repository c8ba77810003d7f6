#include "worker/model/analysis/circuit.h"

#include <torch/torch.h>

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/model/analysis/metrics.h"
#include "worker/model/analysis/prompt_batch.h"
#include "worker/model/gradients.h"

namespace lensgrid {
namespace {

std::string BlockHook(int64_t layer, const char* name) {
  return absl::StrCat("blocks.", layer, ".", name);
}

// The hooks whose activations make the senders' values, in graph node order.
std::vector<std::string> SenderHooks(const HookedTransformerConfig& cfg) {
  std::vector<std::string> hooks = {"hook_embed", "hook_pos_embed"};
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    hooks.push_back(BlockHook(l, "attn.hook_z"));
    if (!cfg.attn_only) hooks.push_back(BlockHook(l, "hook_mlp_out"));
  }
  return hooks;
}

// The hooks whose gradients are the receivers' inputs.
std::vector<std::string> ReceiverHooks(const HookedTransformerConfig& cfg) {
  std::vector<std::string> hooks;
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    for (const char* name : {"hook_q_input", "hook_k_input", "hook_v_input"}) {
      hooks.push_back(BlockHook(l, name));
    }
    if (!cfg.attn_only) hooks.push_back(BlockHook(l, "hook_mlp_in"));
  }
  hooks.push_back(BlockHook(cfg.n_layers - 1, "hook_resid_post"));
  return hooks;
}

// Every sender's value [batch, pos, node, d_model] (float64), nodes in graph order (the logits
// send nothing): the embeddings, then per layer each head's output z @ W_O and the MLP's output.
absl::StatusOr<torch::Tensor> SenderValues(const HookedTransformer& model,
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
  const std::vector<CircuitEdge>& edges = graph.edges();
  std::vector<torch::Tensor> columns;
  for (size_t begin = 0; begin < edges.size();) {
    size_t end = begin;
    std::vector<int64_t> senders;
    while (end < edges.size() && edges[end].receiver == edges[begin].receiver &&
           edges[end].channel == edges[begin].channel) {
      senders.push_back(edges[end].sender);
      ++end;
    }
    LG_ASSIGN_OR_RETURN(torch::Tensor g, ReceiverGradient(graph, grads, edges[begin].receiver,
                                                          edges[begin].channel));
    const torch::Tensor index = torch::tensor(senders, torch::kInt64).to(delta.device());
    columns.push_back(
        torch::einsum("bpsd,bpd->bs", {delta.index_select(2, index), g.to(torch::kFloat64)}));
    begin = end;
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
  if (!cfg.use_split_qkv_input || (!cfg.attn_only && !cfg.use_hook_mlp_in)) {
    return absl::FailedPreconditionError(
        "edge attribution reads each head's q, k and v input and each MLP's input: load the "
        "model with use_split_qkv_input and use_hook_mlp_in (LoadOptions)");
  }
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
  request.hooks = ReceiverHooks(cfg);
  std::vector<torch::Tensor> scores;
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
    LG_RETURN_IF_ERROR(model.RunWithCache(batch.corrupted, opts, senders, &corrupted).status());
    count(batch.corrupted, false);
    request.objective = [&](const RunOutput& run) -> absl::StatusOr<at::Tensor> {
      return ComputeMetric(options.metric, run.logits, batch.targets).sum();
    };

    // The gradient at the clean input (EAP), or its mean over points on the way from the clean
    // to the corrupted input embeddings (EAP-IG).
    ActivationCache grads;
    if (options.ig_steps == 0) {
      LG_RETURN_IF_ERROR(RunWithGradients(model, batch.clean, opts, request, &grads).status());
      count(batch.clean, true);
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
        ActivationCache step_grads;
        LG_RETURN_IF_ERROR(
            RunWithGradients(model, batch.clean, opts, request, &step_grads, nullptr, hooks)
                .status());
        count(batch.clean, true);
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
  return result;
}

}  // namespace lensgrid
