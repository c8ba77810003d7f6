#include "service/merger.h"

#include <cmath>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace lensgrid::service {

namespace {

// The tensors a shard returns, with their shapes.
std::map<std::string, std::vector<int64_t>> ExpectedShapes(const JobPlan& plan,
                                                           const ShardRange& r) {
  std::map<std::string, std::vector<int64_t>> want;
  want["baseline"] = {r.num_prompts()};
  if (plan.patching) want["reference"] = {r.num_prompts()};
  for (const Grid& g : plan.grids) {
    const int64_t c = ShardsByPromptsOnly(plan.method) ? g.NumComponents() : r.num_components();
    want[g.name] = {r.num_prompts(), c};
  }
  return want;
}

}  // namespace

absl::Status CheckShardResult(const JobPlan& plan, const ShardRange& range,
                              const std::vector<Array>& tensors) {
  auto want = ExpectedShapes(plan, range);
  std::map<std::string, bool> seen;
  for (const Array& a : tensors) {
    auto it = want.find(a.name);
    if (it == want.end()) {
      return absl::InvalidArgumentError(absl::StrCat("unexpected result tensor \"", a.name, "\""));
    }
    if (seen[a.name]) {
      return absl::InvalidArgumentError(absl::StrCat("result tensor \"", a.name, "\" sent twice"));
    }
    seen[a.name] = true;
    if (a.shape != it->second) {
      return absl::InvalidArgumentError(absl::StrCat("result tensor \"", a.name, "\" has shape [",
                                                     absl::StrJoin(a.shape, ", "), "], expected [",
                                                     absl::StrJoin(it->second, ", "), "]"));
    }
    int64_t n = 1;
    for (int64_t d : a.shape) n *= d;
    if (static_cast<int64_t>(a.values.size()) != n) {
      return absl::InvalidArgumentError(absl::StrCat("result tensor \"", a.name, "\" has ",
                                                     a.values.size(), " values, expected ", n));
    }
  }
  for (const auto& [name, shape] : want) {
    if (!seen[name]) {
      return absl::InvalidArgumentError(absl::StrCat("result tensor \"", name, "\" is missing"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Array>> MergeShards(const JobPlan& plan,
                                               const std::vector<ShardResult>& shards) {
  const int64_t n = plan.n_prompts;
  std::map<std::string, Array> out;
  std::map<std::string, std::vector<int>> covered;
  auto init = [&](const std::string& name, std::vector<int64_t> shape) {
    int64_t size = 1;
    for (int64_t d : shape) size *= d;
    out[name] = Array{name, std::move(shape), std::vector<float>(size, std::nanf(""))};
    covered[name] = std::vector<int>(size, 0);
  };
  init("baseline", {n});
  if (plan.patching) init("reference", {n});
  for (const Grid& g : plan.grids) init(g.name + ".per_prompt", {n, g.NumComponents()});

  for (const ShardResult& s : shards) {
    const ShardRange& r = s.range;
    if (r.prompt_begin < 0 || r.prompt_end > n || r.prompt_begin >= r.prompt_end) {
      return absl::InvalidArgumentError(
          absl::StrCat("shard prompts [", r.prompt_begin, ", ", r.prompt_end, ") out of range"));
    }
    for (const Array& a : s.tensors) {
      const bool per_prompt_only = a.name == "baseline" || a.name == "reference";
      auto it = out.find(per_prompt_only ? a.name : a.name + ".per_prompt");
      if (it == out.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat("unexpected result tensor \"", a.name, "\""));
      }
      Array& dst = it->second;
      std::vector<int>& cov = covered[dst.name];
      if (per_prompt_only) {
        // Every component range of a prompt batch repeats these: keep one.
        if (r.component_begin != 0) continue;
        for (int64_t i = 0; i < r.num_prompts(); ++i) {
          dst.values[r.prompt_begin + i] = a.values[i];
          cov[r.prompt_begin + i] += 1;
        }
        continue;
      }
      const int64_t width = dst.shape[1];
      const int64_t c0 = ShardsByPromptsOnly(plan.method) ? 0 : r.component_begin;
      const int64_t cols = a.shape.size() == 2 ? a.shape[1] : -1;
      if (cols < 0 || c0 + cols > width || a.shape[0] != r.num_prompts()) {
        return absl::InvalidArgumentError(
            absl::StrCat("result tensor \"", a.name, "\" does not fit its shard's ranges"));
      }
      for (int64_t i = 0; i < r.num_prompts(); ++i) {
        for (int64_t j = 0; j < cols; ++j) {
          const int64_t k = (r.prompt_begin + i) * width + c0 + j;
          dst.values[k] = a.values[i * cols + j];
          cov[k] += 1;
        }
      }
    }
  }
  for (const auto& [name, cov] : covered) {
    for (size_t k = 0; k < cov.size(); ++k) {
      if (cov[k] != 1) {
        return absl::InvalidArgumentError(absl::StrCat("shards cover entry ", k, " of \"", name,
                                                       "\" ", cov[k], " times (must be once)"));
      }
    }
  }
  std::vector<Array> result;
  result.push_back(std::move(out["baseline"]));
  if (plan.patching) result.push_back(std::move(out["reference"]));
  for (const Grid& g : plan.grids) {
    Array& pp = out[g.name + ".per_prompt"];
    const int64_t width = pp.shape[1];
    Array mean{g.name, g.shape, std::vector<float>(width, 0.0f)};
    for (int64_t j = 0; j < width; ++j) {
      double sum = 0;
      for (int64_t i = 0; i < n; ++i) sum += pp.values[i * width + j];
      mean.values[j] = static_cast<float>(sum / static_cast<double>(n));
    }
    result.push_back(std::move(pp));
    result.push_back(std::move(mean));
  }
  return result;
}

}  // namespace lensgrid::service
