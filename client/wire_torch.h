// A received wire tensor (common/tensor_chunks.h) as a LibTorch tensor.
#ifndef LENSGRID_CLIENT_WIRE_TORCH_H_
#define LENSGRID_CLIENT_WIRE_TORCH_H_

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "common/tensor_chunks.h"

namespace lensgrid {

// A copy of the bytes; INTERNAL for a dtype LibTorch has no name for here.
absl::StatusOr<at::Tensor> WireToTorch(const WireTensor& t);

}  // namespace lensgrid

#endif  // LENSGRID_CLIENT_WIRE_TORCH_H_
