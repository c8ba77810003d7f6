// The model id workers register with and jobs name: the coordinator gives a
// job's shards only to workers whose model id and weights sha256 both match.
// The weights hash already pins the weights; the id adds how they are used
// (processed as TransformerLens's from_pretrained, or raw), which changes
// some results (direct logit attribution, for one). `--model-id` overrides
// it on both sides, e.g. to keep CPU and GPU workers apart.
#ifndef LENSGRID_COMMON_MODEL_ID_H_
#define LENSGRID_COMMON_MODEL_ID_H_

#include <string>

namespace lensgrid {

inline std::string DefaultModelId(bool processed) {
  return processed ? "gpt2" : "gpt2+no-processing";
}

}  // namespace lensgrid

#endif  // LENSGRID_COMMON_MODEL_ID_H_
