#include "client/search_output.h"

#include <sys/stat.h>
#include <torch/torch.h>

#include <fstream>
#include <iomanip>
#include <ostream>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/model/tensor_io.h"

namespace lensgrid {
namespace {

// A tensor as nested JSON lists.
nlohmann::json Nested(const torch::Tensor& t) {
  if (t.dim() == 0) return t.item<double>();
  nlohmann::json arr = nlohmann::json::array();
  for (int64_t i = 0; i < t.size(0); ++i) arr.push_back(Nested(t[i]));
  return arr;
}

}  // namespace

absl::StatusOr<SearchSpec> SpecOfContext(const SearchContext& ctx) {
  SearchSpec spec;
  LG_ASSIGN_OR_RETURN(spec.method, ParseMethod(ctx.method));
  LG_ASSIGN_OR_RETURN(spec.metric, ParseMetric(ctx.metric));
  LG_ASSIGN_OR_RETURN(spec.ablation, ParseAblation(ctx.ablation));
  return spec;
}

absl::Status WriteSearchOutput(const SearchResult& result, const SearchContext& ctx,
                               const std::vector<AttentionView>& attention,
                               const std::string& output_dir, std::ostream& out,
                               const SearchResult* detectors) {
  const SearchSpec& spec = result.spec;
  const bool patching = IsPatching(spec.method);
  const double baseline = result.baseline.mean().item<double>();
  out << "search: " << MethodName(spec.method) << " on " << ctx.dataset << " (" << ctx.n_prompts
      << " prompts), metric " << MetricName(spec.metric);
  if (spec.method == Method::kAblateHeads || spec.method == Method::kAblateLayers) {
    out << ", " << AblationName(spec.ablation) << " ablation";
  }
  out << ", " << std::fixed << std::setprecision(2) << ctx.seconds << " s\n";
  out << (patching ? "corrupted" : "clean") << " " << MetricName(spec.metric) << ": "
      << std::setprecision(4) << baseline << "\n";
  double reference = 0;
  if (patching) {
    reference = result.reference.mean().item<double>();
    out << "clean " << MetricName(spec.metric) << ": " << reference << "\n";
  }

  nlohmann::ordered_json j;
  j["method"] = MethodName(spec.method);
  j["metric"] = MetricName(spec.metric);
  j["ablation"] = AblationName(spec.ablation);
  j["delta"] =
      patching ? "metric(patched) - metric(corrupted)" : "metric(intervened) - metric(clean)";
  const nlohmann::ordered_json context = ContextToJson(ctx);
  for (const char* key : {"model", "dataset", "run"}) j[key] = context[key];
  j["baseline"] = baseline;
  if (patching) j["clean"] = reference;
  NamedTensors tensors;
  for (const SearchOutput& o : result.outputs) {
    nlohmann::ordered_json oj;
    oj["name"] = o.name;
    oj["axes"] = o.axes;
    oj["shape"] = o.shape;
    oj["values"] = Nested(o.mean);
    if (patching && ctx.normalize) {
      // (patched - corrupted) / (clean - corrupted), on means over prompts.
      oj["normalized"] = Nested(o.mean / (reference - baseline));
    }
    nlohmann::json ranked = nlohmann::json::array();
    for (auto [idx, value] : RankComponents(o, 1 << 30)) {
      ranked.push_back({{"component", ComponentName(o, idx)}, {"value", value}});
    }
    oj["ranked"] = ranked;
    j["outputs"].push_back(oj);
    out << "top components of " << o.name << " (by |value|):\n";
    for (auto [idx, value] : RankComponents(o, 10)) {
      out << "  " << std::setw(16) << std::left << ComponentName(o, idx) << std::right
          << std::showpos << std::defaultfloat << std::setprecision(4) << value << std::noshowpos
          << std::fixed << "\n";
    }
    tensors.emplace_back(o.name, o.mean.to(torch::kFloat32));
    std::vector<int64_t> pp_shape = {o.per_prompt.size(0)};
    pp_shape.insert(pp_shape.end(), o.shape.begin(), o.shape.end());
    tensors.emplace_back(o.name + ".per_prompt",
                         o.per_prompt.reshape(pp_shape).to(torch::kFloat32));
  }
  if (detectors != nullptr) {
    for (const SearchOutput& o : detectors->outputs) {
      j["detectors"][o.name] = Nested(o.mean);
      tensors.emplace_back("detectors." + o.name, o.mean.to(torch::kFloat32));
      out << "top heads by " << o.name << " score:";
      for (auto [idx, value] : RankComponents(o, 3)) {
        out << "  " << ComponentName(o, idx) << " " << std::setprecision(3) << value;
      }
      out << "\n";
    }
  }
  tensors.emplace_back("baseline", result.baseline.to(torch::kFloat32));
  if (patching) tensors.emplace_back("clean", result.reference.to(torch::kFloat32));

  if (output_dir.empty()) return absl::OkStatus();
  ::mkdir(output_dir.c_str(), 0755);
  std::ofstream json_out(output_dir + "/result.json");
  json_out << j.dump(1) << "\n";
  if (!json_out) return absl::PermissionDeniedError("cannot write " + output_dir + "/result.json");
  LG_RETURN_IF_ERROR(
      WriteTensorFile(output_dir + "/result.safetensors", tensors,
                      {{"method", MethodName(spec.method)}, {"metric", MetricName(spec.metric)}}));
  std::ofstream html(output_dir + "/report.html");
  html << RenderReportHtml({j, attention, ""});
  if (!html) return absl::PermissionDeniedError("cannot write " + output_dir + "/report.html");
  out << "wrote " << output_dir << "/result.json, result.safetensors and report.html\n";
  return absl::OkStatus();
}

}  // namespace lensgrid
