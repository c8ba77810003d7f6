// The computational graph that circuit discovery scores (path patching, EAP, ACDC), defined once
// for every method, the planner and the report (no LibTorch, no protobuf).
//
// Nodes, as in ACDC / EAP: the embeddings ("embed": token + position), each attention head's
// output ("L3H7"), each MLP ("MLP3") and the logits. An edge is a sender's contribution to a
// receiver's input through the residual stream: a head receives on its query, key and value
// inputs separately ("L1H1.k"), an MLP and the logits on their one input. A sender reaches every
// receiver after it: heads of layer L read what the embeddings, the heads and MLPs of layers < L
// wrote; MLP L also reads the heads of layer L; the logits read everything. GPT-2 small has
// 32,491 edges.
//
//   CircuitGraph g = CircuitGraph::Build({12, 12, /*attn_only=*/false});
//   g.edges().size()                                  // 32491
//   LG_ASSIGN_OR_RETURN(int e, g.FindEdge("L0H1 -> L1H1.k"));
//   g.EdgeName(e)                                     // "L0H1 -> L1H1.k"
//
// Edge ids are stable for a model shape: receivers in forward order (each layer's heads, each
// with q, k, v, then its MLP; the logits last), and each receiver's senders in forward order.
#ifndef LENSGRID_COMMON_CIRCUIT_GRAPH_H_
#define LENSGRID_COMMON_CIRCUIT_GRAPH_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace lensgrid {

struct CircuitNode {
  enum class Kind { kEmbed, kHead, kMlp, kLogits };
  Kind kind = Kind::kEmbed;
  int layer = -1;  // heads and MLPs
  int head = -1;   // heads
};

// Which input of a receiver an edge enters.
enum class Channel { kResidual, kQuery, kKey, kValue };
// "q", "k", "v"; "" for kResidual.
const char* ChannelName(Channel c);

struct CircuitEdge {
  int sender = 0;                        // node index
  int receiver = 0;                      // node index
  Channel channel = Channel::kResidual;  // kQuery/kKey/kValue for heads, kResidual otherwise
};

struct CircuitShape {
  int n_layers = 0;
  int n_heads = 0;
  bool attn_only = false;
};

class CircuitGraph {
 public:
  // REQUIRES: n_layers >= 1, n_heads >= 1.
  static CircuitGraph Build(const CircuitShape& shape);
  // Build(shape).edges().size() without building it; saturates at INT64_MAX (shapes from the
  // wire may be absurd: the caller's limits refuse those).
  static int64_t CountEdges(int64_t n_layers, int64_t n_heads, bool attn_only);

  const CircuitShape& shape() const { return shape_; }
  const std::vector<CircuitNode>& nodes() const { return nodes_; }
  const std::vector<CircuitEdge>& edges() const { return edges_; }

  // "embed", "L3H7", "MLP3", "logits".
  std::string NodeName(int node) const;
  // A receiving input: "L1H1.q" / ".k" / ".v", "MLP3", "logits".
  std::string ReceiverName(int node, Channel channel) const;
  // "L0H1 -> L1H1.k".
  std::string EdgeName(int edge) const;

  // NOT_FOUND naming the input and the forms it can take.
  absl::StatusOr<int> FindNode(absl::string_view name) const;
  // A receiving input by name ("L1H1.k", "MLP2", "logits") -> (node, channel).
  absl::StatusOr<std::pair<int, Channel>> FindReceiver(absl::string_view name) const;
  absl::StatusOr<int> FindEdge(absl::string_view name) const;

  // [begin, end) of each receiving input's edges (a receiver's one input, or a head's q, k or v),
  // in edge id order: a receiving input's edges are consecutive.
  std::vector<std::pair<size_t, size_t>> ReceivingInputs() const;

  // The node index of a head, an MLP.
  int HeadNode(int layer, int head) const;
  int MlpNode(int layer) const;
  int LogitsNode() const { return static_cast<int>(nodes_.size()) - 1; }

 private:
  CircuitShape shape_;
  std::vector<CircuitNode> nodes_;  // embed, then per layer its heads and its MLP, then logits
  std::vector<CircuitEdge> edges_;
};

}  // namespace lensgrid

#endif  // LENSGRID_COMMON_CIRCUIT_GRAPH_H_
