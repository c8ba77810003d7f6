// Element types shared by safetensors files and the wire protocol (no LibTorch here).
#ifndef LENSGRID_COMMON_DTYPE_H_
#define LENSGRID_COMMON_DTYPE_H_

#include <cstddef>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace lensgrid {

enum class TensorDType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

// Safetensors spelling: "F32", "BF16", "I64", "BOOL", ...
absl::string_view DTypeName(TensorDType dtype);
absl::StatusOr<TensorDType> ParseDType(absl::string_view name);
size_t DTypeSize(TensorDType dtype);

}  // namespace lensgrid

#endif  // LENSGRID_COMMON_DTYPE_H_
