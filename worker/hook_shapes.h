// Shapes of hook-point activations as functions of the input's batch and pos,
// and the byte size of a cache before it is computed. Pure (no LibTorch).
//
//   // From two probe runs, at [batch 1, pos 2] and [batch 2, pos 3]:
//   HookShape s = InferHookShape({1, 4, 2, 2}, {2, 4, 3, 3});
//   // s.shape == {-1, 4, -1, -1}, s.axes == {"batch", "", "query_pos",
//   "key_pos"} ConcreteShape(s, /*batch=*/8, /*pos=*/10, /*cached_pos=*/3,
//   false)  // {8, 4, 3, 10}
#ifndef LENSGRID_WORKER_HOOK_SHAPES_H_
#define LENSGRID_WORKER_HOOK_SHAPES_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace lensgrid {

inline constexpr int64_t kProbeBatchA = 1, kProbePosA = 2, kProbeBatchB = 2, kProbePosB = 3;

struct HookShape {
  std::vector<int64_t> shape;     // -1 for axes that follow the input
  std::vector<std::string> axes;  // "batch", "pos", "query_pos", "key_pos" or ""
};

HookShape InferHookShape(absl::Span<const int64_t> probe_a, absl::Span<const int64_t> probe_b);

// The shape for an input of [batch, pos] with `cached_pos` positions kept on
// the pos (query_pos) axis.
std::vector<int64_t> ConcreteShape(const HookShape& shape, int64_t batch, int64_t pos,
                                   int64_t cached_pos, bool remove_batch_dim);

// Axis of the (query) position and of the head in the hook's activation, as
// TransformerLens lays them out; nullopt when it has none.
std::optional<int> PosAxis(const HookShape& shape);
std::optional<int> HeadAxis(absl::string_view hook_name);

// The block a hook belongs to ("blocks.3.attn.hook_z" -> 3); nullopt for
// hook_embed, hook_pos_embed and ln_final.*.
std::optional<int> HookLayer(absl::string_view hook_name);

// Python-style slice [start, stop) of an axis of length n -> its length.
int64_t SliceLength(std::optional<int64_t> start, std::optional<int64_t> stop, int64_t n);
// Where that slice starts, in [0, n].
int64_t SliceStart(std::optional<int64_t> start, int64_t n);

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_HOOK_SHAPES_H_
