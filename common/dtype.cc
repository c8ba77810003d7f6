#include "common/dtype.h"

#include <array>
#include <utility>

#include "absl/strings/str_cat.h"

namespace lensgrid {
namespace {

struct DTypeInfo {
  TensorDType dtype;
  absl::string_view name;
  size_t size;
};

constexpr std::array<DTypeInfo, 10> kDTypes = {{
    {TensorDType::kF64, "F64", 8},
    {TensorDType::kF32, "F32", 4},
    {TensorDType::kF16, "F16", 2},
    {TensorDType::kBF16, "BF16", 2},
    {TensorDType::kI64, "I64", 8},
    {TensorDType::kI32, "I32", 4},
    {TensorDType::kI16, "I16", 2},
    {TensorDType::kI8, "I8", 1},
    {TensorDType::kU8, "U8", 1},
    {TensorDType::kBool, "BOOL", 1},
}};

const DTypeInfo& Info(TensorDType dtype) {
  for (const auto& info : kDTypes) {
    if (info.dtype == dtype) return info;
  }
  return kDTypes[1];  // unreachable: every enumerator is listed
}

}  // namespace

absl::string_view DTypeName(TensorDType dtype) { return Info(dtype).name; }
size_t DTypeSize(TensorDType dtype) { return Info(dtype).size; }

absl::StatusOr<TensorDType> ParseDType(absl::string_view name) {
  for (const auto& info : kDTypes) {
    if (info.name == name) return info.dtype;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported dtype \"", name,
                   "\" (supported: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)"));
}

}  // namespace lensgrid
