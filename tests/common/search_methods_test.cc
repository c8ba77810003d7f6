// The one table of methods, metrics and ablations: in enum order, names that
// parse back, and the wire's enums exactly the table's values plus one.
#include "common/search_methods.h"

#include <cctype>

#include "common/circuit_graph.h"
#include "common/search_proto.h"
#include "gtest/gtest.h"

namespace lensgrid {
namespace {

// "patch-heads-by-pos" -> "PATCH_HEADS_BY_POS"
std::string Upper(const std::string& name) {
  std::string out;
  for (char c : name) out += c == '-' ? '_' : static_cast<char>(std::toupper(c));
  return out;
}

TEST(SearchMethodsTest, MethodsAreInEnumOrderAndMatchTheWire) {
  const google::protobuf::EnumDescriptor* wire = v1::SearchMethod_descriptor();
  ASSERT_EQ(static_cast<size_t>(wire->value_count()), AllMethods().size() + 1);
  for (size_t i = 0; i < AllMethods().size(); ++i) {
    const MethodInfo& m = AllMethods()[i];
    SCOPED_TRACE(m.name);
    EXPECT_EQ(static_cast<size_t>(m.method), i);
    EXPECT_EQ(ParseMethod(m.name).value(), m.method);
    EXPECT_EQ(MethodName(m.method), m.name);
    EXPECT_EQ(v1::SearchMethod_Name(ToProto(m.method)), "METHOD_" + Upper(m.name));
    EXPECT_EQ(MethodFromProto(ToProto(m.method)).value(), m.method);
    EXPECT_FALSE(MethodGrids(m.method, {2, 3, false}, 4).empty());
    EXPECT_NE(MethodNames().find(m.name), std::string::npos);
  }
}

TEST(SearchMethodsTest, MetricsAndAblationsMatchTheWire) {
  ASSERT_EQ(static_cast<size_t>(v1::SearchMetric_descriptor()->value_count()),
            AllMetrics().size() + 1);
  for (size_t i = 0; i < AllMetrics().size(); ++i) {
    const MetricInfo& m = AllMetrics()[i];
    EXPECT_EQ(static_cast<size_t>(m.metric), i);
    EXPECT_EQ(ParseMetric(m.name).value(), m.metric);
    EXPECT_EQ(v1::SearchMetric_Name(ToProto(m.metric)), "METRIC_" + Upper(m.name));
  }
  ASSERT_EQ(static_cast<size_t>(v1::Ablation_descriptor()->value_count()),
            AllAblations().size() + 1);
  for (size_t i = 0; i < AllAblations().size(); ++i) {
    const AblationInfo& a = AllAblations()[i];
    EXPECT_EQ(static_cast<size_t>(a.ablation), i);
    EXPECT_EQ(ParseAblation(a.name).value(), a.ablation);
    EXPECT_EQ(v1::Ablation_Name(ToProto(a.ablation)), "ABLATION_" + Upper(a.name));
  }
}

TEST(SearchMethodsTest, ErrorsNameTheKnownValues) {
  auto m = ParseMethod("ablate-everything");
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(m.status().message().find(MethodNames()), std::string::npos);
  EXPECT_NE(ParseMethod(std::string(1000, 'x')).status().message().find("(1000 bytes)"),
            std::string::npos);
  EXPECT_FALSE(MethodFromProto(v1::SEARCH_METHOD_UNSPECIFIED).ok());
  EXPECT_FALSE(MethodFromProto(static_cast<v1::SearchMethod>(77)).ok());
  EXPECT_EQ(MetricFromProto(v1::SEARCH_METRIC_UNSPECIFIED).value(), MetricKind::kLogitDiff);
  EXPECT_EQ(AblationFromProto(v1::ABLATION_UNSPECIFIED).value(), AblationKind::kZero);
}

TEST(SearchMethodsTest, GridsAsFunctionsOfTheModelAndPositions) {
  EXPECT_EQ(MethodGrids(Method::kAblateLayers, {3, 5, true}, 7),
            (std::vector<Grid>{{"delta", {"kind(attn,mlp)", "layer"}, {1, 3}}}));
  EXPECT_EQ(MethodGrids(Method::kPatchHeadsByPos, {3, 5, false}, 7),
            (std::vector<Grid>{{"delta", {"layer", "pos", "head"}, {3, 7, 5}}}));
  EXPECT_EQ(MethodGrids(Method::kDla, {3, 5, false}, 7).size(), 2u);
  EXPECT_TRUE(ShardsByPromptsOnly(Method::kDetectHeads));
  EXPECT_TRUE(IsPatching(Method::kPatchPattern));
  EXPECT_TRUE(IsAblation(Method::kAblateLayers));
}

TEST(SearchMethodsTest, AttributionEstimatesPatchingOnItsGrid) {
  int attribution = 0;
  for (const MethodInfo& m : AllMethods()) {
    if (!IsAttribution(m.method)) {
      EXPECT_EQ(ExactMethod(m.method), m.method) << m.name;
      continue;
    }
    ++attribution;
    SCOPED_TRACE(m.name);
    const Method exact = ExactMethod(m.method);
    EXPECT_EQ(Info(exact).kind, MethodKind::kPatching);
    // "attribute-heads" estimates "patch-heads", on the same grid.
    EXPECT_EQ(std::string(m.name).substr(9), std::string(Info(exact).name).substr(5));
    EXPECT_EQ(MethodGrids(m.method, {3, 5, false}, 7), MethodGrids(exact, {3, 5, false}, 7));
    EXPECT_TRUE(IsPatching(m.method));  // baseline = corrupted, "reference" = clean
    EXPECT_FALSE(IsAblation(m.method));
    EXPECT_TRUE(ShardsByPromptsOnly(m.method));  // one backward computes every component
  }
  EXPECT_EQ(attribution, 5);
  EXPECT_FALSE(ShardsByPromptsOnly(Method::kPatchHeads));
}

}  // namespace
}  // namespace lensgrid

namespace lensgrid {
namespace {

TEST(SearchMethodsTest, CircuitParametersAreCheckedAgainstTheMethodAndTheModel) {
  const ModelDims gpt2{12, 12, false};
  // Edge grids count the graph's edges without building it.
  EXPECT_EQ(MethodGrids(Method::kEap, gpt2, 16).front().shape, std::vector<int64_t>{32491});
  EXPECT_EQ(MethodGrids(Method::kAcdcStep, gpt2, 16).front().shape,
            std::vector<int64_t>{1 + 1 + 12 * 13});
  auto code = [](Method m, CircuitParams p, ModelDims d) {
    return CheckCircuitParams(m, p, d).code();
  };
  CircuitParams receivers;
  receivers.receivers = {"L11H3.k", "logits", "MLP4"};
  EXPECT_EQ(code(Method::kPathPatch, receivers, gpt2), absl::StatusCode::kOk);
  EXPECT_EQ(code(Method::kEap, receivers, gpt2), absl::StatusCode::kInvalidArgument);
  receivers.receivers = {"L12H0.q"};  // no layer 12
  EXPECT_EQ(code(Method::kPathPatch, receivers, gpt2), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Method::kPathPatch, receivers, {}), absl::StatusCode::kOk);  // model unknown yet
  CircuitParams steps;
  steps.ig_steps = kMaxIgSteps + 1;
  EXPECT_EQ(code(Method::kEapIg, steps, gpt2), absl::StatusCode::kInvalidArgument);
  steps.ig_steps = -1;
  EXPECT_EQ(code(Method::kEapIg, steps, gpt2), absl::StatusCode::kInvalidArgument);
  // A graph too large for the limit: refused before anything is built or run.
  EXPECT_GT(CircuitGraph::CountEdges(1000, 100, false), kMaxCircuitEdges);
  EXPECT_EQ(code(Method::kEap, {}, {1000, 100, false}), absl::StatusCode::kResourceExhausted);
  // A circuit's bits: one per edge, nothing past the last.
  std::vector<bool> kept(32491, false);
  kept[0] = kept[32490] = true;
  CircuitParams circuit;
  circuit.kept_edges = PackEdges(kept);
  EXPECT_EQ(UnpackEdges(circuit.kept_edges, 32491), kept);
  EXPECT_EQ(code(Method::kCircuitFaithfulness, circuit, gpt2), absl::StatusCode::kOk);
  circuit.kept_edges.back() = static_cast<char>(0xff);
  EXPECT_EQ(code(Method::kCircuitFaithfulness, circuit, gpt2), absl::StatusCode::kInvalidArgument);
  circuit.kept_edges.pop_back();
  EXPECT_EQ(code(Method::kCircuitFaithfulness, circuit, gpt2), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Method::kCircuitFaithfulness, {}, {}), absl::StatusCode::kInvalidArgument);
}

TEST(SearchMethodsTest, CountEdgesIsTheBuiltGraphsSize) {
  for (int layers : {1, 2, 5}) {
    for (int heads : {1, 3}) {
      for (bool attn_only : {false, true}) {
        EXPECT_EQ(
            CircuitGraph::CountEdges(layers, heads, attn_only),
            static_cast<int64_t>(CircuitGraph::Build({layers, heads, attn_only}).edges().size()));
      }
    }
  }
}

}  // namespace
}  // namespace lensgrid
