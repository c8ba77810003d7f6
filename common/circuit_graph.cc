#include "common/circuit_graph.h"

#include <limits>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace lensgrid {
namespace {

constexpr char kArrow[] = " -> ";

std::string ChannelSuffix(Channel c) {
  const char* name = ChannelName(c);
  return *name == '\0' ? "" : absl::StrCat(".", name);
}

absl::Status NotFound(absl::string_view what, absl::string_view name) {
  return absl::NotFoundError(absl::StrCat(
      "unknown ", what, " \"", name.substr(0, 120),
      "\": nodes are embed, LlHh (a head, e.g. L1H3), MLPl (e.g. MLP0) and logits; a head "
      "receives on LlHh.q, LlHh.k and LlHh.v; an edge is \"SENDER -> RECEIVER\""));
}

}  // namespace

CircuitGraph CircuitGraph::Build(const CircuitShape& shape) {
  CircuitGraph g;
  g.shape_ = shape;
  g.nodes_.push_back({CircuitNode::Kind::kEmbed, -1, -1});
  for (int layer = 0; layer < shape.n_layers; ++layer) {
    for (int head = 0; head < shape.n_heads; ++head) {
      g.nodes_.push_back({CircuitNode::Kind::kHead, layer, head});
    }
    if (!shape.attn_only) g.nodes_.push_back({CircuitNode::Kind::kMlp, layer, -1});
  }
  g.nodes_.push_back({CircuitNode::Kind::kLogits, -1, -1});

  // Senders come before their receivers in `nodes_`, except that a head does not send to the
  // heads of its own layer (they read the same residual stream in parallel).
  auto senders_of = [&g](int receiver) {
    std::vector<int> senders;
    const CircuitNode& r = g.nodes_[receiver];
    for (int s = 0; s < receiver; ++s) {
      const CircuitNode& n = g.nodes_[s];
      if (r.kind == CircuitNode::Kind::kHead && n.kind == CircuitNode::Kind::kHead &&
          n.layer == r.layer) {
        continue;
      }
      senders.push_back(s);
    }
    return senders;
  };
  for (int receiver = 1; receiver < static_cast<int>(g.nodes_.size()); ++receiver) {
    const bool head = g.nodes_[receiver].kind == CircuitNode::Kind::kHead;
    const std::vector<int> senders = senders_of(receiver);
    for (Channel c : head ? std::vector<Channel>{Channel::kQuery, Channel::kKey, Channel::kValue}
                          : std::vector<Channel>{Channel::kResidual}) {
      for (int s : senders) g.edges_.push_back({s, receiver, c});
    }
  }
  return g;
}

const char* ChannelName(Channel c) {
  switch (c) {
    case Channel::kQuery:
      return "q";
    case Channel::kKey:
      return "k";
    case Channel::kValue:
      return "v";
    case Channel::kResidual:
      break;
  }
  return "";
}

std::vector<std::pair<size_t, size_t>> CircuitGraph::ReceivingInputs() const {
  std::vector<std::pair<size_t, size_t>> groups;
  for (size_t begin = 0; begin < edges_.size();) {
    size_t end = begin;
    while (end < edges_.size() && edges_[end].receiver == edges_[begin].receiver &&
           edges_[end].channel == edges_[begin].channel) {
      ++end;
    }
    groups.emplace_back(begin, end);
    begin = end;
  }
  return groups;
}

int64_t CircuitGraph::CountEdges(int64_t n_layers, int64_t n_heads, bool attn_only) {
  // Per layer l (m = 1 with MLPs): H heads x 3 inputs x (1 + l (H + m)) senders, the MLP's
  // 1 + l (H + 1) + H; the logits 1 + L (H + m). Summed in long double, then clamped.
  const long double L = static_cast<long double>(n_layers), H = static_cast<long double>(n_heads);
  const long double m = attn_only ? 0 : 1;
  const long double sum_l = L * (L - 1) / 2;  // sum of l over layers
  long double n = 3 * H * (L + sum_l * (H + m)) + 1 + L * (H + m);
  if (!attn_only) n += L * (1 + H) + sum_l * (H + 1);
  if (n >= static_cast<long double>(std::numeric_limits<int64_t>::max())) {
    return std::numeric_limits<int64_t>::max();
  }
  return static_cast<int64_t>(n);
}

int CircuitGraph::HeadNode(int layer, int head) const {
  return 1 + layer * (shape_.n_heads + (shape_.attn_only ? 0 : 1)) + head;
}

int CircuitGraph::MlpNode(int layer) const { return HeadNode(layer, shape_.n_heads); }

std::string CircuitGraph::NodeName(int node) const {
  const CircuitNode& n = nodes_.at(node);
  switch (n.kind) {
    case CircuitNode::Kind::kEmbed:
      return "embed";
    case CircuitNode::Kind::kHead:
      return absl::StrCat("L", n.layer, "H", n.head);
    case CircuitNode::Kind::kMlp:
      return absl::StrCat("MLP", n.layer);
    case CircuitNode::Kind::kLogits:
      break;
  }
  return "logits";
}

std::string CircuitGraph::ReceiverName(int node, Channel channel) const {
  return absl::StrCat(NodeName(node), ChannelSuffix(channel));
}

std::string CircuitGraph::EdgeName(int edge) const {
  const CircuitEdge& e = edges_.at(edge);
  return absl::StrCat(NodeName(e.sender), kArrow, ReceiverName(e.receiver, e.channel));
}

absl::StatusOr<int> CircuitGraph::FindNode(absl::string_view name) const {
  if (name == "embed") return 0;
  if (name == "logits") return LogitsNode();
  int layer = -1, head = -1;
  absl::string_view rest = name;
  if (absl::ConsumePrefix(&rest, "MLP")) {
    if (!shape_.attn_only && absl::SimpleAtoi(rest, &layer) && layer >= 0 &&
        layer < shape_.n_layers && !absl::StartsWith(rest, "+")) {
      return MlpNode(layer);
    }
    return NotFound("node", name);
  }
  if (absl::ConsumePrefix(&rest, "L")) {
    const size_t h = rest.find('H');
    if (h != absl::string_view::npos && absl::SimpleAtoi(rest.substr(0, h), &layer) &&
        absl::SimpleAtoi(rest.substr(h + 1), &head) && layer >= 0 && layer < shape_.n_layers &&
        head >= 0 && head < shape_.n_heads && !absl::StartsWith(rest, "+") &&
        !absl::StartsWith(rest.substr(h + 1), "+")) {
      return HeadNode(layer, head);
    }
  }
  return NotFound("node", name);
}

absl::StatusOr<std::pair<int, Channel>> CircuitGraph::FindReceiver(absl::string_view name) const {
  absl::string_view node_name = name;
  Channel channel = Channel::kResidual;
  for (Channel c : {Channel::kQuery, Channel::kKey, Channel::kValue}) {
    if (absl::ConsumeSuffix(&node_name, ChannelSuffix(c))) {
      channel = c;
      break;
    }
  }
  absl::StatusOr<int> node = FindNode(node_name);
  if (!node.ok()) return NotFound("receiver", name);
  const bool head = nodes_[*node].kind == CircuitNode::Kind::kHead;
  if (*node == 0 || head != (channel != Channel::kResidual)) return NotFound("receiver", name);
  return std::make_pair(*node, channel);
}

absl::StatusOr<int> CircuitGraph::FindEdge(absl::string_view name) const {
  const size_t arrow = name.find(kArrow);
  if (arrow == absl::string_view::npos) return NotFound("edge", name);
  absl::StatusOr<int> sender = FindNode(name.substr(0, arrow));
  absl::StatusOr<std::pair<int, Channel>> receiver =
      FindReceiver(name.substr(arrow + sizeof(kArrow) - 1));
  if (!sender.ok() || !receiver.ok()) return NotFound("edge", name);
  // Edges of one receiving input are consecutive and sorted by sender: a linear scan of a
  // 32k-edge table is cheap beside any model work, and keeps the table the only truth.
  for (size_t e = 0; e < edges_.size(); ++e) {
    const CircuitEdge& c = edges_[e];
    if (c.sender == *sender && c.receiver == receiver->first && c.channel == receiver->second) {
      return static_cast<int>(e);
    }
  }
  return absl::NotFoundError(absl::StrCat("no edge \"", name.substr(0, 120),
                                          "\": ", NodeName(*sender), " does not write to what ",
                                          ReceiverName(receiver->first, receiver->second),
                                          " reads (a sender must come before its receiver)"));
}

}  // namespace lensgrid
