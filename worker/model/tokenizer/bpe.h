// The byte-pair merge loop over one pre-token, on token ids.
//
// GPT-2's encoder.py repeatedly takes the adjacent pair with the lowest merge
// rank and merges every occurrence of it, left to right. This does the same
// with a linked list and a min-heap of (rank, position), as Hugging Face
// tokenizers' Word::merge_all does, so a word of n bytes costs O(n log n)
// instead of O(n^2): very long words (a 1 MB run of letters) stay cheap. The
// two orders agree when every token is made by merges ranked before any merge
// that uses it, as in every trained BPE; for files where that fails, Encode
// runs GPT-2's loop itself.
//
//   BytePairMerger merger(byte_ids, std::move(merges));
//   std::vector<int32_t> ids;
//   merger.Encode(" world", &ids);   // [995] with GPT-2's files
#ifndef LENSGRID_WORKER_MODEL_TOKENIZER_BPE_H_
#define LENSGRID_WORKER_MODEL_TOKENIZER_BPE_H_

#include <array>
#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace lensgrid {

struct MergeRule {
  int32_t rank;       // line order in merges.txt; lower merges first
  int32_t merged_id;  // the id of the concatenated token
};

inline uint64_t PairKey(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

class BytePairMerger {
 public:
  // byte_ids[b]: the token id of the single byte b. merges: PairKey(left,
  // right) -> rule.
  BytePairMerger(const std::array<int32_t, 256>& byte_ids,
                 absl::flat_hash_map<uint64_t, MergeRule> merges);

  // Appends the ids of `word` (raw bytes of one pre-token) to `out`.
  // Thread-safe.
  void Encode(std::string_view word, std::vector<int32_t>* out) const;

  // GPT-2's encoder.py loop, O(n^2): the reference Encode is tested against.
  void EncodeByRounds(std::string_view word, std::vector<int32_t>* out) const;
  void EncodeWithHeap(std::string_view word, std::vector<int32_t>* out) const;

  // Whether every token is produced only by merges ranked before all merges
  // that use it.
  bool merges_ordered() const { return merges_ordered_; }

 private:
  const MergeRule* Find(int32_t left, int32_t right) const;

  std::array<int32_t, 256> byte_ids_;
  absl::flat_hash_map<uint64_t, MergeRule> merges_;
  bool merges_ordered_;
};

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_MODEL_TOKENIZER_BPE_H_
