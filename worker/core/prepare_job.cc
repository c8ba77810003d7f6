// WorkerCore::PrepareJob: a coordinator's job named a dataset, not its
// prompts; this worker builds it with its own tokenizer and config
// (worker/model/analysis/dataset.h) and reports its model.
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/core/guarded.h"
#include "worker/core/worker_core.h"
#include "worker/model/analysis/dataset.h"
#include "worker/model/hooked_transformer.h"

namespace lensgrid {
namespace {

constexpr int64_t kDefaultPrompts = 16;  // as `lensgrid search --n-prompts`
constexpr int64_t kDefaultSeqLen = 16;   // as `lensgrid search --seq-len`

v1::InlinePrompt ToInlinePrompt(const Prompt& p) {
  v1::InlinePrompt q;
  q.mutable_tokens()->Add(p.tokens.begin(), p.tokens.end());
  q.mutable_corrupted_tokens()->Add(p.corrupted_tokens.begin(), p.corrupted_tokens.end());
  q.mutable_answers()->Add(p.answers.begin(), p.answers.end());
  q.mutable_wrongs()->Add(p.wrongs.begin(), p.wrongs.end());
  q.set_loss_start(p.loss_start);
  return q;
}

absl::StatusOr<Dataset> BuildDataset(const v1::DatasetRequest& request,
                                     const HookedTransformerConfig& cfg, const Tokenizer* tokenizer,
                                     int64_t max_prompts) {
  if (request.n_prompts() < 0 || request.n_prompts() > max_prompts) {
    return absl::ResourceExhaustedError(absl::StrCat("the dataset asks for ", request.n_prompts(),
                                                     " prompts; this worker's limit is ",
                                                     max_prompts, " (--max-dataset-prompts)"));
  }
  if (request.jsonl().empty()) {
    if (absl::EndsWith(request.name(), ".jsonl")) {
      return absl::InvalidArgumentError(
          absl::StrCat("dataset ", request.name(),
                       ": a JSONL dataset travels as its contents (DatasetRequest.jsonl), "
                       "a worker reads no client's files"));
    }
    DatasetSpec spec{request.name(),
                     request.n_prompts() > 0 ? request.n_prompts() : kDefaultPrompts,
                     request.seed(), request.seq_len() > 0 ? request.seq_len() : kDefaultSeqLen};
    return MakeDataset(spec, cfg, tokenizer);
  }
  const std::string source = request.name().empty() ? "dataset.jsonl" : request.name();
  LG_ASSIGN_OR_RETURN(Dataset ds, ParseJsonlDataset(request.jsonl(), source, cfg, tokenizer));
  if (request.n_prompts() > 0 && static_cast<int64_t>(ds.prompts.size()) > request.n_prompts()) {
    ds.prompts.resize(static_cast<size_t>(request.n_prompts()));
  }
  if (ds.prompts.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("dataset ", source, " has no prompts"));
  }
  if (static_cast<int64_t>(ds.prompts.size()) > max_prompts) {
    return absl::ResourceExhaustedError(absl::StrCat("dataset ", source, " has ", ds.prompts.size(),
                                                     " prompts; this worker's limit is ",
                                                     max_prompts, " (--max-dataset-prompts)"));
  }
  return ds;
}

}  // namespace

absl::StatusOr<v1::PreparedDataset> WorkerCore::PrepareJob(const v1::PrepareJob& request) const {
  return Guarded("PrepareJob", [&] { return PrepareJobImpl(request); });
}

absl::StatusOr<v1::PreparedDataset> WorkerCore::PrepareJobImpl(
    const v1::PrepareJob& request) const {
  const HookedTransformerConfig& cfg = model_->cfg();
  v1::PreparedDataset out;
  v1::ModelShape* shape = out.mutable_model();
  shape->set_n_layers(cfg.n_layers);
  shape->set_n_heads(cfg.n_heads);
  shape->set_attn_only(cfg.attn_only);
  shape->set_d_vocab(cfg.d_vocab);
  shape->set_n_ctx(cfg.n_ctx);
  shape->set_processed(info_.processed());
  out.set_weights_sha256(info_.weights_sha256());
  std::vector<int64_t> first;
  if (request.has_dataset()) {
    LG_ASSIGN_OR_RETURN(Dataset ds, BuildDataset(request.dataset(), cfg, tokenizer_.get(),
                                                 options_.max_dataset_prompts));
    out.mutable_prompts()->Reserve(static_cast<int>(ds.prompts.size()));
    for (const Prompt& p : ds.prompts) *out.add_prompts() = ToInlinePrompt(p);
    first = ds.prompts.front().tokens;
  } else {
    first.assign(request.first_prompt().tokens().begin(), request.first_prompt().tokens().end());
  }
  if (tokenizer_ != nullptr && !first.empty()) {
    // Labels for attention views; ids out of the vocabulary leave them out
    // (the shard that runs them says what is wrong).
    absl::StatusOr<std::vector<std::string>> strs = tokenizer_->ToStrTokens(first);
    if (strs.ok()) {
      for (std::string& t : *strs) out.add_first_prompt_str_tokens(std::move(t));
    }
  }
  return out;
}

}  // namespace lensgrid
