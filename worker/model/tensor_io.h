// LibTorch tensors <-> safetensors files (the format of `lensgrid run --output`).
//
//   LG_RETURN_IF_ERROR(WriteTensorFile("out.safetensors", {{"logits", logits}}));
//   LG_ASSIGN_OR_RETURN(auto tensors, ReadTensorFile("out.safetensors"));
#ifndef LENSGRID_WORKER_MODEL_TENSOR_IO_H_
#define LENSGRID_WORKER_MODEL_TENSOR_IO_H_

#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/safetensors.h"

namespace lensgrid {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// Copies one entry out of the (possibly unaligned) mapping, in its own dtype.
absl::StatusOr<at::Tensor> TensorFromEntry(const SafetensorsFile& file,
                                           const SafetensorsEntry& entry);

absl::StatusOr<NamedTensors> ReadTensorFile(const std::string& path);

// Writes tensors (moved to CPU, made contiguous) in the given order.
absl::Status WriteTensorFile(const std::string& path, const NamedTensors& tensors,
                             const std::map<std::string, std::string>& metadata = {});

absl::StatusOr<TensorDType> DTypeOfTensor(const at::Tensor& t);

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_MODEL_TENSOR_IO_H_
