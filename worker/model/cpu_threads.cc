#include "worker/model/cpu_threads.h"

#include <dlfcn.h>
#include <sched.h>
#include <torch/torch.h>

namespace lensgrid {
namespace {

int AvailableCpus() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return CPU_COUNT(&set);
  return 1;
}

template <typename Fn>
Fn OpenBlasSymbol(const char* name) {
  return reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, name));
}

}  // namespace

void ConfigureCpuThreads(int threads) {
  if (threads <= 0) threads = AvailableCpus();
  if (auto set = OpenBlasSymbol<void (*)(int)>("openblas_set_num_threads")) set(threads);
  torch::set_num_threads(1);
}

int BlasThreads() {
  if (auto get = OpenBlasSymbol<int (*)()>("openblas_get_num_threads")) return get();
  return -1;
}

}  // namespace lensgrid
