#include "worker/model/analysis/base_run_cache.h"

#include <utility>

namespace lensgrid {

std::shared_ptr<const void> BaseRunCache::Find(const std::string& key) {
  absl::MutexLock lock(&mu_);
  auto it = by_key_.find(key);
  if (it == by_key_.end()) {
    ++stats_.misses;
    return nullptr;
  }
  ++stats_.hits;
  lru_.splice(lru_.begin(), lru_, it->second);
  return it->second->value;
}

void BaseRunCache::Erase(std::list<Entry>::iterator it) {
  stats_.bytes -= it->bytes;
  --stats_.entries;
  by_key_.erase(it->key);
  lru_.erase(it);
}

void BaseRunCache::Insert(const std::string& key, std::shared_ptr<const void> value,
                          int64_t bytes) {
  if (value == nullptr || bytes < 0 || bytes > budget_) return;
  absl::MutexLock lock(&mu_);
  if (auto it = by_key_.find(key); it != by_key_.end()) Erase(it->second);
  lru_.push_front(Entry{key, std::move(value), bytes});
  by_key_[key] = lru_.begin();
  stats_.bytes += bytes;
  ++stats_.entries;
  ++stats_.insertions;
  while (stats_.bytes > budget_) {
    Erase(std::prev(lru_.end()));
    ++stats_.evictions;
  }
}

BaseRunCache::Stats BaseRunCache::stats() const {
  absl::MutexLock lock(&mu_);
  Stats s = stats_;
  s.budget_bytes = budget_;
  return s;
}

}  // namespace lensgrid
