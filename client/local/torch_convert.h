// LibTorch results as the LibTorch-free values `lensgrid` prints and writes: an in-process
// search's SearchResult as SearchValues (client/search_values.h), a tensor as a WireTensor
// (common/tensor_chunks.h), as a worker's reply would carry it.
//
//   WriteSearchOutput(ValuesOfResult(result), ctx, views, dir, out);
#ifndef LENSGRID_CLIENT_LOCAL_TORCH_CONVERT_H_
#define LENSGRID_CLIENT_LOCAL_TORCH_CONVERT_H_

#include <ATen/core/Tensor.h>

#include <string>

#include "absl/status/statusor.h"
#include "client/search_values.h"
#include "common/tensor_chunks.h"
#include "worker/model/analysis/search.h"

namespace lensgrid {

// The values of a whole search (means over prompts present).
SearchValues ValuesOfResult(const SearchResult& result);

// A copy of the tensor's bytes (on the CPU, contiguous); INVALID_ARGUMENT for a dtype
// safetensors has no name for.
absl::StatusOr<WireTensor> TorchToWire(const std::string& name, const at::Tensor& t);

}  // namespace lensgrid

#endif  // LENSGRID_CLIENT_LOCAL_TORCH_CONVERT_H_
