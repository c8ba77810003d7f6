#include "client/wire_torch.h"

#include <torch/torch.h>

#include <cstring>

#include "absl/strings/str_cat.h"

namespace lensgrid {

absl::StatusOr<at::Tensor> WireToTorch(const WireTensor& t) {
  c10::ScalarType type;
  switch (t.dtype) {
    case TensorDType::kF32:
      type = torch::kFloat32;
      break;
    case TensorDType::kF16:
      type = torch::kFloat16;
      break;
    case TensorDType::kBF16:
      type = torch::kBFloat16;
      break;
    case TensorDType::kI64:
      type = torch::kInt64;
      break;
    case TensorDType::kI32:
      type = torch::kInt32;
      break;
    case TensorDType::kBool:
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
