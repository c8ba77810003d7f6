// What a fake worker sends for an ablate-heads shard: the CompleteShard header,
// then well-formed zeros for "baseline" [n] and "delta" [n, c] (n prompts, c
// components of its ShardSpec). The coordinator benches' workers run no model.
#ifndef LENSGRID_BENCH_FAKE_SHARD_RESULT_H_
#define LENSGRID_BENCH_FAKE_SHARD_RESULT_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "lensgrid/v1/coordinator.pb.h"

namespace lensgrid::bench {

inline std::vector<v1::CompleteShardRequest> FakeShardResult(const std::string& worker_id,
                                                             const v1::ShardLease& lease) {
  const v1::ShardSpec& spec = lease.shard();
  const int64_t n = spec.prompt_end() - spec.prompt_begin();
  const int64_t c = spec.component_end() - spec.component_begin();
  std::vector<v1::CompleteShardRequest> out(1);
  out[0].mutable_header()->set_worker_id(worker_id);
  out[0].mutable_header()->set_lease_id(lease.lease_id());
  for (auto [name, shape] : std::vector<std::pair<std::string, std::vector<int64_t>>>{
           {"baseline", {n}}, {"delta", {n, c}}}) {
    v1::CompleteShardRequest msg;
    v1::TensorChunk* t = msg.mutable_chunk();
    t->set_name(name);
    t->set_dtype(v1::F32);
    int64_t count = 1;
    for (int64_t d : shape) {
      t->add_shape(d);
      count *= d;
    }
    t->set_total_bytes(count * 4);
    t->set_data(std::string(count * 4, '\0'));
    out.push_back(std::move(msg));
  }
  return out;
}

}  // namespace lensgrid::bench

#endif  // LENSGRID_BENCH_FAKE_SHARD_RESULT_H_
