#include "worker/model/analysis/circuit_search.h"

#include <torch/torch.h>

#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/model/analysis/base_run_cache.h"
#include "worker/model/analysis/circuit.h"
#include "worker/model/analysis/edge_patching.h"

namespace lensgrid {
namespace {

// The receiving inputs path-patch ends at: the spec's, or the logits.
absl::StatusOr<std::set<std::pair<int, Channel>>> Receivers(const CircuitGraph& graph,
                                                            const CircuitParams& params) {
  std::set<std::pair<int, Channel>> out;
  if (params.receivers.empty()) out.insert({graph.LogitsNode(), Channel::kResidual});
  for (const std::string& name : params.receivers) {
    LG_ASSIGN_OR_RETURN(auto r, graph.FindReceiver(name));
    out.insert(r);
  }
  return out;
}

class CircuitSearch {
 public:
  CircuitSearch(const HookedTransformer& model, const Dataset& dataset, const SearchSpec& spec,
                const SearchOptions& options, SearchResult* result)
      : model_(model),
        dataset_(dataset),
        spec_(spec),
        options_(options),
        graph_(CircuitGraphOf(model.cfg())),
        result_(result) {}

  absl::Status Run(int64_t p_begin, int64_t p_end, int64_t c_begin, int64_t c_end) {
    if (spec_.method == Method::kEap || spec_.method == Method::kEapIg) {
      return EdgeScoresOf(p_begin, p_end);
    }
    if (spec_.method == Method::kAcdc) {
      return absl::InvalidArgumentError(
          "acdc is driven by its client, one acdc-step search per iteration "
          "(common/acdc_driver.h; lensgrid search --method acdc)");
    }
    LG_ASSIGN_OR_RETURN(patcher_, EdgePatcher::Create(model_, graph_));
    std::vector<torch::Tensor> values, clean, corrupted;
    const int64_t per_batch = PromptsPerBatch(dataset_, options_.max_batch_tokens);
    for (int64_t b = p_begin; b < p_end; b += per_batch) {
      const int64_t e = std::min(b + per_batch, p_end);
      LG_ASSIGN_OR_RETURN(std::shared_ptr<const CorruptionBatch> shared, CorruptionBatchOf(b, e));
      const CorruptionBatch& batch = *shared;
      LG_ASSIGN_OR_RETURN(torch::Tensor v,
                          spec_.method == Method::kPathPatch  ? PathPatch(batch, c_begin, c_end)
                          : spec_.method == Method::kAcdcStep ? AcdcStep(batch, c_begin, c_end)
                                                              : FaithfulnessOf(batch));
      values.push_back(v.to(torch::kFloat32).cpu());
      clean.push_back(batch.clean_metric.to(torch::kFloat32).cpu());
      corrupted.push_back(batch.corrupted_metric.to(torch::kFloat32).cpu());
    }
    result_->outputs.front().per_prompt = torch::cat(values, 0);
    result_->baseline = torch::cat(clean, 0);
    result_->reference = torch::cat(corrupted, 0);
    return absl::OkStatus();
  }

 private:
  // Prompts [b, e)'s clean and corrupted runs (the senders' values, both metrics), from the
  // worker's base-run cache when it holds them: every component shard of a path-patch or
  // acdc-step search over these prompts, and every ACDC iteration, runs over the same ones.
  // The key covers all MakeCorruptionBatch reads (the scope naming the model, the metric,
  // whether clean senders are kept, every prompt field), so a hit is what a miss computes.
  absl::StatusOr<std::shared_ptr<const CorruptionBatch>> CorruptionBatchOf(int64_t b, int64_t e) {
    const bool clean_senders = spec_.method == Method::kPathPatch;
    BaseRunCache* cache = options_.base_run_cache;
    std::string key;
    if (CachesBaseRuns(options_)) {
      key = BaseRunKey("lensgrid corruption batch v1")
                .Str(options_.base_run_scope)
                .Str(MetricName(spec_.metric))
                .Int(clean_senders ? 1 : 0)
                .Prompts(dataset_, b, e)
                .Hex();
      if (auto hit = std::static_pointer_cast<const CorruptionBatch>(cache->Find(key))) {
        result_->counts.base_runs_reused += 1;
        return hit;
      }
    }
    LG_ASSIGN_OR_RETURN(CorruptionBatch batch,
                        MakeCorruptionBatch(model_, dataset_, b, e, spec_.metric, clean_senders));
    Count(batch.prompts.clean, 2);
    // Nothing that outlives this search: the prompts point into its dataset.
    batch.prompts.prompts.clear();
    batch.options.is_cancelled = nullptr;
    auto shared = std::make_shared<const CorruptionBatch>(std::move(batch));
    if (!key.empty()) {
      const PromptBatch& p = shared->prompts;
      cache->Insert(
          key, shared,
          StorageBytes({shared->corrupted_senders, shared->clean_senders, shared->clean_metric,
                        shared->corrupted_metric, p.clean.tokens, p.clean.attention_mask,
                        p.targets.answers, p.targets.wrongs, p.targets.tokens, p.targets.loss_mask,
                        p.targets.clean_log_probs, shared->options.logit_positions}));
    }
    return shared;
  }

  void Count(const ForwardInput& in, int64_t forwards) {
    result_->counts.forwards += forwards;
    result_->counts.block_rows += forwards * in.tokens.size(0) * model_.cfg().n_layers;
  }

  absl::Status Cancelled() const {
    if (options_.is_cancelled && options_.is_cancelled()) {
      return absl::CancelledError(absl::StrCat(MethodName(spec_.method), " cancelled"));
    }
    return absl::OkStatus();
  }

  absl::Status EdgeScoresOf(int64_t p_begin, int64_t p_end) {
    EdgeAttributionOptions o;
    o.metric = spec_.metric;
    o.ig_steps = spec_.method == Method::kEapIg ? IgSteps(spec_.circuit) : 0;
    o.prompt_begin = p_begin;
    o.prompt_end = p_end;
    o.max_batch_tokens = options_.max_batch_tokens;
    o.is_cancelled = options_.is_cancelled;
    LG_ASSIGN_OR_RETURN(EdgeScores s, EdgeAttribution(model_, dataset_, graph_, o));
    result_->outputs.front().per_prompt = std::move(s.per_prompt);
    result_->baseline = std::move(s.clean_metric);
    result_->reference = std::move(s.corrupted_metric);
    result_->counts.forwards += s.counts.forwards;
    result_->counts.backwards += s.counts.backwards;
    result_->counts.block_rows += s.counts.block_rows;
    return absl::OkStatus();
  }

  // [n, c_end - c_begin]: per sender head, the metric with its path to the receivers corrupted,
  // minus the clean metric. Every edge into a receiver reads a given value: the sender's
  // corrupted one, every other sender's clean one (so a receiver does not see another
  // receiver's change, as in the IOI paper, which patches the receivers' inputs from a run
  // where everything but the sender is frozen).
  absl::StatusOr<torch::Tensor> PathPatch(const CorruptionBatch& batch, int64_t c_begin,
                                          int64_t c_end) {
    LG_ASSIGN_OR_RETURN(auto receivers, Receivers(graph_, spec_.circuit));
    const std::vector<CircuitEdge>& edges = graph_.edges();
    const int64_t n = batch.clean_metric.size(0), n_heads = model_.cfg().n_heads;
    // The same edges for every sender: all of them read given values, only the sender's differ.
    std::vector<bool> into_receivers(edges.size(), false);
    std::vector<bool> reaches(graph_.nodes().size(), false);  // senders with an edge into them
    for (size_t e = 0; e < edges.size(); ++e) {
      into_receivers[e] = receivers.count({edges[e].receiver, edges[e].channel}) > 0;
      if (into_receivers[e]) reaches[edges[e].sender] = true;
    }
    std::vector<torch::Tensor> columns;
    for (int64_t c = c_begin; c < c_end; ++c) {
      LG_RETURN_IF_ERROR(Cancelled());
      const int sender =
          graph_.HeadNode(static_cast<int>(c / n_heads), static_cast<int>(c % n_heads));
      if (!reaches[sender]) {  // the head reaches none of the receivers: nothing changes
        columns.push_back(torch::zeros({n}, torch::kFloat64));
        continue;
      }
      torch::Tensor values = batch.clean_senders.clone();  // [b, p, sender, d]
      values.select(2, sender).copy_(batch.corrupted_senders.select(2, sender));
      LG_ASSIGN_OR_RETURN(RunOutput out,
                          patcher_.Run(batch.prompts.clean, batch.options, values, into_receivers));
      Count(batch.prompts.clean, 1);
      columns.push_back(
          (ComputeMetric(spec_.metric, out.logits, batch.prompts.targets) - batch.clean_metric)
              .to(torch::kFloat64));
    }
    return torch::stack(columns, 1);
  }

  // [n, c_end - c_begin]: the metric (KL: per prompt) of the circuit (component 0) and of the
  // circuit with the j-th edge into the step's receiving input also corrupted (component 1 + j);
  // 0 for a component that names no edge in the circuit.
  absl::StatusOr<torch::Tensor> AcdcStep(const CorruptionBatch& batch, int64_t c_begin,
                                         int64_t c_end) {
    LG_ASSIGN_OR_RETURN(auto receiver, graph_.FindReceiver(spec_.circuit.receivers.front()));
    const std::vector<CircuitEdge>& edges = graph_.edges();
    size_t first = 0, end = 0;  // the receiving input's edges
    for (const auto& [b, e] : graph_.ReceivingInputs()) {
      if (edges[b].receiver == receiver.first && edges[b].channel == receiver.second) {
        first = b;
        end = e;
        break;
      }
    }
    std::vector<bool> outside =
        UnpackEdges(spec_.circuit.kept_edges, static_cast<int64_t>(edges.size()));
    outside.flip();
    const int64_t n = batch.clean_metric.size(0);
    std::vector<torch::Tensor> columns;
    for (int64_t c = c_begin; c < c_end; ++c) {
      LG_RETURN_IF_ERROR(Cancelled());
      std::vector<bool> corrupted = outside;
      if (c > 0) {
        const size_t e = first + static_cast<size_t>(c - 1);
        if (e >= end || corrupted[e]) {  // no such edge, or already outside the circuit
          columns.push_back(torch::zeros({n}, torch::kFloat64));
          continue;
        }
        corrupted[e] = true;
      }
      LG_ASSIGN_OR_RETURN(RunOutput out, patcher_.Run(batch.prompts.clean, batch.options,
                                                      batch.corrupted_senders, corrupted));
      Count(batch.prompts.clean, 1);
      columns.push_back(
          ComputeMetric(spec_.metric, out.logits, batch.prompts.targets).to(torch::kFloat64));
    }
    return torch::stack(columns, 1);
  }

  // [n, 3]: the circuit's metric, the clean one, the corrupted one.
  absl::StatusOr<torch::Tensor> FaithfulnessOf(const CorruptionBatch& batch) {
    LG_RETURN_IF_ERROR(Cancelled());
    std::vector<bool> outside =
        UnpackEdges(spec_.circuit.kept_edges, static_cast<int64_t>(graph_.edges().size()));
    outside.flip();
    LG_ASSIGN_OR_RETURN(RunOutput out, patcher_.Run(batch.prompts.clean, batch.options,
                                                    batch.corrupted_senders, outside));
    Count(batch.prompts.clean, 1);
    const torch::Tensor circuit = ComputeMetric(spec_.metric, out.logits, batch.prompts.targets);
    return torch::stack({circuit.to(torch::kFloat64), batch.clean_metric.to(torch::kFloat64),
                         batch.corrupted_metric.to(torch::kFloat64)},
                        1);
  }

  const HookedTransformer& model_;
  const Dataset& dataset_;
  const SearchSpec& spec_;
  const SearchOptions& options_;
  const CircuitGraph graph_;
  EdgePatcher patcher_;
  SearchResult* result_;
};

}  // namespace

absl::Status RunCircuitSearch(const HookedTransformer& model, const Dataset& dataset,
                              const SearchSpec& spec, const SearchOptions& options, int64_t p_begin,
                              int64_t p_end, int64_t c_begin, int64_t c_end, SearchResult* result) {
  const HookedTransformerConfig& cfg = model.cfg();
  LG_RETURN_IF_ERROR(
      CheckCircuitParams(spec.method, spec.circuit, {cfg.n_layers, cfg.n_heads, cfg.attn_only}));
  CircuitSearch search(model, dataset, spec, options, result);
  return search.Run(p_begin, p_end, c_begin, c_end);
}

}  // namespace lensgrid
