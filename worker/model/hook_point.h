// Hook points: identity modules that make an activation observable and
// replaceable by name, as TransformerLens's HookPoint.
//
// Hooks are not stored in the modules: each run carries a RunContext holding
// the hooks of that run only, so one model serves concurrent runs and hooks
// are "reset" after every run by construction. A hook point with no hook costs
// one vector lookup.
//
//   RunContext ctx(model.num_hook_points());
//   ctx.AddHook(model.HookId("blocks.0.attn.hook_pattern").value(),
//               [](const torch::Tensor& pattern, const HookPointImpl& hp)
//                   -> std::optional<torch::Tensor> { ...; return std::nullopt; });
#ifndef LENSGRID_WORKER_MODEL_HOOK_POINT_H_
#define LENSGRID_WORKER_MODEL_HOOK_POINT_H_

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace lensgrid {

class HookPointImpl;

// Observes an activation (returns nullopt) or replaces it (returns a tensor of
// the same shape).
using HookFn = std::function<std::optional<torch::Tensor>(const torch::Tensor& activation,
                                                          const HookPointImpl& hook_point)>;

// Thrown inside a forward pass for errors a caller caused (a replacement of
// the wrong shape, a cancelled run); caught and turned into a Status at the
// model's API boundary. Never crosses that boundary.
class RunError : public std::runtime_error {
 public:
  enum class Kind { kInvalidArgument, kCancelled };
  RunError(Kind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  Kind kind() const { return kind_; }

 private:
  Kind kind_;
};

// The per-run state: hooks by hook-point id, and a cancellation check polled
// between blocks.
class RunContext {
 public:
  explicit RunContext(int num_hook_points) : hooks_(num_hook_points) {}
  void AddHook(int hook_id, HookFn fn) { hooks_.at(hook_id).push_back(std::move(fn)); }
  bool HasHooks(int hook_id) const { return !hooks_[hook_id].empty(); }
  const std::vector<HookFn>& Hooks(int hook_id) const { return hooks_[hook_id]; }

  std::function<bool()> is_cancelled;  // Default: never cancelled.
  void CheckCancelled() const {
    if (is_cancelled && is_cancelled()) {
      throw RunError(RunError::Kind::kCancelled, "run cancelled");
    }
  }

 private:
  std::vector<std::vector<HookFn>> hooks_;
};

class HookPointImpl : public torch::nn::Module {
 public:
  HookPointImpl() = default;

  // Identity unless the run has hooks here; hooks run in the order added, each
  // seeing the previous one's replacement.
  torch::Tensor forward(torch::Tensor x, const RunContext& ctx) const {
    if (id_ < 0 || !ctx.HasHooks(id_)) return x;
    return RunHooks(std::move(x), ctx);
  }

  // Full TransformerLens name, e.g. "blocks.3.attn.hook_pattern"; set by the
  // root model from named_modules().
  const std::string& name() const { return name_; }
  int id() const { return id_; }
  void Bind(std::string name, int id) {
    name_ = std::move(name);
    id_ = id;
  }

 private:
  torch::Tensor RunHooks(torch::Tensor x, const RunContext& ctx) const;
  std::string name_;
  int id_ = -1;
};
TORCH_MODULE(HookPoint);

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_MODEL_HOOK_POINT_H_
