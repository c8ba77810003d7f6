// What the benches share: the median wall time of a call.
#ifndef LENSGRID_BENCH_TIMING_H_
#define LENSGRID_BENCH_TIMING_H_

#include <algorithm>
#include <chrono>
#include <vector>

namespace lensgrid {

// Median seconds of `iters` calls of f, after one warm-up call.
template <typename F>
double MedianSeconds(int iters, F&& f) {
  f();  // warm-up
  std::vector<double> times;
  for (int i = 0; i < iters; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

}  // namespace lensgrid

#endif  // LENSGRID_BENCH_TIMING_H_
