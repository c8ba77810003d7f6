// Request protos -> model inputs and options, with the worker's per-request
// limits checked before any model work.
//
//   LG_ASSIGN_OR_RETURN(ForwardInput in,
//                       PrepareInput(request.input(), tokenizer, model.cfg(),
//                       options, "input"));
//   LG_ASSIGN_OR_RETURN(ForwardOptions run, ToRunOptions(request.options()));
#ifndef LENSGRID_WORKER_CORE_RUN_INPUTS_H_
#define LENSGRID_WORKER_CORE_RUN_INPUTS_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "lensgrid/v1/worker.pb.h"
#include "worker/core/worker_core.h"
#include "worker/hook_shapes.h"
#include "worker/model/hooked_transformer.h"
#include "worker/model/tokenizer/tokenizer.h"

namespace lensgrid {

// Whether texts get BOS: ModelInput.prepend_bos, absent = true, or the
// deprecated no_bos when only it is set. Tokenize has the same default.
bool PrependsBos(const v1::ModelInput& input);
bool PrependsBos(const v1::TokenizeRequest& request);

// Texts (tokenized, BOS unless PrependsBos says not, padded and masked when lengths differ)
// or ids. INVALID_ARGUMENT for bad input, FAILED_PRECONDITION for text without
// a tokenizer, RESOURCE_EXHAUSTED over --max-batch / --max-tokens. `what`
// names the field in errors.
absl::StatusOr<ForwardInput> PrepareInput(const v1::ModelInput& input, const Tokenizer* tokenizer,
                                          const HookedTransformerConfig& cfg,
                                          const WorkerOptions& limits, absl::string_view what);

absl::StatusOr<ForwardOptions> ToRunOptions(const v1::RunOptions& options);

CacheOptions ToCacheOptions(const v1::CacheSpec& spec);

// RESOURCE_EXHAUSTED when the texts hold more than --max-text-bytes.
absl::Status CheckTextBytes(const google::protobuf::RepeatedPtrField<std::string>& texts,
                            const WorkerOptions& limits, absl::string_view what);

// Bytes of the logits (when returned) plus the cache `names` will hold;
// RESOURCE_EXHAUSTED over --max-response-bytes.
absl::StatusOr<int64_t> CheckResponseBytes(const HookedTransformer& model,
                                           const std::vector<HookShape>& hook_shapes,
                                           const std::vector<std::string>& names,
                                           const ForwardInput& input, const ForwardOptions& run,
                                           size_t logits_elem_bytes, const v1::CacheSpec* cache,
                                           size_t cache_elem_bytes, int64_t max_response_bytes);

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_CORE_RUN_INPUTS_H_
