// The coordinator's grid table (pure C++) agrees with the library's
// SearchOutputs() for every method and model shape.
#include "service/grids.h"

#include "gtest/gtest.h"
#include "worker/model/analysis/search.h"

namespace lensgrid::service {
namespace {

TEST(GridsTest, AgreeWithTheLibrary) {
  const std::vector<std::string> methods = {
      "ablate-heads",       "ablate-layers",
      "patch-resid",        "patch-attn-out",
      "patch-mlp-out",      "patch-heads",
      "patch-heads-by-pos", "patch-pattern",
      "detect-heads",       "dla"};
  for (bool attn_only : {false, true}) {
    for (const std::string& name : methods) {
      SCOPED_TRACE(name);
      ModelConfig cfg;
      cfg.n_layers = 3;
      cfg.n_heads = 5;
      cfg.attn_only = attn_only;
      SearchSpec spec;
      spec.method = ParseMethod(name).value();
      const auto lib = SearchOutputs(spec, cfg, /*n_pos=*/7);
      const auto ours = MethodGrids(name, {3, 5, attn_only}, 7);
      ASSERT_TRUE(ours.ok()) << ours.status();
      ASSERT_EQ(ours->size(), lib.size());
      for (size_t i = 0; i < lib.size(); ++i) {
        EXPECT_EQ((*ours)[i].name, lib[i].name);
        EXPECT_EQ((*ours)[i].axes, lib[i].axes);
        EXPECT_EQ((*ours)[i].shape, lib[i].shape);
      }
      EXPECT_EQ(IsPatchingMethod(name), IsPatching(spec.method));
    }
  }
  EXPECT_EQ(MethodGrids("nope", {1, 1, false}, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace lensgrid::service
