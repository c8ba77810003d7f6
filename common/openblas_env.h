// OpenBLAS picks its kernels from the CPU at load time, before main(). The
// OpenBLAS 0.3.21 in Debian 12 does not recognise some current Xeons (seen
// here: a generic "Intel Xeon Processor" with AVX-512 detected as "Prescott")
// and then runs SSE3 kernels: fp32 GEMM at ~30 instead of ~180 GFLOP/s.
//
// EnsureOpenBlasCoreType() fixes that for our own processes: when
// OPENBLAS_CORETYPE is unset, it chooses the core type from the CPU's own
// feature flags and re-executes the program once with it set. A value already
// in the environment (some machines set one on purpose) is never changed;
// LENSGRID_KEEP_OPENBLAS_CORETYPE=1 turns the fix off.
//
//   int main(int argc, char** argv) {
//     lensgrid::EnsureOpenBlasCoreType(argv);  // first line of main
#ifndef LENSGRID_COMMON_OPENBLAS_ENV_H_
#define LENSGRID_COMMON_OPENBLAS_ENV_H_

#include <optional>
#include <string>

namespace lensgrid {

struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512dq = false;
};

CpuFeatures DetectCpuFeatures();

// "SkylakeX" for AVX-512 (F, BW, VL, DQ), "Haswell" for AVX2 + FMA, else none.
std::optional<std::string> ChooseOpenBlasCoreType(const CpuFeatures& cpu);

// Returns only when no re-exec is needed or the re-exec failed.
void EnsureOpenBlasCoreType(char** argv);

}  // namespace lensgrid

#endif  // LENSGRID_COMMON_OPENBLAS_ENV_H_
