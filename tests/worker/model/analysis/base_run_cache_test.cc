#include "worker/model/analysis/base_run_cache.h"

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace lensgrid {
namespace {

std::shared_ptr<const void> Value(int v) { return std::make_shared<const int>(v); }
int Of(const std::shared_ptr<const void>& p) { return *std::static_pointer_cast<const int>(p); }

TEST(BaseRunCacheTest, FindsWhatWasInsertedAndCounts) {
  BaseRunCache cache(100);
  EXPECT_EQ(cache.Find("a"), nullptr);
  cache.Insert("a", Value(1), 40);
  ASSERT_NE(cache.Find("a"), nullptr);
  EXPECT_EQ(Of(cache.Find("a")), 1);
  const BaseRunCache::Stats s = cache.stats();
  EXPECT_EQ(s.hits, 2);
  EXPECT_EQ(s.misses, 1);
  EXPECT_EQ(s.insertions, 1);
  EXPECT_EQ(s.bytes, 40);
  EXPECT_EQ(s.entries, 1);
  EXPECT_EQ(s.budget_bytes, 100);
}

TEST(BaseRunCacheTest, EvictsLeastRecentlyUsedWithinTheBudget) {
  BaseRunCache cache(100);
  cache.Insert("a", Value(1), 40);
  cache.Insert("b", Value(2), 40);
  ASSERT_NE(cache.Find("a"), nullptr);  // b is now the least recently used
  cache.Insert("c", Value(3), 40);
  EXPECT_EQ(cache.Find("b"), nullptr);
  EXPECT_NE(cache.Find("a"), nullptr);
  EXPECT_NE(cache.Find("c"), nullptr);
  EXPECT_EQ(cache.stats().bytes, 80);
  EXPECT_EQ(cache.stats().evictions, 1);
  cache.Insert("d", Value(4), 100);  // the whole budget: everything else goes
  EXPECT_EQ(cache.stats().entries, 1);
  EXPECT_EQ(cache.stats().bytes, 100);
  EXPECT_EQ(Of(cache.Find("d")), 4);
}

TEST(BaseRunCacheTest, AValueOverTheBudgetIsNotKeptAndEvictsNothing) {
  BaseRunCache cache(100);
  cache.Insert("a", Value(1), 60);
  cache.Insert("big", Value(2), 101);
  EXPECT_EQ(cache.Find("big"), nullptr);
  EXPECT_NE(cache.Find("a"), nullptr);
  EXPECT_EQ(cache.stats().evictions, 0);
  BaseRunCache none(0);
  none.Insert("a", Value(1), 1);
  EXPECT_EQ(none.stats().entries, 0);
  EXPECT_EQ(none.Find("a"), nullptr);
}

TEST(BaseRunCacheTest, InsertingAKeyAgainReplacesIt) {
  BaseRunCache cache(100);
  cache.Insert("a", Value(1), 60);
  cache.Insert("a", Value(2), 30);
  EXPECT_EQ(Of(cache.Find("a")), 2);
  EXPECT_EQ(cache.stats().bytes, 30);
  EXPECT_EQ(cache.stats().entries, 1);
}

// A value found stays valid after it is evicted (its holder shares it).
TEST(BaseRunCacheTest, AFoundValueOutlivesItsEviction) {
  BaseRunCache cache(10);
  cache.Insert("a", Value(7), 10);
  std::shared_ptr<const void> held = cache.Find("a");
  cache.Insert("b", Value(8), 10);
  EXPECT_EQ(cache.Find("a"), nullptr);
  EXPECT_EQ(Of(held), 7);
}

TEST(BaseRunCacheTest, ConcurrentUseKeepsTheBudget) {
  BaseRunCache cache(1000);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&cache, t] {
      for (int i = 0; i < 500; ++i) {
        const std::string key = std::to_string((i * 7 + t) % 40);
        if (cache.Find(key) == nullptr) cache.Insert(key, Value(i), 30 + i % 50);
      }
    });
  }
  for (auto& th : threads) th.join();
  const BaseRunCache::Stats s = cache.stats();
  EXPECT_LE(s.bytes, 1000);
  EXPECT_EQ(s.hits + s.misses, 4 * 500);
}

}  // namespace
}  // namespace lensgrid
