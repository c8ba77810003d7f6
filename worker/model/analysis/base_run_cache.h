// A worker's memory of the base runs it already made: the clean (and, for
// patching, corrupted) forward of a shard's prompts and what a search derives
// from it before its interventions (each layer's resid_pre, the patching or
// ablation sources, the baseline metric). A search cut into component shards
// runs every shard of one prompt range over the same base run; with this
// cache a worker computes it once and the other shards reuse it. Path-patch
// and acdc-step keep their corruption batch here too (circuit_search.cc).
//
//   BaseRunCache cache(/*budget_bytes=*/256 << 20);
//   SearchOptions options;
//   options.base_run_cache = &cache;
//   options.base_run_scope = weights_sha256;  // what model ran them
//   RunSearch(model, dataset, spec, options);  // a miss: runs and stores
//   RunSearch(model, dataset, spec, options);  // a hit: the same tensors
//   cache.stats().hits == 1
//
// Keys are content hashes of everything that determines a base run (the
// scope naming the model, the method, metric, ablation, padding and every
// field of the prompts, and for mean ablation the prompts of the mean), so a
// hit is exactly the run a miss would compute and results are bit-identical
// with or without the cache. Values are opaque and immutable once stored
// (search.cc defines them); entries are evicted least recently used first to
// keep their bytes within the budget; a value larger than the budget is not
// kept. A budget of 0 keeps nothing. Thread-safe; LibTorch-free.
#ifndef LENSGRID_WORKER_MODEL_ANALYSIS_BASE_RUN_CACHE_H_
#define LENSGRID_WORKER_MODEL_ANALYSIS_BASE_RUN_CACHE_H_

#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace lensgrid {

struct Dataset;

// A cache key: a SHA-256 over a kind tag and every field appended, each
// length-prefixed, so that different sequences never collide by framing.
//
//   std::string key = BaseRunKey("lensgrid base run v1").Str(scope).Prompts(ds, 0, 8).Hex();
class BaseRunKey {
 public:
  explicit BaseRunKey(const std::string& kind) { Str(kind); }
  BaseRunKey& Int(int64_t v);
  BaseRunKey& Str(const std::string& v);
  BaseRunKey& Ids(const std::vector<int64_t>& ids);
  // The padded length, then every field of prompts [begin, end).
  BaseRunKey& Prompts(const Dataset& dataset, int64_t begin, int64_t end);
  std::string Hex() const;

 private:
  std::string bytes_;
};

class BaseRunCache {
 public:
  // Totals since construction, and what is held now.
  struct Stats {
    int64_t hits = 0, misses = 0, insertions = 0, evictions = 0;
    int64_t bytes = 0, entries = 0;  // now
    int64_t budget_bytes = 0;
  };

  explicit BaseRunCache(int64_t budget_bytes) : budget_(budget_bytes < 0 ? 0 : budget_bytes) {}
  BaseRunCache(const BaseRunCache&) = delete;
  BaseRunCache& operator=(const BaseRunCache&) = delete;

  // The value stored under `key` (now the most recently used), counted as a
  // hit; null (a miss) when there is none.
  std::shared_ptr<const void> Find(const std::string& key);
  // Stores `value` (of `bytes`) under `key`, replacing an entry of that key,
  // then evicts least recently used entries until the rest fit the budget.
  // A value over the whole budget is not stored (nothing is evicted for it).
  void Insert(const std::string& key, std::shared_ptr<const void> value, int64_t bytes);
  Stats stats() const;
  int64_t budget_bytes() const { return budget_; }

 private:
  struct Entry {
    std::string key;
    std::shared_ptr<const void> value;
    int64_t bytes;
  };
  void Erase(std::list<Entry>::iterator it) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int64_t budget_;
  mutable absl::Mutex mu_;
  std::list<Entry> lru_ ABSL_GUARDED_BY(mu_);  // most recently used first
  std::map<std::string, std::list<Entry>::iterator> by_key_ ABSL_GUARDED_BY(mu_);
  Stats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_MODEL_ANALYSIS_BASE_RUN_CACHE_H_
