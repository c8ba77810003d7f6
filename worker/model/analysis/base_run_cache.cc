#include "worker/model/analysis/base_run_cache.h"

#include <utility>

#include "common/sha256.h"
#include "worker/model/analysis/dataset.h"

namespace lensgrid {

BaseRunKey& BaseRunKey::Int(int64_t v) {
  bytes_.append(reinterpret_cast<const char*>(&v), sizeof(v));
  return *this;
}

BaseRunKey& BaseRunKey::Str(const std::string& v) {
  Int(static_cast<int64_t>(v.size()));
  bytes_.append(v);
  return *this;
}

BaseRunKey& BaseRunKey::Ids(const std::vector<int64_t>& ids) {
  Int(static_cast<int64_t>(ids.size()));
  for (int64_t id : ids) Int(id);
  return *this;
}

BaseRunKey& BaseRunKey::Prompts(const Dataset& dataset, int64_t begin, int64_t end) {
  Int(dataset.max_length());
  Int(end - begin);
  for (int64_t i = begin; i < end; ++i) {
    const Prompt& p = dataset.prompts[i];
    Ids(p.tokens).Ids(p.corrupted_tokens).Ids(p.answers).Ids(p.wrongs).Int(p.loss_start);
  }
  return *this;
}

std::string BaseRunKey::Hex() const { return Sha256Hex(bytes_); }

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
