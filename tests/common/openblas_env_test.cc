#include "common/openblas_env.h"

#include "gtest/gtest.h"

namespace lensgrid {
namespace {

TEST(OpenBlasEnvTest, ChoosesKernelsFromFeatureFlags) {
  CpuFeatures avx512{true, true, true, true, true, true};
  EXPECT_EQ(ChooseOpenBlasCoreType(avx512), "SkylakeX");
  CpuFeatures avx512_without_bw = avx512;
  avx512_without_bw.avx512bw = false;
  EXPECT_EQ(ChooseOpenBlasCoreType(avx512_without_bw), "Haswell");
  CpuFeatures avx2{true, true, false, false, false, false};
  EXPECT_EQ(ChooseOpenBlasCoreType(avx2), "Haswell");
  CpuFeatures avx2_no_fma{true, false, false, false, false, false};
  EXPECT_EQ(ChooseOpenBlasCoreType(avx2_no_fma), std::nullopt);
  EXPECT_EQ(ChooseOpenBlasCoreType(CpuFeatures{}), std::nullopt);
}

}  // namespace
}  // namespace lensgrid
