#include "worker/model/hook_point.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace lensgrid {

torch::Tensor HookPointImpl::RunHooks(torch::Tensor x, const RunContext& ctx) const {
  for (const HookFn& fn : ctx.Hooks(id_)) {
    std::optional<torch::Tensor> replacement = fn(x, *this);
    if (!replacement.has_value()) continue;
    if (!replacement->defined() || replacement->sizes() != x.sizes()) {
      throw RunError(
          RunError::Kind::kInvalidArgument,
          absl::StrCat("hook on ", name_, " returned shape [",
                       replacement->defined() ? absl::StrJoin(replacement->sizes(), ", ")
                                              : std::string("undefined"),
                       "] but the activation has shape [", absl::StrJoin(x.sizes(), ", "), "]"));
    }
    x = replacement->to(x.dtype());
  }
  return x;
}

}  // namespace lensgrid
