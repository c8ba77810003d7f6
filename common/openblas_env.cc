#include "common/openblas_env.h"

#include <unistd.h>

#include <cstdlib>

namespace lensgrid {

CpuFeatures DetectCpuFeatures() {
  CpuFeatures cpu;
#if defined(__x86_64__)
  __builtin_cpu_init();
  cpu.avx2 = __builtin_cpu_supports("avx2");
  cpu.fma = __builtin_cpu_supports("fma");
  cpu.avx512f = __builtin_cpu_supports("avx512f");
  cpu.avx512bw = __builtin_cpu_supports("avx512bw");
  cpu.avx512vl = __builtin_cpu_supports("avx512vl");
  cpu.avx512dq = __builtin_cpu_supports("avx512dq");
#endif
  return cpu;
}

std::optional<std::string> ChooseOpenBlasCoreType(const CpuFeatures& cpu) {
  if (cpu.avx512f && cpu.avx512bw && cpu.avx512vl && cpu.avx512dq) return "SkylakeX";
  if (cpu.avx2 && cpu.fma) return "Haswell";
  return std::nullopt;
}

void EnsureOpenBlasCoreType(char** argv) {
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return;
  if (std::getenv("LENSGRID_KEEP_OPENBLAS_CORETYPE") != nullptr) return;
  std::optional<std::string> core = ChooseOpenBlasCoreType(DetectCpuFeatures());
  if (!core.has_value()) return;
  // Marks the re-executed process, so a failed choice can never loop.
  setenv("LENSGRID_KEEP_OPENBLAS_CORETYPE", "1", 1);
  setenv("OPENBLAS_CORETYPE", core->c_str(), 1);
  execv("/proc/self/exe", argv);
  // exec failed: carry on with OpenBLAS's own choice.
  unsetenv("OPENBLAS_CORETYPE");
}

}  // namespace lensgrid
