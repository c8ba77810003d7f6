#include "worker/core/run_inputs.h"

#include <torch/torch.h>

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/core/wire_tensors.h"

namespace lensgrid {
namespace {

absl::Status CheckBatchLimits(int64_t batch, int64_t pos, const WorkerOptions& limits,
                              absl::string_view what) {
  if (batch > limits.max_batch) {
    return absl::ResourceExhaustedError(
        absl::StrCat(what, ": a batch of ", batch, " sequences is over this worker's --max-batch (",
                     limits.max_batch, "); split the request"));
  }
  if (batch * pos > limits.max_tokens) {
    return absl::ResourceExhaustedError(
        absl::StrCat(what, ": ", batch, " x ", pos, " = ", batch * pos,
                     " tokens is over this worker's --max-tokens (", limits.max_tokens,
                     "); send fewer or shorter sequences"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckTextBytes(const google::protobuf::RepeatedPtrField<std::string>& texts,
                            const WorkerOptions& limits, absl::string_view what) {
  int64_t bytes = 0;
  for (const std::string& t : texts) bytes += static_cast<int64_t>(t.size());
  if (bytes > limits.max_text_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat(what, ": ", bytes, " bytes of text is over this worker's ",
                     "--max-text-bytes (", limits.max_text_bytes, "); send less text per request"));
  }
  return absl::OkStatus();
}

namespace {

absl::StatusOr<ForwardInput> FromTexts(const v1::ModelInput& in, const Tokenizer* tokenizer,
                                       const HookedTransformerConfig& cfg,
                                       const WorkerOptions& limits, absl::string_view what) {
  if (tokenizer == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat(what,
                     ": the worker's model dir has no tokenizer files and no "
                     "default GPT-2 files were "
                     "found; send token ids instead of texts"));
  }
  if (in.has_attention_mask()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": attention_mask is only for token ids; texts are masked for you"));
  }
  const int64_t batch = in.texts_size();
  LG_RETURN_IF_ERROR(CheckBatchLimits(batch, 1, limits, what));
  LG_RETURN_IF_ERROR(CheckTextBytes(in.texts(), limits, what));
  std::vector<std::vector<int64_t>> rows;
  int64_t pos = 0;
  const bool bos = PrependsBos(in);
  for (int64_t i = 0; i < batch; ++i) {
    std::vector<int64_t> ids;
    if (bos) ids.push_back(cfg.bos_token_id);
    tokenizer->EncodeTo(in.texts(i), &ids);
    if (ids.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ".texts[", i, "] is empty and prepend_bos is false: no tokens to run"));
    }
    pos = std::max<int64_t>(pos, ids.size());
    rows.push_back(std::move(ids));
  }
  LG_RETURN_IF_ERROR(CheckBatchLimits(batch, pos, limits, what));
  ForwardInput out;
  out.tokens = torch::full({batch, pos}, cfg.eos_token_id, torch::kInt64);
  torch::Tensor mask = torch::zeros({batch, pos}, torch::kBool);
  bool padded = false;
  for (int64_t i = 0; i < batch; ++i) {
    const int64_t n = rows[i].size();
    const int64_t begin = in.padding_side() == v1::ModelInput::PADDING_LEFT ? pos - n : 0;
    out.tokens[i].slice(0, begin, begin + n).copy_(torch::tensor(rows[i], torch::kInt64));
    mask[i].slice(0, begin, begin + n).fill_(true);
    padded = padded || n != pos;
  }
  if (padded) out.attention_mask = mask;
  return out;
}

}  // namespace

absl::StatusOr<ForwardInput> PrepareInput(const v1::ModelInput& in, const Tokenizer* tokenizer,
                                          const HookedTransformerConfig& cfg,
                                          const WorkerOptions& limits, absl::string_view what) {
  if (in.texts_size() > 0 && in.has_tokens()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": give texts or tokens, not both"));
  }
  if (in.texts_size() > 0) return FromTexts(in, tokenizer, cfg, limits, what);
  if (!in.has_tokens()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": no texts and no tokens given"));
  }
  const std::string tokens_what = absl::StrCat(what, ".tokens");
  if (in.tokens().dtype() != v1::I64 && in.tokens().dtype() != v1::I32) {
    return absl::InvalidArgumentError(absl::StrCat(tokens_what, ": dtype must be I64 or I32, got ",
                                                   v1::DType_Name(in.tokens().dtype())));
  }
  LG_ASSIGN_OR_RETURN(torch::Tensor tokens, FromProto(in.tokens(), tokens_what));
  if (tokens.dim() == 1) tokens = tokens.unsqueeze(0);
  if (tokens.dim() != 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        tokens_what, ": shape must be [batch, pos] or [pos], got ", tokens.dim(), " dims"));
  }
  LG_RETURN_IF_ERROR(CheckBatchLimits(tokens.size(0), tokens.size(1), limits, what));
  ForwardInput out;
  out.tokens = tokens.to(torch::kInt64);
  if (in.has_attention_mask()) {
    const std::string mask_what = absl::StrCat(what, ".attention_mask");
    LG_ASSIGN_OR_RETURN(torch::Tensor mask, FromProto(in.attention_mask(), mask_what));
    if (mask.sizes() != out.tokens.sizes()) {
      return absl::InvalidArgumentError(absl::StrCat(mask_what, ": shape ", c10::str(mask.sizes()),
                                                     " does not match the tokens' ",
                                                     c10::str(out.tokens.sizes())));
    }
    if (!mask.ne(0).any(1).all().item<bool>()) {
      return absl::InvalidArgumentError(
          absl::StrCat(mask_what, ": every sequence needs at least one real token"));
    }
    out.attention_mask = mask.ne(0);
  }
  return out;
}

bool PrependsBos(const v1::ModelInput& input) {
  return input.has_prepend_bos() ? input.prepend_bos() : !input.no_bos();
}

bool PrependsBos(const v1::TokenizeRequest& request) {
  return !request.has_prepend_bos() || request.prepend_bos();
}

absl::StatusOr<ForwardOptions> ToRunOptions(const v1::RunOptions& options) {
  ForwardOptions run;
  switch (options.return_type()) {
    case v1::RETURN_TYPE_UNSPECIFIED:
    case v1::RETURN_LOGITS:
      run.return_type = ForwardReturn::kLogits;
      break;
    case v1::RETURN_LOSS:
      run.return_type = ForwardReturn::kLoss;
      break;
    case v1::RETURN_BOTH:
      run.return_type = ForwardReturn::kBoth;
      break;
    case v1::RETURN_NONE:
      run.return_type = ForwardReturn::kNone;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("options.return_type: unknown value ", options.return_type()));
  }
  run.per_token_loss = options.per_token_loss();
  if (options.has_stop_at_layer()) run.stop_at_layer = options.stop_at_layer();
  return run;
}

CacheOptions ToCacheOptions(const v1::CacheSpec& spec) {
  CacheOptions out;
  out.names.assign(spec.names().begin(), spec.names().end());
  out.regexes.assign(spec.regexes().begin(), spec.regexes().end());
  if (spec.has_positions()) {
    PositionSlice slice;
    if (spec.positions().has_start()) slice.start = spec.positions().start();
    if (spec.positions().has_stop()) slice.stop = spec.positions().stop();
    out.positions = slice;
  }
  out.remove_batch_dim = spec.remove_batch_dim();
  return out;
}

absl::StatusOr<int64_t> CheckResponseBytes(const HookedTransformer& model,
                                           const std::vector<HookShape>& hook_shapes,
                                           const std::vector<std::string>& names,
                                           const ForwardInput& input, const ForwardOptions& run,
                                           size_t logits_elem_bytes, const v1::CacheSpec* cache,
                                           size_t cache_elem_bytes, int64_t max_response_bytes) {
  const HookedTransformerConfig& cfg = model.cfg();
  const int64_t batch = input.tokens.size(0), pos = input.tokens.size(1);
  int stop = run.stop_at_layer.value_or(cfg.n_layers);
  if (stop < 0) stop += cfg.n_layers;
  double bytes = 0;  // double: no overflow for absurd requests
  const bool logits = stop >= cfg.n_layers && (run.return_type == ForwardReturn::kLogits ||
                                               run.return_type == ForwardReturn::kBoth);
  if (logits) bytes += static_cast<double>(batch) * pos * cfg.d_vocab * logits_elem_bytes;
  if (cache != nullptr) {
    int64_t cached_pos = pos;
    if (cache->has_positions()) {
      const auto& p = cache->positions();
      cached_pos = SliceLength(p.has_start() ? std::optional<int64_t>(p.start()) : std::nullopt,
                               p.has_stop() ? std::optional<int64_t>(p.stop()) : std::nullopt, pos);
    }
    const auto& all = model.hook_names();
    for (const std::string& name : names) {
      std::optional<int> layer = HookLayer(name);
      const bool fires = layer.has_value()
                             ? *layer < stop
                             : !absl::StartsWith(name, "ln_final") || stop >= cfg.n_layers;
      if (!fires) continue;
      const size_t id = std::find(all.begin(), all.end(), name) - all.begin();
      if (id >= hook_shapes.size()) continue;
      double n = cache_elem_bytes;
      for (int64_t d :
           ConcreteShape(hook_shapes[id], batch, pos, cached_pos, cache->remove_batch_dim())) {
        n *= d;
      }
      bytes += n;
    }
  }
  if (bytes > static_cast<double>(max_response_bytes)) {
    return absl::ResourceExhaustedError(
        absl::StrCat("this reply would hold ", static_cast<int64_t>(bytes),
                     " bytes of logits and activations, over this worker's "
                     "--max-response-bytes (",
                     max_response_bytes,
                     "); cache fewer names or positions, use cache.dtype F16, "
                     "or send a smaller batch"));
  }
  return static_cast<int64_t>(bytes);
}

}  // namespace lensgrid
