#include "client/search_output.h"

#include <sys/stat.h>

#include <fstream>
#include <iomanip>
#include <ostream>

#include "absl/strings/str_cat.h"
#include "common/safetensors.h"
#include "common/status_macros.h"

namespace lensgrid {
namespace {

// Row-major values of `shape` as nested JSON lists.
nlohmann::json Nested(const std::vector<double>& values, const std::vector<int64_t>& shape,
                      size_t dim = 0, size_t offset = 0) {
  if (dim == shape.size()) return values[offset];
  size_t stride = 1;
  for (size_t d = dim + 1; d < shape.size(); ++d) stride *= static_cast<size_t>(shape[d]);
  nlohmann::json arr = nlohmann::json::array();
  for (int64_t i = 0; i < shape[dim]; ++i) {
    arr.push_back(Nested(values, shape, dim + 1, offset + static_cast<size_t>(i) * stride));
  }
  return arr;
}

double Mean(const std::vector<double>& v) {
  double sum = 0;
  for (double x : v) sum += x;
  return v.empty() ? 0.0 : sum / static_cast<double>(v.size());
}

// A tensor to write as F32: the values and their shape (kept alive by the caller).
struct F32Tensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> values;
};

F32Tensor ToF32(std::string name, const std::vector<double>& values, std::vector<int64_t> shape) {
  return {std::move(name), std::move(shape), std::vector<float>(values.begin(), values.end())};
}

}  // namespace

absl::Status WriteSearchOutput(const SearchValues& result, const SearchContext& ctx,
                               const std::vector<AttentionView>& attention,
                               const std::string& output_dir, std::ostream& out,
                               const SearchValues* detectors) {
  const SearchNames& spec = result.names;
  const bool patching = IsPatching(spec.method);
  const double baseline = Mean(result.baseline);
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
    reference = Mean(result.reference);
    out << "clean " << MetricName(spec.metric) << ": " << reference << "\n";
  }

  nlohmann::ordered_json j;
  j["method"] = MethodName(spec.method);
  j["metric"] = MetricName(spec.metric);
  j["ablation"] = AblationName(spec.ablation);
  j["delta"] = IsAttribution(spec.method)
                   ? "first-order estimate of metric(patched) - metric(corrupted): "
                     "(clean - corrupted) . d metric / d activation at the corrupted run"
               : patching ? "metric(patched) - metric(corrupted)"
                          : "metric(intervened) - metric(clean)";
  const nlohmann::ordered_json context = ContextToJson(ctx);
  for (const char* key : {"model", "dataset", "run"}) j[key] = context[key];
  j["baseline"] = baseline;
  if (patching) j["clean"] = reference;
  std::vector<F32Tensor> tensors;
  for (const GridValues& o : result.outputs) {
    nlohmann::ordered_json oj;
    oj["name"] = o.name;
    oj["axes"] = o.axes;
    oj["shape"] = o.shape;
    oj["values"] = Nested(o.mean, o.shape);
    if (patching && ctx.normalize) {
      // (patched - corrupted) / (clean - corrupted), on means over prompts.
      std::vector<double> normalized = o.mean;
      for (double& v : normalized) v /= reference - baseline;
      oj["normalized"] = Nested(normalized, o.shape);
    }
    nlohmann::json ranked = nlohmann::json::array();
    for (auto [idx, value] : RankGrid(o, 1 << 30)) {
      ranked.push_back({{"component", GridComponentName(o, idx)}, {"value", value}});
    }
    oj["ranked"] = ranked;
    j["outputs"].push_back(oj);
    out << "top components of " << o.name << " (by |value|):\n";
    for (auto [idx, value] : RankGrid(o, 10)) {
      out << "  " << std::setw(16) << std::left << GridComponentName(o, idx) << std::right
          << std::showpos << std::defaultfloat << std::setprecision(4) << value << std::noshowpos
          << std::fixed << "\n";
    }
    tensors.push_back(ToF32(o.name, o.mean, o.shape));
    std::vector<int64_t> pp_shape = {static_cast<int64_t>(result.baseline.size())};
    pp_shape.insert(pp_shape.end(), o.shape.begin(), o.shape.end());
    tensors.push_back(ToF32(o.name + ".per_prompt", o.per_prompt, pp_shape));
  }
  if (detectors != nullptr) {
    for (const GridValues& o : detectors->outputs) {
      j["detectors"][o.name] = Nested(o.mean, o.shape);
      tensors.push_back(ToF32("detectors." + o.name, o.mean, o.shape));
      out << "top heads by " << o.name << " score:";
      for (auto [idx, value] : RankGrid(o, 3)) {
        out << "  " << GridComponentName(o, idx) << " " << std::setprecision(3) << value;
      }
      out << "\n";
    }
  }
  const int64_t n_prompts = static_cast<int64_t>(result.baseline.size());
  tensors.push_back(ToF32("baseline", result.baseline, {n_prompts}));
  if (patching) tensors.push_back(ToF32("clean", result.reference, {n_prompts}));

  if (output_dir.empty()) return absl::OkStatus();
  ::mkdir(output_dir.c_str(), 0755);
  std::ofstream json_out(output_dir + "/result.json");
  json_out << j.dump(1) << "\n";
  if (!json_out) return absl::PermissionDeniedError("cannot write " + output_dir + "/result.json");
  std::vector<SafetensorsTensorView> views;
  for (const F32Tensor& t : tensors) {
    views.push_back(
        {t.name, TensorDType::kF32, t.shape, t.values.data(), t.values.size() * sizeof(float)});
  }
  LG_RETURN_IF_ERROR(
      WriteSafetensors(output_dir + "/result.safetensors", views,
                       {{"method", MethodName(spec.method)}, {"metric", MetricName(spec.metric)}}));
  std::ofstream html(output_dir + "/report.html");
  html << RenderReportHtml({j, attention, ""});
  if (!html) return absl::PermissionDeniedError("cannot write " + output_dir + "/report.html");
  out << "wrote " << output_dir << "/result.json, result.safetensors and report.html\n";
  return absl::OkStatus();
}

}  // namespace lensgrid
