// The report's attention patterns for a job that ran on a coordinator's workers: one of those
// workers (alive, serving the job's model id and pinned weights, with a Worker API address)
// runs the job's first prompt with a cache of the heads' `blocks.L.attn.hook_pattern`, so the
// client needs no model files.
//
//   std::vector<std::pair<int, int>> heads = HeadsToShow(result, ctx.n_heads, 4);
//   absl::StatusOr<WorkerViews> v = ViewsFromJobWorkers(*coordinator, final_status, heads);
//   // v->views go to the report; v->processed says how the worker loaded the weights.
//
// The pieces are pure and exposed for tests: PickViewWorkers, PatternRequest,
// AttentionViewsFromTensors. No LibTorch.
#ifndef LENSGRID_CLIENT_WORKER_VIEWS_H_
#define LENSGRID_CLIENT_WORKER_VIEWS_H_

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/coordinator_client.h"
#include "client/report.h"
#include "common/tensor_chunks.h"
#include "lensgrid/v1/coordinator.pb.h"
#include "lensgrid/v1/worker.pb.h"

namespace lensgrid {

// (layer, head) pairs, as HeadsToShow (client/search_values.h) returns them.
using HeadList = std::vector<std::pair<int, int>>;

// The workers that can show a job's patterns, best first: alive, with an address, serving
// `model_id` with weights `weights_sha256` (any weights when empty); fewer leases first.
std::vector<v1::WorkerInfo> PickViewWorkers(const std::vector<v1::WorkerInfo>& workers,
                                            const std::string& model_id,
                                            const std::string& weights_sha256);

// "blocks.L.attn.hook_pattern", each layer of `heads` once, in order of first appearance.
std::vector<std::string> PatternHooks(const HeadList& heads);

// RunWithCache of `prompt`'s tokens (cut to kMaxAttentionTokens) as one batch row, returning no
// logits, caching PatternHooks(heads) as F32 with the batch dim removed; the worker refuses it
// (FAILED_PRECONDITION) unless it holds `weights_sha256` (when non-empty).
v1::RunWithCacheRequest PatternRequest(const v1::InlinePrompt& prompt, const HeadList& heads,
                                       const std::string& weights_sha256);

// One view per head, in order, from the tensors of PatternRequest's run on a prompt of
// `token_ids`: each pattern tensor is little-endian F32 [n_heads, q, k] (or
// [1, n_heads, q, k]) with q = k = n, the first n = min(token_ids.size(), kMaxAttentionTokens)
// tokens. The positions are labelled with `str_tokens` (one per token id, cut to n), or "#ID"
// when their count differs from the token ids'. INTERNAL naming the tensor when one is
// missing, not F32, mis-shaped or of the wrong byte size, or a head is out of its range.
absl::StatusOr<std::vector<AttentionView>> AttentionViewsFromTensors(
    const std::vector<WireTensor>& tensors, const HeadList& heads,
    const std::vector<int64_t>& token_ids, const std::vector<std::string>& str_tokens);

struct WorkerViews {
  std::vector<AttentionView> views;
  std::optional<bool> processed;  // as the worker's ModelInfo says
  std::string worker;             // "NAME at ADDRESS"
};

// Lists the coordinator's workers and asks the best match (the next ones if a call fails) for
// the patterns of `heads` on the job's first prompt (status.first_prompt, labelled with
// status.first_prompt_str_tokens). FAILED_PRECONDITION when the job has no first prompt or no
// worker fits (the message says which workers there are); else the last worker's error.
absl::StatusOr<WorkerViews> ViewsFromJobWorkers(CoordinatorClient& coordinator,
                                                const v1::JobStatus& status, const HeadList& heads,
                                                absl::Duration timeout = absl::Seconds(60));
// The same, connecting to the coordinator at `coordinator_address` (and to its workers) with
// `transport`.
absl::StatusOr<WorkerViews> ViewsFromJobWorkers(const std::string& coordinator_address,
                                                const ClientTransport& transport,
                                                const v1::JobStatus& status, const HeadList& heads,
                                                absl::Duration timeout = absl::Seconds(60));

}  // namespace lensgrid

#endif  // LENSGRID_CLIENT_WORKER_VIEWS_H_
