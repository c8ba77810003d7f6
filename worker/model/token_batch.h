// Sequences of token ids -> one padded batch with an attention mask, as
// TransformerLens's to_tokens does for a list of strings.
//
//   BatchOptions opts;
//   opts.prepend_bos = true;
//   opts.bos_token_id = model->cfg().bos_token_id;
//   opts.padding = Padding::kLeft;
//   ForwardInput in = MakeTokenBatch({{464, 3797}, {15496}}, opts);
//   // in.tokens [2, 3], in.attention_mask [2, 3] (0 on pads)
#ifndef LENSGRID_WORKER_MODEL_TOKEN_BATCH_H_
#define LENSGRID_WORKER_MODEL_TOKEN_BATCH_H_

#include <cstdint>
#include <vector>

#include "worker/model/hooked_transformer.h"

namespace lensgrid {

enum class Padding { kRight, kLeft };

struct BatchOptions {
  bool prepend_bos = false;  // Default: ids as given
  int64_t bos_token_id = 50256;
  Padding padding = Padding::kRight;
  int64_t pad_token_id = 50256;  // any valid id: pads are masked out
  int64_t length = 0;            // pad to at least this many positions
};

// The attention mask is set only when some sequence is padded.
ForwardInput MakeTokenBatch(const std::vector<std::vector<int64_t>>& sequences,
                            const BatchOptions& options);

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_MODEL_TOKEN_BATCH_H_
