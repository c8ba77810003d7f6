#include "worker/model/tensor_io.h"

#include <torch/torch.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace lensgrid {
namespace {

struct TypePair {
  TensorDType dtype;
  torch::ScalarType scalar;
};
constexpr TypePair kTypes[] = {
    {TensorDType::kF64, torch::kFloat64}, {TensorDType::kF32, torch::kFloat32},
    {TensorDType::kF16, torch::kFloat16}, {TensorDType::kBF16, torch::kBFloat16},
    {TensorDType::kI64, torch::kInt64},   {TensorDType::kI32, torch::kInt32},
    {TensorDType::kI16, torch::kInt16},   {TensorDType::kI8, torch::kInt8},
    {TensorDType::kU8, torch::kUInt8},    {TensorDType::kBool, torch::kBool},
};

}  // namespace

absl::StatusOr<TensorDType> DTypeOfTensor(const at::Tensor& t) {
  for (const auto& p : kTypes) {
    if (p.scalar == t.scalar_type()) return p.dtype;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("tensor dtype ", c10::toString(t.scalar_type()), " has no safetensors name"));
}

absl::StatusOr<at::Tensor> TensorFromEntry(const SafetensorsFile& file,
                                           const SafetensorsEntry& entry) {
  for (const auto& p : kTypes) {
    if (p.dtype != entry.dtype) continue;
    at::Tensor t = torch::empty(entry.shape, torch::TensorOptions().dtype(p.scalar));
    auto bytes = file.Data(entry);
    if (!bytes.empty()) std::memcpy(t.data_ptr(), bytes.data(), bytes.size());
    return t;
  }
  return absl::InvalidArgumentError(
      absl::StrCat(file.path(), ": tensor \"", entry.name, "\" has unsupported dtype"));
}

absl::StatusOr<NamedTensors> ReadTensorFile(const std::string& path) {
  LG_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(path));
  NamedTensors out;
  for (const auto& e : file->entries()) {
    LG_ASSIGN_OR_RETURN(at::Tensor t, TensorFromEntry(*file, e));
    out.emplace_back(e.name, std::move(t));
  }
  return out;
}

absl::Status WriteTensorFile(const std::string& path, const NamedTensors& tensors,
                             const std::map<std::string, std::string>& metadata) {
  std::vector<at::Tensor> keep;  // owns the contiguous CPU copies during the write
  std::vector<SafetensorsTensorView> views;
  for (const auto& [name, tensor] : tensors) {
    LG_ASSIGN_OR_RETURN(TensorDType dtype, DTypeOfTensor(tensor));
    keep.push_back(tensor.detach().cpu().contiguous());
    const at::Tensor& t = keep.back();
    views.push_back({name, dtype, std::vector<int64_t>(t.sizes().begin(), t.sizes().end()),
                     t.data_ptr(), static_cast<size_t>(t.nbytes())});
  }
  return WriteSafetensors(path, views, metadata);
}

}  // namespace lensgrid
