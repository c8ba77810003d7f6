// The worker's core: one loaded hooked GPT-2 (and its tokenizer) behind the
// WorkerBackend protos. It turns requests into model calls (worker/model) and
// results into wire tensors; the gRPC service adapter stays thin.
//
//   WorkerOptions options;
//   options.model_dir = "models/tiny";
//   LG_ASSIGN_OR_RETURN(std::unique_ptr<WorkerCore> core,
//   WorkerCore::Load(options)); LG_ASSIGN_OR_RETURN(RunResult result,
//   core->RunWithCache(request, [] { return false; }));
//
// Thread-safe: every method is const and may run concurrently. No LibTorch
// exception leaves this class (they become INTERNAL).
#ifndef LENSGRID_WORKER_CORE_WORKER_CORE_H_
#define LENSGRID_WORKER_CORE_WORKER_CORE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/model/analysis/base_run_cache.h"
#include "worker/reply_budget.h"
#include "worker/worker_backend.h"

namespace lensgrid {

class HookedTransformer;
class ProgramPlan;
class Tokenizer;
struct HookShape;

struct WorkerOptions {
  std::string model_dir;
  std::string device = "cpu";  // "cpu" | "cuda" | "cuda:N"
  bool no_processing = false;  // Default: processed as from_pretrained
  int64_t max_batch = 64;
  int64_t max_tokens = 16384;                     // batch * pos of one run
  int64_t max_response_bytes = int64_t{4} << 30;  // logits + activations
  // Bytes that all replies in flight may hold together (ReplyBudget).
  // Default: 4 GiB
  int64_t max_reply_memory = int64_t{4} << 30;
  // Text of one request (Tokenize, or texts to run). Default: 4 MiB
  int64_t max_text_bytes = int64_t{4} << 20;
  // Texts of one Tokenize / ids of one Detokenize. Default: 4096 / 1M
  int64_t max_tokenize_texts = 4096;
  int64_t max_detokenize_ids = int64_t{1} << 20;
  // A unary reply (Tokenize, Detokenize): gRPC clients refuse more than
  // 4 MiB unless raised, so a bigger one would never arrive. Default: 4 MiB
  int64_t max_unary_reply_bytes = int64_t{4} << 20;
  // Prompts of a shard's dataset (built-in n_prompts or inline prompts).
  // Default: 1M
  int64_t max_dataset_prompts = int64_t{1} << 20;
  // Hook programs of one request: nodes, bytes of every value, an einsum's
  // index space. Default: 4096 / 1 GiB / 2^32
  int64_t max_program_nodes = 4096;
  int64_t max_program_bytes = int64_t{1} << 30;
  int64_t max_einsum_elements = int64_t{1} << 32;
  int64_t chunk_bytes = 1 << 20;
  int64_t max_queue = 64;  // reported in ModelInfo only
  // Memory for the base runs of shards' prompt ranges (clean and corrupted
  // forwards and what the interventions start from), kept so the other
  // component shards of a range reuse them; least recently used first out.
  // 0 = none. Default: 256 MiB
  int64_t shard_cache_bytes = int64_t{256} << 20;
};

class WorkerCore : public WorkerBackend {
 public:
  static absl::StatusOr<std::unique_ptr<WorkerCore>> Load(const WorkerOptions& options);
  ~WorkerCore() override;

  const v1::ModelInfo& Info() const override { return info_; }
  absl::StatusOr<v1::TokenizeResponse> Tokenize(const v1::TokenizeRequest& request,
                                                const CancelCheck& cancelled) const override;
  absl::StatusOr<v1::DetokenizeResponse> Detokenize(
      const v1::DetokenizeRequest& request) const override;
  absl::StatusOr<RunResult> RunWithCache(const v1::RunWithCacheRequest& request,
                                         const CancelCheck& cancelled) const override;
  absl::StatusOr<RunResult> RunWithInterventions(const v1::RunWithInterventionsRequest& request,
                                                 const CancelCheck& cancelled) const override;
  // In worker/core/shard_handler.cc (the circuit-search library).
  absl::StatusOr<RunResult> RunShard(const v1::RunShardRequest& request,
                                     const CancelCheck& cancelled) const override;
  // In worker/core/prepare_job.cc (the datasets of worker/model/analysis).
  absl::StatusOr<v1::PreparedDataset> PrepareJob(const v1::PrepareJob& request) const override;
  // RunShard's reuse of base runs (WorkerOptions::shard_cache_bytes).
  BaseRunCache::Stats ShardCacheStats() const { return shard_cache_->stats(); }
  // Every weight the model has (no names), or the named ones.
  absl::StatusOr<RunResult> GetWeights(const v1::GetWeightsRequest& request,
                                       const CancelCheck& cancelled) const override;
  // worker/model/generate.h, one message per step.
  absl::Status Generate(const v1::GenerateRequest& request, const CancelCheck& cancelled,
                        GenerateSink* sink) const override;

 private:
  WorkerCore() = default;
  absl::StatusOr<RunResult> RunWithCacheImpl(const v1::RunWithCacheRequest& request,
                                             const CancelCheck& cancelled) const;
  absl::StatusOr<v1::PreparedDataset> PrepareJobImpl(const v1::PrepareJob& request) const;
  absl::StatusOr<RunResult> GetWeightsImpl(const v1::GetWeightsRequest& request,
                                           const CancelCheck& cancelled) const;
  absl::Status GenerateImpl(const v1::GenerateRequest& request, const CancelCheck& cancelled,
                            GenerateSink* sink) const;
  absl::StatusOr<RunResult> RunWithInterventionsImpl(const v1::RunWithInterventionsRequest& request,
                                                     const CancelCheck& cancelled) const;
  absl::Status CheckWeights(const std::string& expected_sha256) const;
  // The request's hook programs, checked against its [batch, pos].
  absl::StatusOr<ProgramPlan> CompilePrograms(const v1::RunWithInterventionsRequest& request,
                                              int64_t batch, int64_t pos) const;
  // Full names of the hooks the request wants gradients at (none without
  // `gradients`), after checking the objective exists.
  absl::StatusOr<std::vector<std::string>> GradientHooks(
      const v1::RunWithInterventionsRequest& request, const ProgramPlan& programs,
      bool has_metric) const;
  // The reply's share of the budget, or RESOURCE_EXHAUSTED.
  absl::StatusOr<ReplyBudget::Hold> ReserveReply(int64_t bytes, absl::string_view what) const {
    return reply_budget_->Reserve(bytes, what);
  }

  WorkerOptions options_;
  std::shared_ptr<HookedTransformer> model_;
  std::unique_ptr<Tokenizer> tokenizer_;  // null when the model dir has none
  std::vector<HookShape> hook_shapes_;    // by hook id
  v1::ModelInfo info_;
  std::unique_ptr<ReplyBudget> reply_budget_;
  std::unique_ptr<BaseRunCache> shard_cache_;  // never null (budget 0: keeps nothing)
  std::string shard_cache_scope_;              // this model: weights, processing, device
};

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_CORE_WORKER_CORE_H_
