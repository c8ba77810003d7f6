#include "worker/model/tokenizer/bpe.h"

#include <algorithm>
#include <utility>

namespace lensgrid {
namespace {

struct Symbol {
  int32_t id;
  int32_t prev;  // index of the previous live symbol, -1 at the start
  int32_t next;  // index of the next live symbol, -1 at the end
  bool live;
};

struct Candidate {
  int32_t rank;
  int32_t pos;  // index of the left symbol; original byte order, so ties go
                // leftmost first
  // std::*_heap build a max-heap; invert so the smallest (rank, pos) is on top.
  bool operator<(const Candidate& other) const {
    return rank != other.rank ? rank > other.rank : pos > other.pos;
  }
};

}  // namespace

BytePairMerger::BytePairMerger(const std::array<int32_t, 256>& byte_ids,
                               absl::flat_hash_map<uint64_t, MergeRule> merges)
    : byte_ids_(byte_ids), merges_(std::move(merges)), merges_ordered_(true) {
  absl::flat_hash_map<int32_t, int32_t> last_made;  // token id -> highest rank producing it
  for (const auto& [key, rule] : merges_) {
    int32_t& rank = last_made[rule.merged_id];
    rank = std::max(rank, rule.rank);
  }
  for (const auto& [key, rule] : merges_) {
    for (int32_t part : {static_cast<int32_t>(key >> 32), static_cast<int32_t>(key)}) {
      auto it = last_made.find(part);
      if (it != last_made.end() && it->second >= rule.rank) merges_ordered_ = false;
    }
  }
}

const MergeRule* BytePairMerger::Find(int32_t left, int32_t right) const {
  auto it = merges_.find(PairKey(left, right));
  return it == merges_.end() ? nullptr : &it->second;
}

void BytePairMerger::Encode(std::string_view word, std::vector<int32_t>* out) const {
  if (word.size() == 1) {
    out->push_back(byte_ids_[static_cast<uint8_t>(word[0])]);
  } else if (merges_ordered_) {
    EncodeWithHeap(word, out);
  } else {
    EncodeByRounds(word, out);
  }
}

void BytePairMerger::EncodeByRounds(std::string_view word, std::vector<int32_t>* out) const {
  std::vector<int32_t> ids, next;
  for (char c : word) ids.push_back(byte_ids_[static_cast<uint8_t>(c)]);
  while (ids.size() > 1) {
    const MergeRule* best = nullptr;
    int32_t first = 0, second = 0;
    for (size_t i = 0; i + 1 < ids.size(); ++i) {
      const MergeRule* rule = Find(ids[i], ids[i + 1]);
      if (rule != nullptr && (best == nullptr || rule->rank < best->rank)) {
        best = rule;
        first = ids[i];
        second = ids[i + 1];
      }
    }
    if (best == nullptr) break;
    next.clear();
    for (size_t i = 0; i < ids.size();) {
      if (i + 1 < ids.size() && ids[i] == first && ids[i + 1] == second) {
        next.push_back(best->merged_id);
        i += 2;
      } else {
        next.push_back(ids[i++]);
      }
    }
    ids.swap(next);
  }
  out->insert(out->end(), ids.begin(), ids.end());
}

void BytePairMerger::EncodeWithHeap(std::string_view word, std::vector<int32_t>* out) const {
  const int32_t n = static_cast<int32_t>(word.size());
  std::vector<Symbol> symbols(n);
  for (int32_t i = 0; i < n; ++i) {
    symbols[i] = {byte_ids_[static_cast<uint8_t>(word[i])], i - 1, i + 1 < n ? i + 1 : -1, true};
  }
  std::vector<Candidate> heap;
  auto push = [&](int32_t pos) {
    const int32_t next = symbols[pos].next;
    if (next < 0) return;
    if (const MergeRule* rule = Find(symbols[pos].id, symbols[next].id)) {
      heap.push_back({rule->rank, pos});
      std::push_heap(heap.begin(), heap.end());
    }
  };
  for (int32_t i = 0; i + 1 < n; ++i) push(i);

  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end());
    const Candidate top = heap.back();
    heap.pop_back();
    Symbol& left = symbols[top.pos];
    if (!left.live || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    // Stale when either side changed since it was queued: ranks are unique per
    // pair.
    const MergeRule* rule = Find(left.id, right.id);
    if (rule == nullptr || rule->rank != top.rank) continue;

    left.id = rule->merged_id;
    right.live = false;
    left.next = right.next;
    if (left.next >= 0) symbols[left.next].prev = top.pos;
    if (left.prev >= 0) push(left.prev);
    push(top.pos);
  }
  for (int32_t i = n > 0 ? 0 : -1; i >= 0; i = symbols[i].next) out->push_back(symbols[i].id);
}

}  // namespace lensgrid
