// Small jobs and well-formed shard results for the coordinator's tests.
#ifndef LENSGRID_TESTS_SERVICE_TEST_JOBS_H_
#define LENSGRID_TESTS_SERVICE_TEST_JOBS_H_

#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "service/merger.h"
#include "service/planner.h"

namespace lensgrid::service::testing {

// ablate-heads on a 2x2 model, n prompts, one prompt and one head per shard.
inline v1::JobSpec SmallJob(int n_prompts = 2, const std::string& model = "m") {
  v1::JobSpec s;
  s.set_model_id(model);
  s.set_weights_sha256("sha");
  s.set_method(v1::METHOD_ABLATE_HEADS);
  s.set_n_layers(2);
  s.set_n_heads(2);
  s.set_prompts_per_shard(1);
  s.set_components_per_shard(1);
  for (int i = 0; i < n_prompts; ++i) {
    v1::InlinePrompt* p = s.add_prompts();
    p->add_tokens(1);
    p->add_tokens(2);
    p->add_answers(3);
    p->add_wrongs(4);
  }
  return s;
}

// The result a worker returns for a lease's shard: value = 10 p + c.
inline std::vector<Array> ResultFor(const v1::ShardSpec& shard) {
  const int64_t p0 = shard.prompt_begin(), p1 = shard.prompt_end();
  const int64_t c0 = shard.component_begin(), c1 = shard.component_end();
  Array baseline{"baseline", {p1 - p0}, {}};
  Array delta{"delta", {p1 - p0, c1 - c0}, {}};
  for (int64_t p = p0; p < p1; ++p) {
    baseline.values.push_back(static_cast<float>(p));
    for (int64_t c = c0; c < c1; ++c) delta.values.push_back(static_cast<float>(10 * p + c));
  }
  return {baseline, delta};
}

}  // namespace lensgrid::service::testing

#endif  // LENSGRID_TESTS_SERVICE_TEST_JOBS_H_
