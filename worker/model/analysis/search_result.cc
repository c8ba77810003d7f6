// Merging shards and naming components (the parts of search.h that need no model).
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "worker/model/analysis/search.h"

namespace lensgrid {

namespace {

absl::StatusOr<SearchResult> Merge(const std::vector<SearchResult>& shards, int64_t n_prompts,
                                   const HookedTransformerConfig& cfg, int64_t n_pos) {
  SearchResult whole;
  whole.spec = shards.front().spec;
  whole.outputs = SearchOutputs(whole.spec, cfg, n_pos);
  whole.baseline = torch::full({n_prompts}, std::nan(""));
  const bool patching = NeedsCorrupted(whole.spec.method);  // has a reference
  if (patching) whole.reference = torch::full({n_prompts}, std::nan(""));
  std::vector<torch::Tensor> covered;
  for (auto& o : whole.outputs) {
    int64_t c = 1;
    for (int64_t d : o.shape) c *= d;
    o.per_prompt = torch::zeros({n_prompts, c});
    covered.push_back(torch::zeros({n_prompts, c}, torch::kInt32));
  }
  for (const SearchResult& s : shards) {
    if (s.spec.method != whole.spec.method || s.outputs.size() != whole.outputs.size()) {
      return absl::InvalidArgumentError("shards come from different searches");
    }
    const int64_t n = s.outputs.front().per_prompt.size(0);
    if (s.prompt_begin < 0 || s.prompt_begin + n > n_prompts) {
      return absl::InvalidArgumentError(absl::StrCat("shard prompts [", s.prompt_begin, ", ",
                                                     s.prompt_begin + n, ") out of range"));
    }
    whole.counts.forwards += s.counts.forwards;
    whole.counts.backwards += s.counts.backwards;
    whole.counts.block_rows += s.counts.block_rows;
    whole.counts.base_runs_reused += s.counts.base_runs_reused;
    whole.counts.means_reused += s.counts.means_reused;
    whole.baseline.slice(0, s.prompt_begin, s.prompt_begin + n) = s.baseline;
    if (patching) whole.reference.slice(0, s.prompt_begin, s.prompt_begin + n) = s.reference;
    for (size_t k = 0; k < s.outputs.size(); ++k) {
      const torch::Tensor& part = s.outputs[k].per_prompt;
      const int64_t c0 = s.component_begin, c1 = c0 + part.size(1);
      if (c1 > whole.outputs[k].per_prompt.size(1)) {
        return absl::InvalidArgumentError("shard components out of range");
      }
      whole.outputs[k].per_prompt.slice(0, s.prompt_begin, s.prompt_begin + n).slice(1, c0, c1) =
          part;
      covered[k].slice(0, s.prompt_begin, s.prompt_begin + n).slice(1, c0, c1) += 1;
    }
  }
  for (size_t k = 0; k < covered.size(); ++k) {
    if (!covered[k].eq(1).all().item<bool>()) {
      return absl::InvalidArgumentError(
          absl::StrCat("shards do not cover every (prompt, component) of \"", whole.outputs[k].name,
                       "\" exactly once"));
    }
    whole.outputs[k].mean = whole.outputs[k].per_prompt.mean(0).view(whole.outputs[k].shape);
  }
  return whole;
}

}  // namespace

absl::StatusOr<SearchResult> MergeSearchShards(const std::vector<SearchResult>& shards,
                                               int64_t n_prompts,
                                               const HookedTransformerConfig& cfg, int64_t n_pos) {
  if (shards.empty()) return absl::InvalidArgumentError("no shards to merge");
  try {
    return Merge(shards, n_prompts, cfg, n_pos);
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("shards do not fit together: ", e.what_without_backtrace()));
  }
}

std::vector<std::pair<int64_t, double>> RankComponents(const SearchOutput& output, int64_t k) {
  torch::Tensor flat = output.mean.reshape({-1}).to(torch::kFloat64);
  auto order = flat.abs().argsort(0, /*descending=*/true);
  std::vector<std::pair<int64_t, double>> out;
  for (int64_t i = 0; i < std::min<int64_t>(k, flat.size(0)); ++i) {
    int64_t idx = order[i].item<int64_t>();
    out.emplace_back(idx, flat[idx].item<double>());
  }
  return out;
}

std::string ComponentName(const SearchOutput& output, int64_t flat_index) {
  return ComponentName(output.axes, output.shape, flat_index);
}

}  // namespace lensgrid
