// LibTorch tensors <-> the wire's tensors (common/tensor_chunks.h).
//
//   LG_ASSIGN_OR_RETURN(TensorBytes out, ToTensorBytes("logits", logits));
//   LG_ASSIGN_OR_RETURN(at::Tensor value, FromProto(request.value(),
//   "interventions[0].value"));
#ifndef LENSGRID_WORKER_CORE_WIRE_TENSORS_H_
#define LENSGRID_WORKER_CORE_WIRE_TENSORS_H_

#include <ATen/core/Tensor.h>

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/tensor_chunks.h"
#include "lensgrid/v1/tensor.pb.h"

namespace lensgrid {

// Moves `t` to CPU, contiguous, and borrows its bytes (the TensorBytes owns a
// reference to the storage). INVALID_ARGUMENT for a dtype the wire lacks.
absl::StatusOr<TensorBytes> ToTensorBytes(std::string name, const at::Tensor& t);

// A CPU tensor copied from a validated inline Tensor (INVALID_ARGUMENT naming
// `what` for a bad dtype, shape or byte size).
absl::StatusOr<at::Tensor> FromProto(const v1::Tensor& tensor, absl::string_view what);

// I64 / F32 / BOOL ... tensor -> inline proto (for small tensors in headers).
absl::StatusOr<v1::Tensor> ToProto(const at::Tensor& t);

// F32 | F16 | BF16 (DTYPE_UNSPECIFIED -> `fallback`); INVALID_ARGUMENT
// naming `what` otherwise.
absl::StatusOr<c10::ScalarType> FloatScalarType(v1::DType dtype, c10::ScalarType fallback,
                                                absl::string_view what);

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_CORE_WIRE_TENSORS_H_
