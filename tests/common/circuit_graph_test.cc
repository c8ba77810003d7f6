// The circuit graph: the node and edge counts the papers give, stable ids, names that round-trip,
// and clear errors for names that are not in the graph.
#include "common/circuit_graph.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace lensgrid {
namespace {

using ::testing::HasSubstr;

TEST(CircuitGraphTest, Gpt2SmallHasTheEapPapersEdgeCount) {
  CircuitGraph g = CircuitGraph::Build({12, 12, false});
  EXPECT_EQ(g.nodes().size(), 1u + 144u + 12u + 1u);
  // Heads of layer L read 1 + 13 L senders on each of q, k, v; MLP L reads 13 + 13 L; the
  // logits read all 157.
  int64_t expected = 157;
  for (int layer = 0; layer < 12; ++layer) expected += 3 * 12 * (1 + 13 * layer) + 13 + 13 * layer;
  EXPECT_EQ(static_cast<int64_t>(g.edges().size()), expected);
  EXPECT_EQ(g.edges().size(), 32491u);
}

TEST(CircuitGraphTest, AnAttentionOnlyModelHasNoMlps) {
  CircuitGraph g = CircuitGraph::Build({2, 4, true});
  EXPECT_EQ(g.nodes().size(), 1u + 8u + 1u);
  EXPECT_EQ(g.edges().size(), 4u * 3u * 1u + 4u * 3u * 5u + 9u);
  EXPECT_THAT(std::string(g.FindNode("MLP0").status().message()), HasSubstr("unknown node"));
}

TEST(CircuitGraphTest, SendersComeBeforeReceiversAndIdsFollowForwardOrder) {
  CircuitGraph g = CircuitGraph::Build({3, 2, false});
  int last_receiver = 0;
  for (const CircuitEdge& e : g.edges()) {
    EXPECT_LT(e.sender, e.receiver);
    EXPECT_GE(e.receiver, last_receiver);
    last_receiver = e.receiver;
    const CircuitNode& s = g.nodes()[e.sender];
    const CircuitNode& r = g.nodes()[e.receiver];
    if (r.kind == CircuitNode::Kind::kHead && s.kind == CircuitNode::Kind::kHead) {
      EXPECT_LT(s.layer, r.layer) << g.EdgeName(&e - g.edges().data());
    }
    EXPECT_EQ(r.kind == CircuitNode::Kind::kHead, e.channel != Channel::kResidual);
  }
  // MLP 1 reads layer 1's heads; heads of layer 1 do not read each other.
  EXPECT_TRUE(g.FindEdge("L1H0 -> MLP1").ok());
  EXPECT_FALSE(g.FindEdge("L1H0 -> L1H1.q").ok());
}

TEST(CircuitGraphTest, NamesRoundTrip) {
  CircuitGraph g = CircuitGraph::Build({12, 12, false});
  for (size_t e = 0; e < g.edges().size(); e += 97) {
    absl::StatusOr<int> found = g.FindEdge(g.EdgeName(static_cast<int>(e)));
    ASSERT_TRUE(found.ok()) << g.EdgeName(static_cast<int>(e)) << ": " << found.status();
    EXPECT_EQ(*found, static_cast<int>(e));
  }
  for (size_t n = 0; n < g.nodes().size(); ++n) {
    EXPECT_EQ(g.FindNode(g.NodeName(static_cast<int>(n))).value(), static_cast<int>(n));
  }
  EXPECT_EQ(g.EdgeName(g.FindEdge("L0H1 -> L1H1.k").value()), "L0H1 -> L1H1.k");
  EXPECT_EQ(g.EdgeName(g.FindEdge("embed -> logits").value()), "embed -> logits");
  EXPECT_EQ(g.FindReceiver("L1H1.k").value(), std::make_pair(g.HeadNode(1, 1), Channel::kKey));
  EXPECT_EQ(g.FindReceiver("MLP11").value().first, g.MlpNode(11));
}

TEST(CircuitGraphTest, UnknownNamesSayWhatExists) {
  CircuitGraph g = CircuitGraph::Build({2, 4, false});
  for (const char* bad : {"L2H0", "L0H4", "L-1H0", "L+1H0", "MLP2", "head", "", "L0H0.x"}) {
    absl::StatusOr<std::pair<int, Channel>> r = g.FindReceiver(bad);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound) << bad;
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("LlHh.k")) << bad;
  }
  EXPECT_FALSE(g.FindReceiver("L0H0").ok()) << "a head receives on .q, .k or .v";
  EXPECT_FALSE(g.FindReceiver("MLP0.q").ok());
  EXPECT_FALSE(g.FindReceiver("embed").ok()) << "the embeddings receive nothing";
  absl::Status backwards = g.FindEdge("L1H0 -> L0H0.q").status();
  EXPECT_EQ(backwards.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(backwards.message()), HasSubstr("must come before"));
  EXPECT_FALSE(g.FindEdge("L0H0 to L1H0.q").ok());
}

}  // namespace
}  // namespace lensgrid
