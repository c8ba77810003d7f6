#include "worker/core/shard_spec.h"

#include "common/search_proto.h"
#include "common/status_macros.h"

namespace lensgrid {
namespace {

std::vector<Prompt> Prompts(const google::protobuf::RepeatedPtrField<v1::InlinePrompt>& in) {
  std::vector<Prompt> out(static_cast<size_t>(in.size()));
  for (int i = 0; i < in.size(); ++i) {
    const v1::InlinePrompt& q = in.Get(i);
    Prompt& p = out[i];
    p.tokens.assign(q.tokens().begin(), q.tokens().end());
    p.corrupted_tokens.assign(q.corrupted_tokens().begin(), q.corrupted_tokens().end());
    p.answers.assign(q.answers().begin(), q.answers().end());
    p.wrongs.assign(q.wrongs().begin(), q.wrongs().end());
    p.loss_start = q.loss_start();  // 0 = 1, resolved by PrepareSearchShard
  }
  return out;
}

}  // namespace

absl::StatusOr<ShardTask> ShardTaskFromProto(const v1::ShardSpec& spec) {
  ShardTask task;
  LG_ASSIGN_OR_RETURN(task.spec.method, MethodFromProto(spec.method(), "shard method"));
  LG_ASSIGN_OR_RETURN(task.spec.metric, MetricFromProto(spec.metric()));
  LG_ASSIGN_OR_RETURN(task.spec.ablation, AblationFromProto(spec.ablation()));
  task.spec.circuit = CircuitParamsFromProto(spec.circuit());
  task.n_prompts = spec.n_prompts();
  task.n_pos = spec.n_pos();
  task.prompt_begin = spec.prompt_begin();
  task.prompt_end = spec.prompt_end();
  task.component_begin = spec.component_begin();
  task.component_end = spec.component_end();
  task.prompts = Prompts(spec.prompts());
  task.mean_prompts = Prompts(spec.mean_prompts());
  return task;
}

}  // namespace lensgrid
