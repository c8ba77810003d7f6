// The ACDC driver against a model whose distance is known in closed form: each edge e has a
// weight w[e], and the distance of a circuit is the sum of the weights of the edges outside it
// that still reach the logits (an edge whose receiver's output goes nowhere contributes
// nothing, as in a real model). The driver must keep exactly the edges whose own weight is at
// least the threshold and that still reach the logits, call the steps in the right order with
// the right circuits, and refuse bad input.
#include "common/acdc_driver.h"

#include <random>

#include "common/search_methods.h"
#include "gtest/gtest.h"

namespace lensgrid {
namespace {

class AdditiveModel {
 public:
  AdditiveModel(const CircuitGraph& g, uint64_t seed) : g_(g), w_(g.edges().size()) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<double> u(0, 1);
    for (double& w : w_) w = u(rng) < 0.8 ? u(rng) * 0.01 : 0.5 + u(rng);  // few matter
  }

  // Nodes whose output reaches the logits through kept edges.
  std::vector<bool> Reaching(const std::vector<bool>& kept) const {
    std::vector<bool> reach(g_.nodes().size(), false);
    reach[g_.LogitsNode()] = true;
    // Edges are by receiver in forward order: walking them backwards sees every edge out of a
    // node before the edges into it.
    for (size_t e = g_.edges().size(); e-- > 0;) {
      const CircuitEdge& edge = g_.edges()[e];
      if (kept[e] && reach[edge.receiver]) reach[edge.sender] = true;
    }
    return reach;
  }

  double Distance(const std::vector<bool>& kept) const {
    const std::vector<bool> reach = Reaching(kept);
    double d = 0;
    for (size_t e = 0; e < kept.size(); ++e) {
      if (!kept[e] && reach[g_.edges()[e].receiver]) d += w_[e];
    }
    return d;
  }

  double weight(size_t e) const { return w_[e]; }

 private:
  const CircuitGraph& g_;
  std::vector<double> w_;
};

TEST(AcdcDriverTest, KeepsTheEdgesThatMatterAndAsksForTheRightSteps) {
  const CircuitGraph g = CircuitGraph::Build({3, 2, false});
  AdditiveModel model(g, 7);
  const int64_t components = AcdcStepComponents({3, 2, false});
  std::vector<std::string> asked;
  int last_iteration = -1;
  AcdcStepRunner step = [&](int iteration, const std::string& receiver,
                            const std::string& bits) -> absl::StatusOr<AcdcStepResult> {
    EXPECT_GT(iteration, last_iteration);
    last_iteration = iteration;
    asked.push_back(receiver);
    std::vector<bool> kept = UnpackEdges(bits, static_cast<int64_t>(g.edges().size()));
    auto r = g.FindReceiver(receiver);
    EXPECT_TRUE(r.ok());
    AcdcStepResult out;
    out.metric.assign(components, 0.0);
    out.metric[0] = model.Distance(kept);
    int j = 0;
    for (size_t e = 0; e < g.edges().size(); ++e) {
      const CircuitEdge& edge = g.edges()[e];
      if (edge.receiver != r->first || edge.channel != r->second) continue;
      if (kept[e]) {
        std::vector<bool> without = kept;
        without[e] = false;
        out.metric[1 + j] = model.Distance(without);
      }
      ++j;
    }
    return out;
  };
  AcdcDriverOptions o;
  o.threshold = 0.1;
  o.kl = true;
  std::vector<AcdcIteration> seen;
  o.on_iteration = [&](const AcdcIteration& it) { seen.push_back(it); };
  auto out = DriveAcdc(g, o, step);
  ASSERT_TRUE(out.ok()) << out.status();
  // The logits first, then back through the layers.
  ASSERT_FALSE(asked.empty());
  EXPECT_EQ(asked.front(), "logits");
  // Additive and independent: an edge is kept iff its weight is >= the threshold and its
  // receiver still reaches the logits through kept edges.
  const std::vector<bool> reach = model.Reaching(out->kept);
  int64_t kept = 0;
  for (size_t e = 0; e < g.edges().size(); ++e) {
    const bool want = model.weight(e) >= o.threshold && reach[g.edges()[e].receiver];
    EXPECT_EQ(out->kept[e], want) << g.EdgeName(static_cast<int>(e));
    kept += out->kept[e];
  }
  EXPECT_GT(kept, 0);
  EXPECT_LT(kept, static_cast<int64_t>(g.edges().size()) / 2);
  // Every receiving input reported once; evaluations count the base and each candidate.
  EXPECT_EQ(seen.size(), static_cast<size_t>(seen.front().iterations));
  EXPECT_EQ(seen.back().edges_left, kept);
  EXPECT_EQ(seen.back().evaluations, out->evaluations);
  EXPECT_EQ(out->steps, static_cast<int>(asked.size()));
  // Pruned receivers (their node reaches nothing) ran no step.
  EXPECT_LT(asked.size(), seen.size());
}

TEST(AcdcDriverTest, ATaskMetricIsTheDistanceFromTheCleanRun) {
  const CircuitGraph g = CircuitGraph::Build({1, 1, true});
  // One head: edges embed -> L0H0.q/k/v, embed -> logits, L0H0 -> logits. A task metric that
  // moves from 2 (clean) by -1 for each corrupted edge into the logits, +0.3 for the value.
  const int64_t components = AcdcStepComponents({1, 1, true});
  auto metric = [&](const std::vector<bool>& kept) {
    double m = 2;
    for (size_t e = 0; e < kept.size(); ++e) {
      if (kept[e]) continue;
      const std::string name = g.EdgeName(static_cast<int>(e));
      if (name.find("logits") != std::string::npos) m -= 1;
      if (name == "embed -> L0H0.v") m += 0.3;
    }
    return m;
  };
  AcdcStepRunner step = [&](int, const std::string& receiver,
                            const std::string& bits) -> absl::StatusOr<AcdcStepResult> {
    std::vector<bool> kept = UnpackEdges(bits, static_cast<int64_t>(g.edges().size()));
    auto r = g.FindReceiver(receiver).value();
    AcdcStepResult out;
    out.clean = 2;
    out.metric.assign(components, 0.0);
    out.metric[0] = metric(kept);
    int j = 0;
    for (size_t e = 0; e < kept.size(); ++e) {
      if (g.edges()[e].receiver != r.first || g.edges()[e].channel != r.second) continue;
      std::vector<bool> without = kept;
      without[e] = false;
      if (kept[e]) out.metric[1 + j] = metric(without);
      ++j;
    }
    return out;
  };
  AcdcDriverOptions o;
  o.threshold = 0.5;
  o.kl = false;
  auto out = DriveAcdc(g, o, step);
  ASSERT_TRUE(out.ok()) << out.status();
  for (size_t e = 0; e < g.edges().size(); ++e) {
    const std::string name = g.EdgeName(static_cast<int>(e));
    // Into the logits: |change| 1 >= 0.5, kept; the value: 0.3 < 0.5, removed; q, k: 0.
    EXPECT_EQ(out->kept[e], name.find("logits") != std::string::npos) << name;
  }
  EXPECT_NEAR(out->score[g.FindEdge("embed -> L0H0.v").value()], 0.3, 1e-12);
}

TEST(AcdcDriverTest, BadInputIsRefused) {
  const CircuitGraph g = CircuitGraph::Build({1, 2, true});
  AcdcStepRunner none = [](int, const std::string&, const std::string&) {
    return absl::StatusOr<AcdcStepResult>(AcdcStepResult{{1.0, 2.0}, 0});  // wrong size
  };
  AcdcDriverOptions o;
  o.threshold = -1;
  EXPECT_EQ(DriveAcdc(g, o, none).status().code(), absl::StatusCode::kInvalidArgument);
  o.threshold = 0.1;
  auto r = DriveAcdc(g, o, none);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("returned 2 values"), std::string::npos) << r.status();
  AcdcStepRunner fails = [](int, const std::string&, const std::string&) {
    return absl::StatusOr<AcdcStepResult>(absl::UnavailableError("worker gone"));
  };
  EXPECT_EQ(DriveAcdc(g, o, fails).status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace lensgrid
