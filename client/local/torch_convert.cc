#include "client/local/torch_convert.h"

#include <torch/torch.h>

#include "common/status_macros.h"
#include "worker/model/tensor_io.h"

namespace lensgrid {
namespace {

std::vector<double> Doubles(const at::Tensor& t) {
  if (!t.defined()) return {};
  at::Tensor d = t.detach().to(torch::kCPU, torch::kFloat64).contiguous().reshape({-1});
  return std::vector<double>(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
}

}  // namespace

SearchValues ValuesOfResult(const SearchResult& result) {
  SearchValues v;
  v.names = {result.spec.method, result.spec.metric, result.spec.ablation, result.spec.circuit};
  for (const SearchOutput& o : result.outputs) {
    v.outputs.push_back({o.name, o.axes, o.shape, Doubles(o.per_prompt), Doubles(o.mean)});
  }
  v.baseline = Doubles(result.baseline);
  v.reference = Doubles(result.reference);
  return v;
}

absl::StatusOr<WireTensor> TorchToWire(const std::string& name, const at::Tensor& t) {
  LG_ASSIGN_OR_RETURN(TensorDType dtype, DTypeOfTensor(t));
  at::Tensor c = t.detach().cpu().contiguous();
  WireTensor w;
  w.name = name;
  w.dtype = dtype;
  w.shape.assign(c.sizes().begin(), c.sizes().end());
  w.data.assign(static_cast<const char*>(c.data_ptr()), c.nbytes());
  return w;
}

}  // namespace lensgrid
