#include "client/circuit_output.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <numeric>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "common/status_macros.h"

namespace lensgrid {
namespace {

const char* KindName(CircuitNode::Kind k) {
  switch (k) {
    case CircuitNode::Kind::kEmbed:
      return "embed";
    case CircuitNode::Kind::kHead:
      return "head";
    case CircuitNode::Kind::kMlp:
      return "mlp";
    case CircuitNode::Kind::kLogits:
      break;
  }
  return "logits";
}

// The layer a node is drawn in: embed -1, logits n_layers.
int DrawLayer(const CircuitGraph& g, int node) {
  const CircuitNode& n = g.nodes()[node];
  if (n.kind == CircuitNode::Kind::kEmbed) return -1;
  if (n.kind == CircuitNode::Kind::kLogits) return g.shape().n_layers;
  return n.layer;
}

CircuitGraph GraphOf(const CircuitFindings& c) { return CircuitGraph::Build(c.shape); }

}  // namespace

int64_t CircuitFindings::n_kept() const {
  return static_cast<int64_t>(std::count(kept.begin(), kept.end(), true));
}

CircuitShape ShapeOfContext(const SearchContext& ctx) {
  return {static_cast<int>(ctx.n_layers), static_cast<int>(ctx.n_heads), ctx.attn_only};
}

absl::StatusOr<CircuitFindings> FindCircuit(const SearchContext& ctx, const GridValues& scores,
                                            const CircuitChoice& choice) {
  CircuitFindings c;
  c.shape = ShapeOfContext(ctx);
  const int64_t n_edges = CircuitGraph::CountEdges(ctx.n_layers, ctx.n_heads, ctx.attn_only);
  if (scores.axes != std::vector<std::string>{"edge"} ||
      static_cast<int64_t>(scores.mean.size()) != n_edges) {
    return absl::InvalidArgumentError(absl::StrCat("grid \"", scores.name,
                                                   "\" is not one score per edge of this model's ",
                                                   n_edges, "-edge circuit graph"));
  }
  if (choice.threshold && !(*choice.threshold >= 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--threshold is ", *choice.threshold, "; it must be >= 0"));
  }
  c.scores = scores.mean;
  c.kept.assign(c.scores.size(), false);
  if (choice.threshold) {
    c.threshold = *choice.threshold;
    for (size_t e = 0; e < c.scores.size(); ++e) c.kept[e] = std::fabs(c.scores[e]) >= c.threshold;
    c.selection = absl::StrCat("edges with |score| >= ", c.threshold);
    return c;
  }
  const int64_t k = std::min<int64_t>(choice.top_k > 0 ? choice.top_k : kDefaultTopK, n_edges);
  std::vector<int64_t> order(c.scores.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&c](int64_t a, int64_t b) {
    return std::fabs(c.scores[a]) > std::fabs(c.scores[b]);
  });
  for (int64_t i = 0; i < k; ++i) c.kept[order[i]] = true;
  c.threshold = k > 0 ? std::fabs(c.scores[order[k - 1]]) : 0;
  c.selection = absl::StrCat("top ", k, " edges by |score|");
  return c;
}

absl::StatusOr<FaithfulnessValues> FaithfulnessOf(const GridValues& metric) {
  if (metric.mean.size() != 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("grid \"", metric.name, "\" is not a circuit-faithfulness result (3 values)"));
  }
  FaithfulnessValues f;
  f.circuit = metric.mean[kFaithfulnessCircuit];
  f.full = metric.mean[kFaithfulnessFull];
  f.corrupted = metric.mean[kFaithfulnessCorrupted];
  return f;
}

absl::StatusOr<CircuitFindings> GivenCircuit(const SearchContext& ctx, const GridValues& metric) {
  CircuitFindings c;
  c.shape = ShapeOfContext(ctx);
  const int64_t n_edges = CircuitGraph::CountEdges(ctx.n_layers, ctx.n_heads, ctx.attn_only);
  c.kept = UnpackEdges(ctx.circuit.kept_edges, n_edges);
  c.scores.resize(c.kept.size());
  for (size_t e = 0; e < c.kept.size(); ++e) c.scores[e] = c.kept[e] ? 1 : 0;
  c.threshold = 0.5;
  c.selection = "given (--edges)";
  LG_ASSIGN_OR_RETURN(c.faithfulness, FaithfulnessOf(metric));
  return c;
}

absl::StatusOr<std::optional<CircuitFindings>> CircuitOfSearch(
    const SearchValues& values, const SearchContext& ctx, const CircuitChoice& choice,
    const FaithfulnessRunner& run_faithfulness) {
  const Method method = values.names.method;
  if (values.outputs.empty()) return absl::InternalError("the search has no output grid");
  if (method == Method::kCircuitFaithfulness) {
    LG_ASSIGN_OR_RETURN(CircuitFindings c, GivenCircuit(ctx, values.outputs.front()));
    return std::optional<CircuitFindings>(std::move(c));
  }
  if (method != Method::kEap && method != Method::kEapIg) return std::nullopt;
  LG_ASSIGN_OR_RETURN(CircuitFindings c, FindCircuit(ctx, values.outputs.front(), choice));
  CircuitParams params;
  params.kept_edges = PackEdges(c.kept);
  LG_ASSIGN_OR_RETURN(SearchValues f, run_faithfulness(params));
  if (f.outputs.empty()) return absl::InternalError("the faithfulness run has no output grid");
  LG_ASSIGN_OR_RETURN(c.faithfulness, FaithfulnessOf(f.outputs.front()));
  return std::optional<CircuitFindings>(std::move(c));
}

nlohmann::ordered_json CircuitToJson(const CircuitFindings& c) {
  const CircuitGraph g = GraphOf(c);
  nlohmann::ordered_json j;
  j["graph"] = {{"n_layers", c.shape.n_layers},
                {"n_heads", c.shape.n_heads},
                {"attn_only", c.shape.attn_only}};
  nlohmann::ordered_json nodes = nlohmann::ordered_json::array();
  for (int i = 0; i < static_cast<int>(g.nodes().size()); ++i) {
    const CircuitNode& n = g.nodes()[i];
    nlohmann::ordered_json node = {
        {"name", g.NodeName(i)}, {"kind", KindName(n.kind)}, {"layer", DrawLayer(g, i)}};
    if (n.kind == CircuitNode::Kind::kHead) node["head"] = n.head;
    nodes.push_back(std::move(node));
  }
  j["nodes"] = std::move(nodes);
  nlohmann::ordered_json edges = nlohmann::ordered_json::array();
  for (int e = 0; e < static_cast<int>(g.edges().size()); ++e) {
    const CircuitEdge& edge = g.edges()[e];
    edges.push_back({{"name", g.EdgeName(e)},
                     {"sender", g.NodeName(edge.sender)},
                     {"receiver", g.NodeName(edge.receiver)},
                     {"channel", ChannelName(edge.channel)},
                     {"score", c.scores[e]},
                     {"kept", static_cast<bool>(c.kept[e])}});
  }
  j["edges"] = std::move(edges);
  j["threshold"] = c.threshold;
  j["selection"] = c.selection;
  j["kept"] = c.n_kept();
  if (c.faithfulness) {
    const FaithfulnessValues& f = *c.faithfulness;
    j["faithfulness"] = {{"circuit", f.circuit},
                         {"full", f.full},
                         {"corrupted", f.corrupted},
                         {"fraction", f.fraction()},
                         {"normalized", f.normalized()}};
  }
  return j;
}

std::string CircuitToDot(const CircuitFindings& c) {
  const CircuitGraph g = GraphOf(c);
  double max_abs = 0;
  for (size_t e = 0; e < c.kept.size(); ++e) {
    if (c.kept[e]) max_abs = std::max(max_abs, std::fabs(c.scores[e]));
  }
  std::vector<bool> used(g.nodes().size(), false);
  for (size_t e = 0; e < c.kept.size(); ++e) {
    if (c.kept[e]) used[g.edges()[e].sender] = used[g.edges()[e].receiver] = true;
  }
  std::ostringstream dot;
  dot << "digraph circuit {\n  rankdir=BT;\n  node [shape=box, fontname=\"Helvetica\"];\n";
  dot << "  label=\"" << c.selection << ", " << c.n_kept() << " edges";
  if (c.faithfulness) {
    dot << absl::StrFormat(", faithfulness %.3f (normalized %.3f)", c.faithfulness->fraction(),
                           c.faithfulness->normalized());
  }
  dot << "\";\n";
  for (int layer = -1; layer <= c.shape.n_layers; ++layer) {
    std::string rank;
    for (int i = 0; i < static_cast<int>(g.nodes().size()); ++i) {
      if (used[i] && DrawLayer(g, i) == layer) absl::StrAppend(&rank, " \"", g.NodeName(i), "\";");
    }
    if (!rank.empty()) dot << "  { rank=same;" << rank << " }\n";
  }
  for (size_t e = 0; e < c.kept.size(); ++e) {
    if (!c.kept[e]) continue;
    const CircuitEdge& edge = g.edges()[e];
    const double w = max_abs > 0 ? 0.5 + 4.5 * std::fabs(c.scores[e]) / max_abs : 1;
    dot << "  \"" << g.NodeName(edge.sender) << "\" -> \"" << g.NodeName(edge.receiver) << "\" ["
        << absl::StrFormat("penwidth=%.2f, color=\"%s\", tooltip=\"%s: %.6g\"", w,
                           c.scores[e] >= 0 ? "#1f77b4" : "#d62728", g.EdgeName(e), c.scores[e]);
    if (edge.channel != Channel::kResidual)
      dot << ", label=\"" << ChannelName(edge.channel) << "\"";
    dot << "];\n";
  }
  dot << "}\n";
  return dot.str();
}

absl::StatusOr<std::string> ReadEdgeList(const std::string& path, const CircuitGraph& graph) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read edge list ", path));
  std::vector<bool> kept(graph.edges().size(), false);
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    absl::string_view name = line;
    if (const size_t hash = name.find('#'); hash != absl::string_view::npos) {
      name = name.substr(0, hash);
    }
    name = absl::StripAsciiWhitespace(name);
    if (name.empty()) continue;
    absl::StatusOr<int> e = graph.FindEdge(name);
    if (!e.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", n, ": ", e.status().message()));
    }
    kept[*e] = true;
  }
  return PackEdges(kept);
}

}  // namespace lensgrid
