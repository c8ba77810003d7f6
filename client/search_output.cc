#include "client/search_output.h"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
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
                               const SearchValues* detectors, const CircuitFindings* circuit) {
  const SearchNames& spec = result.names;
  // Patching's baseline is the corrupted run and its reference the clean one; circuit methods'
  // the other way round.
  const bool patching = NeedsCorrupted(spec.method);
  const bool circuit_method = IsCircuit(spec.method);
  const char* baseline_run = !patching ? "clean" : circuit_method ? "clean" : "corrupted";
  const char* reference_run = circuit_method ? "corrupted" : "clean";
  // Edge names, for the circuit methods only (the only ones with an [edge] grid).
  const CircuitGraph graph =
      CircuitGraph::Build(circuit_method ? ShapeOfContext(ctx) : CircuitShape{1, 1, true});
  auto component = [&](const GridValues& o, int64_t idx) {
    return o.axes == std::vector<std::string>{"edge"} &&
                   idx < static_cast<int64_t>(graph.edges().size())
               ? graph.EdgeName(static_cast<int>(idx))
               : GridComponentName(o, idx);
  };
  const double baseline = Mean(result.baseline);
  out << "search: " << MethodName(spec.method) << " on " << ctx.dataset << " (" << ctx.n_prompts
      << " prompts), metric " << MetricName(spec.metric);
  if (spec.method == Method::kAblateHeads || spec.method == Method::kAblateLayers) {
    out << ", " << AblationName(spec.ablation) << " ablation";
  }
  out << ", " << std::fixed << std::setprecision(2) << ctx.seconds << " s\n";
  out << baseline_run << " " << MetricName(spec.metric) << ": " << std::setprecision(4) << baseline
      << "\n";
  double reference = 0;
  if (patching) {
    reference = Mean(result.reference);
    out << reference_run << " " << MetricName(spec.metric) << ": " << reference << "\n";
  }

  nlohmann::ordered_json j;
  j["method"] = MethodName(spec.method);
  j["metric"] = MetricName(spec.metric);
  j["ablation"] = AblationName(spec.ablation);
  if (circuit_method && !spec.circuit.receivers.empty()) j["receivers"] = spec.circuit.receivers;
  if (spec.method == Method::kEapIg) j["ig_steps"] = IgSteps(spec.circuit);
  j["delta"] =
      spec.method == Method::kEap || spec.method == Method::kEapIg
          ? "first-order estimate of metric(only this edge corrupted) - metric(clean): "
            "(corrupted - clean sender value) . d metric / d receiver input, summed over "
            "positions (eap-ig: the gradient's mean over steps from the clean to the corrupted "
            "input)"
      : spec.method == Method::kPathPatch
          ? "metric(clean run with only the head's path to the receivers corrupted) - "
            "metric(clean)"
      : spec.method == Method::kCircuitFaithfulness
          ? "the metric with every edge outside the circuit corrupted; clean; corrupted"
      : spec.method == Method::kAcdc
          ? "each edge's increase of the circuit's distance from the clean run when ACDC "
            "judged it (0: pruned because its receiver reaches nothing)"
      : spec.method == Method::kAcdcStep
          ? "the metric of the circuit, and of the circuit with each edge into the receiving "
            "input also corrupted"
      : IsAttribution(spec.method)
          ? "first-order estimate of metric(patched) - metric(corrupted): "
            "(clean - corrupted) . d metric / d activation at the corrupted run"
      : patching ? "metric(patched) - metric(corrupted)"
                 : "metric(intervened) - metric(clean)";
  const nlohmann::ordered_json context = ContextToJson(ctx);
  for (const char* key : {"model", "dataset", "run"}) j[key] = context[key];
  j["baseline"] = baseline;
  if (patching) j[reference_run] = reference;
  std::vector<F32Tensor> tensors;
  for (const GridValues& o : result.outputs) {
    nlohmann::ordered_json oj;
    oj["name"] = o.name;
    oj["axes"] = o.axes;
    oj["shape"] = o.shape;
    oj["values"] = Nested(o.mean, o.shape);
    if (patching && !circuit_method && ctx.normalize) {
      // (patched - corrupted) / (clean - corrupted), on means over prompts.
      std::vector<double> normalized = o.mean;
      for (double& v : normalized) v /= reference - baseline;
      oj["normalized"] = Nested(normalized, o.shape);
    }
    nlohmann::json ranked = nlohmann::json::array();
    for (auto [idx, value] : RankGrid(o, 1 << 30)) {
      ranked.push_back({{"component", component(o, idx)}, {"value", value}});
    }
    oj["ranked"] = ranked;
    j["outputs"].push_back(oj);
    out << "top components of " << o.name << " (by |value|):\n";
    for (auto [idx, value] : RankGrid(o, 10)) {
      out << "  " << std::setw(16) << std::left << component(o, idx) << std::right << std::showpos
          << std::defaultfloat << std::setprecision(4) << value << std::noshowpos << std::fixed
          << "\n";
    }
    tensors.push_back(ToF32(o.name, o.mean, o.shape));
    if (!o.per_prompt.empty()) {  // acdc's scores have none
      std::vector<int64_t> pp_shape = {static_cast<int64_t>(result.baseline.size())};
      pp_shape.insert(pp_shape.end(), o.shape.begin(), o.shape.end());
      tensors.push_back(ToF32(o.name + ".per_prompt", o.per_prompt, pp_shape));
    }
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
  if (patching) tensors.push_back(ToF32(reference_run, result.reference, {n_prompts}));
  if (circuit != nullptr) {
    j["circuit"] = CircuitToJson(*circuit);
    std::vector<double> kept(circuit->kept.begin(), circuit->kept.end());
    tensors.push_back(ToF32("circuit.kept", kept, {static_cast<int64_t>(kept.size())}));
    out << std::defaultfloat << "circuit: " << circuit->n_kept() << " of " << kept.size()
        << " edges (" << circuit->selection << ")\n";
    constexpr int64_t kListed = 40;
    std::vector<int64_t> listed;
    for (size_t e = 0; e < kept.size(); ++e) {
      if (circuit->kept[e]) listed.push_back(static_cast<int64_t>(e));
    }
    std::stable_sort(listed.begin(), listed.end(), [&](int64_t a, int64_t b) {
      return std::fabs(circuit->scores[a]) > std::fabs(circuit->scores[b]);
    });
    for (size_t i = 0; i < listed.size() && i < static_cast<size_t>(kListed); ++i) {
      out << "  " << std::setw(20) << std::left << graph.EdgeName(static_cast<int>(listed[i]))
          << std::right << std::showpos << std::setprecision(4) << circuit->scores[listed[i]]
          << std::noshowpos << "\n";
    }
    if (static_cast<int64_t>(listed.size()) > kListed) {
      out << "  ... and " << listed.size() - kListed << " more (result.json, circuit.dot)\n";
    }
    if (circuit->faithfulness) {
      const FaithfulnessValues& f = *circuit->faithfulness;
      out << std::setprecision(4) << "faithfulness: " << MetricName(spec.metric) << " " << f.circuit
          << " with every other edge corrupted, " << f.full << " clean, " << f.corrupted
          << " corrupted: ";
      // A KL divergence from the clean run is 0 there: only the normalized form means anything.
      if (spec.metric != MetricKind::kKl) out << f.fraction() << " of the full model's, ";
      out << f.normalized() << " normalized ((circuit - corrupted) / (clean - corrupted))\n";
    }
  }

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
  if (circuit != nullptr) {
    std::ofstream dot(output_dir + "/circuit.dot");
    dot << CircuitToDot(*circuit);
    if (!dot) return absl::PermissionDeniedError("cannot write " + output_dir + "/circuit.dot");
  }
  std::ofstream html(output_dir + "/report.html");
  html << RenderReportHtml({j, attention, ""});
  if (!html) return absl::PermissionDeniedError("cannot write " + output_dir + "/report.html");
  out << "wrote " << output_dir << "/result.json, result.safetensors"
      << (circuit != nullptr ? ", circuit.dot" : "") << " and report.html\n";
  return absl::OkStatus();
}

}  // namespace lensgrid
