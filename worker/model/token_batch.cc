#include "worker/model/token_batch.h"

#include <torch/torch.h>

#include <algorithm>

namespace lensgrid {

ForwardInput MakeTokenBatch(const std::vector<std::vector<int64_t>>& sequences,
                            const BatchOptions& options) {
  const int64_t n = static_cast<int64_t>(sequences.size());
  const int64_t bos = options.prepend_bos ? 1 : 0;
  int64_t pos = options.length;
  bool ragged = false;
  for (const auto& s : sequences) {
    pos = std::max<int64_t>(pos, bos + static_cast<int64_t>(s.size()));
  }
  torch::Tensor tokens = torch::full({n, pos}, options.pad_token_id, torch::kInt64);
  torch::Tensor mask = torch::zeros({n, pos}, torch::kInt64);
  for (int64_t i = 0; i < n; ++i) {
    std::vector<int64_t> row;
    if (options.prepend_bos) row.push_back(options.bos_token_id);
    row.insert(row.end(), sequences[i].begin(), sequences[i].end());
    const int64_t len = static_cast<int64_t>(row.size());
    ragged = ragged || len != pos;
    const int64_t start = options.padding == Padding::kLeft ? pos - len : 0;
    if (len > 0) tokens[i].slice(0, start, start + len) = torch::tensor(row, torch::kInt64);
    mask[i].slice(0, start, start + len) = 1;
  }
  ForwardInput in;
  in.tokens = tokens;
  if (ragged) in.attention_mask = mask;
  return in;
}

}  // namespace lensgrid
