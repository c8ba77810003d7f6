#include "client/wire_torch.h"

#include <torch/torch.h>

#include <cstring>

#include "absl/strings/str_cat.h"

namespace lensgrid {

absl::StatusOr<at::Tensor> WireToTorch(const WireTensor& t) {
  c10::ScalarType type;
  switch (t.dtype) {
    case DType::kF32:
      type = torch::kFloat32;
      break;
    case DType::kF16:
      type = torch::kFloat16;
      break;
    case DType::kBF16:
      type = torch::kBFloat16;
      break;
    case DType::kI64:
      type = torch::kInt64;
      break;
    case DType::kI32:
      type = torch::kInt32;
      break;
    case DType::kBool:
      type = torch::kBool;
      break;
    default:
      return absl::InternalError(absl::StrCat("tensor ", t.name, ": unexpected dtype"));
  }
  at::Tensor out = torch::empty(t.shape, torch::TensorOptions().dtype(type));
  if (!t.data.empty()) std::memcpy(out.data_ptr(), t.data.data(), t.data.size());
  return out;
}

}  // namespace lensgrid
