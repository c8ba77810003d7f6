#include "client/search_values.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/search_methods.h"
#include "common/status_macros.h"

namespace lensgrid {

absl::StatusOr<SearchNames> NamesOfContext(const SearchContext& ctx) {
  SearchNames names;
  LG_ASSIGN_OR_RETURN(names.method, ParseMethod(ctx.method));
  LG_ASSIGN_OR_RETURN(names.metric, ParseMetric(ctx.metric));
  LG_ASSIGN_OR_RETURN(names.ablation, ParseAblation(ctx.ablation));
  names.circuit = ctx.circuit;
  if (ctx.n_layers > 0) {
    LG_RETURN_IF_ERROR(CheckCircuitParams(names.method, names.circuit,
                                          {ctx.n_layers, ctx.n_heads, ctx.attn_only}));
  }
  return names;
}

std::vector<std::pair<int64_t, double>> RankGrid(const GridValues& grid, int64_t k) {
  std::vector<int64_t> order(grid.mean.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&grid](int64_t a, int64_t b) {
    return std::fabs(grid.mean[a]) > std::fabs(grid.mean[b]);
  });
  std::vector<std::pair<int64_t, double>> out;
  for (int64_t i = 0; i < std::min<int64_t>(k, static_cast<int64_t>(order.size())); ++i) {
    out.emplace_back(order[i], grid.mean[order[i]]);
  }
  return out;
}

std::string GridComponentName(const GridValues& grid, int64_t flat_index) {
  return ComponentName(grid.axes, grid.shape, flat_index);
}

std::vector<std::pair<int, int>> HeadsToShow(const SearchValues& values, int n_heads,
                                             int max_heads) {
  std::vector<std::pair<int, int>> heads;
  if (values.outputs.empty()) return heads;
  const GridValues& o = values.outputs.front();
  const bool by_head = o.axes.size() >= 2 && o.axes[0] == "layer" && o.axes[1] == "head";
  std::set<std::pair<int, int>> seen;
  for (auto [flat, value] : RankGrid(o, 1 << 30)) {
    if (static_cast<int>(heads.size()) >= max_heads) break;
    if (by_head) {
      int64_t per_layer = 1;
      for (size_t i = 1; i < o.shape.size(); ++i) per_layer *= o.shape[i];
      const int layer = static_cast<int>(flat / per_layer);
      const int head = static_cast<int>((flat % per_layer) / (per_layer / o.shape[1]));
      if (seen.insert({layer, head}).second) heads.push_back({layer, head});
    } else {
      // A layer-level output: every head of its most important layer.
      const auto layer_axis = std::find(o.axes.begin(), o.axes.end(), "layer");
      if (layer_axis == o.axes.end()) break;
      const size_t a = static_cast<size_t>(layer_axis - o.axes.begin());
      int64_t stride = 1;
      for (size_t i = a + 1; i < o.shape.size(); ++i) stride *= o.shape[i];
      const int layer = static_cast<int>((flat / stride) % o.shape[a]);
      for (int h = 0; h < n_heads && static_cast<int>(heads.size()) < max_heads; ++h) {
        if (seen.insert({layer, h}).second) heads.push_back({layer, h});
      }
    }
  }
  return heads;
}

}  // namespace lensgrid
