#include "worker/core/wire_tensors.h"

#include <torch/torch.h>

#include <cstring>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/model/tensor_io.h"

namespace lensgrid {
namespace {

absl::StatusOr<c10::ScalarType> ScalarTypeOf(TensorDType dtype) {
  switch (dtype) {
    case TensorDType::kF32:
      return torch::kFloat32;
    case TensorDType::kF16:
      return torch::kFloat16;
    case TensorDType::kBF16:
      return torch::kBFloat16;
    case TensorDType::kI64:
      return torch::kInt64;
    case TensorDType::kI32:
      return torch::kInt32;
    case TensorDType::kBool:
      return torch::kBool;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("dtype ", DTypeName(dtype), " is not supported on the wire"));
  }
}

}  // namespace

absl::StatusOr<TensorBytes> ToTensorBytes(std::string name, const at::Tensor& t) {
  LG_ASSIGN_OR_RETURN(TensorDType dtype, DTypeOfTensor(t));
  LG_RETURN_IF_ERROR(ToProtoDType(dtype).status());
  auto owned = std::make_shared<at::Tensor>(t.detach().cpu().contiguous());
  TensorBytes out;
  out.name = std::move(name);
  out.dtype = dtype;
  out.shape.assign(owned->sizes().begin(), owned->sizes().end());
  out.bytes = absl::Span<const uint8_t>(static_cast<const uint8_t*>(owned->data_ptr()),
                                        static_cast<size_t>(owned->nbytes()));
  out.owner = std::move(owned);
  return out;
}

absl::StatusOr<at::Tensor> FromProto(const v1::Tensor& tensor, absl::string_view what) {
  LG_ASSIGN_OR_RETURN(WireTensor wire, FromProtoTensor(tensor, what));
  LG_ASSIGN_OR_RETURN(c10::ScalarType type, ScalarTypeOf(wire.dtype));
  at::Tensor t = torch::empty(wire.shape, torch::TensorOptions().dtype(type));
  if (!wire.data.empty()) std::memcpy(t.data_ptr(), wire.data.data(), wire.data.size());
  return t;
}

absl::StatusOr<v1::Tensor> ToProto(const at::Tensor& t) {
  LG_ASSIGN_OR_RETURN(TensorBytes bytes, ToTensorBytes("", t));
  v1::Tensor out;
  LG_ASSIGN_OR_RETURN(v1::DType dtype, ToProtoDType(bytes.dtype));
  out.set_dtype(dtype);
  for (int64_t d : bytes.shape) out.add_shape(d);
  out.set_data(reinterpret_cast<const char*>(bytes.bytes.data()), bytes.bytes.size());
  return out;
}

absl::StatusOr<c10::ScalarType> FloatScalarType(v1::DType dtype, c10::ScalarType fallback,
                                                absl::string_view what) {
  switch (dtype) {
    case v1::DTYPE_UNSPECIFIED:
      return fallback;
    case v1::F32:
      return torch::kFloat32;
    case v1::F16:
      return torch::kFloat16;
    case v1::BF16:
      return torch::kBFloat16;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": dtype ",
                       v1::DType_Name(dtype).empty() ? absl::StrCat(dtype) : v1::DType_Name(dtype),
                       " is not a float type (F32, F16 or BF16)"));
  }
}

}  // namespace lensgrid
