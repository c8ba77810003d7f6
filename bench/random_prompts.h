// The sweep benches' dataset: random prompts on GPT-2's vocabulary, BOS first, with random
// answer and wrong tokens; with `corrupted`, a corrupted twin differing in about half its tokens.
#ifndef LENSGRID_BENCH_RANDOM_PROMPTS_H_
#define LENSGRID_BENCH_RANDOM_PROMPTS_H_

#include <cstdint>
#include <random>

#include "worker/model/analysis/dataset.h"
#include "worker/model/config.h"

namespace lensgrid {

inline Dataset RandomPrompts(const HookedTransformerConfig& cfg, int64_t prompts, int64_t pos,
                             bool corrupted) {
  std::mt19937_64 rng(0);
  Dataset ds{"random", {}};
  for (int64_t i = 0; i < prompts; ++i) {
    Prompt p;
    p.tokens = {cfg.bos_token_id};
    if (corrupted) p.corrupted_tokens = {cfg.bos_token_id};
    while (static_cast<int64_t>(p.tokens.size()) < pos) {
      p.tokens.push_back(rng() % 50000);
      if (corrupted) {
        p.corrupted_tokens.push_back(rng() % 2 == 0 ? p.tokens.back()
                                                    : static_cast<int64_t>(rng() % 50000));
      }
    }
    p.answers = {static_cast<int64_t>(rng() % 50000)};
    p.wrongs = {static_cast<int64_t>(rng() % 50000)};
    ds.prompts.push_back(p);
  }
  return ds;
}

}  // namespace lensgrid

#endif  // LENSGRID_BENCH_RANDOM_PROMPTS_H_
