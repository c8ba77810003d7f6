// Hook programs: every operation against the same computation written with
// LibTorch, programs against hand-written hook functions and the library's
// edits, and every kind of bad program refused with a message that names it.
#include "worker/model/hook_program.h"

#include <torch/torch.h>

#include <cmath>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/worker/model/test_util.h"
#include "worker/model/activation_edit.h"
#include "worker/model/hooked_transformer.h"
#include "worker/model/weights.h"

namespace lensgrid {
namespace {

using ::lensgrid::testing::AllClose;
using ::testing::HasSubstr;
using P = ProgramNodeSpec;

class HookProgramTest : public ::testing::Test {
 protected:
  void SetUp() override {
    torch::manual_seed(3);
    HookedTransformerConfig cfg = ::lensgrid::testing::TestConfig(2, 4, 32, 64, 16, 50);
    GPT2Weights w = RandomWeights(cfg, 11);
    for (auto& b : w.blocks) {
      b.W_Q = b.W_Q * 10;
      b.W_K = b.W_K * 10;
      b.b_out = 0.05 * torch::randn_like(b.b_out);
    }
    w.W_E = w.W_E * 20;
    model_ = HookedTransformer::FromWeights(cfg, w).value();
    in_.tokens = torch::randint(0, 49, {2, 5}, torch::kInt64);
    patch_.tokens = torch::randint(0, 49, {2, 5}, torch::kInt64);
    // Every activation, for the shapes and as the reference's inputs.
    ASSERT_TRUE(model_->RunWithCache(in_, {}, {}, &clean_).ok());
    for (const std::string& name : model_->hook_names()) {
      env_.hook_shapes.push_back(clean_.Get(name).value().sizes().vec());
    }
    env_.dtype = torch::kFloat32;
    env_.has_patch_run = true;
  }

  absl::StatusOr<ProgramPlan> Compile(const std::vector<HookProgramSpec>& programs,
                                      const ProgramLimits& limits = {}) {
    return ProgramPlan::Compile(programs, *model_, env_, limits);
  }

  // Runs `programs` on in_ (the patch run on patch_); returns the logits and
  // fills *values.
  torch::Tensor Run(const std::vector<HookProgramSpec>& programs, ProgramValues* values) {
    ProgramPlan plan = Compile(programs).value();
    ActivationCache patch_cache;
    if (!plan.PatchHookNames().empty()) {
      CacheOptions names;
      names.names = plan.PatchHookNames();
      EXPECT_TRUE(model_->RunWithCache(patch_, {}, names, &patch_cache).ok());
    }
    auto out = std::make_shared<ProgramValues>();
    absl::StatusOr<RunOutput> r = model_->Run(in_, {}, plan.MakeHooks(&patch_cache, out));
    EXPECT_TRUE(r.ok()) << r.status();
    *values = *out;
    return r.ok() ? r->logits : torch::Tensor();
  }

  // One observing program on `hook` whose saves are `saves` (id = name).
  torch::Tensor Saved(const std::string& hook, std::vector<ProgramNodeSpec> nodes,
                      const std::string& save) {
    HookProgramSpec p;
    p.hook = hook;
    p.nodes = std::move(nodes);
    p.saves = {{save, save}};
    ProgramValues values;
    Run({p}, &values);
    return values.Get(save).value();
  }

  absl::Status CompileError(std::vector<ProgramNodeSpec> nodes, const std::string& output = "",
                            const std::string& hook = "blocks.1.attn.hook_z",
                            const ProgramLimits& limits = {}) {
    HookProgramSpec p;
    p.hook = hook;
    p.nodes = std::move(nodes);
    p.output = output;
    return Compile({p}, limits).status();
  }

  std::shared_ptr<HookedTransformer> model_;
  ForwardInput in_, patch_;
  ActivationCache clean_;
  ProgramEnv env_;
};

constexpr char kZ1[] = "blocks.1.attn.hook_z";          // [2, 5, 4, 8]
constexpr char kResid0[] = "blocks.0.hook_resid_post";  // [2, 5, 32]

TEST_F(HookProgramTest, ElementwiseOpsBroadcastAsLibTorch) {
  const torch::Tensor z = clean_.Get(kZ1).value();
  const torch::Tensor lit = torch::randn({4, 1});  // broadcasts over [.., head, d_head]
  struct Case {
    ProgramOp op;
    std::function<torch::Tensor(torch::Tensor, torch::Tensor)> ref;
  };
  std::vector<Case> cases = {
      {ProgramOp::kAdd, [](auto a, auto b) { return a + b; }},
      {ProgramOp::kSub, [](auto a, auto b) { return a - b; }},
      {ProgramOp::kMul, [](auto a, auto b) { return a * b; }},
      {ProgramOp::kDiv, [](auto a, auto b) { return a / b; }},
      {ProgramOp::kMaximum, [](auto a, auto b) { return torch::maximum(a, b); }},
      {ProgramOp::kMinimum, [](auto a, auto b) { return torch::minimum(a, b); }},
      {ProgramOp::kLt, [](auto a, auto b) { return a.lt(b); }},
      {ProgramOp::kGe, [](auto a, auto b) { return a.ge(b); }},
      {ProgramOp::kEq, [](auto a, auto b) { return a.eq(b); }},
  };
  for (const Case& c : cases) {
    torch::Tensor got =
        Saved(kZ1, {P::Activation("z"), P::Literal("l", lit), P::Op("r", c.op, {"z", "l"})}, "r");
    EXPECT_TRUE(AllClose(got.to(torch::kFloat64), c.ref(z, lit).to(torch::kFloat64), 1e-6,
                         ProgramOpName(c.op)));
  }
  torch::Tensor pow = Saved(
      kZ1, {P::Activation("z"), P::Constant("two", 2.0), P::Op("r", ProgramOp::kPow, {"z", "two"})},
      "r");
  EXPECT_TRUE(AllClose(pow, z.pow(2), 1e-6, "pow"));
  // A constant beyond the dtype's range is +-inf, as a literal's values and
  // a cast (it once escaped LibTorch's overflow check as INTERNAL).
  torch::Tensor huge =
      Saved(kZ1,
            {P::Activation("z"), P::Constant("big", 1e308), P::Constant("small", -1e300),
             P::Op("r", ProgramOp::kAdd, {"big", "small"})},
            "big");
  EXPECT_TRUE(std::isinf(huge.item<float>()) && huge.item<float>() > 0);
  std::vector<std::pair<ProgramOp, std::function<torch::Tensor(torch::Tensor)>>> unary = {
      {ProgramOp::kNeg, [](auto a) { return -a; }},
      {ProgramOp::kAbs, [](auto a) { return a.abs(); }},
      {ProgramOp::kExp, [](auto a) { return a.exp(); }},
      {ProgramOp::kTanh, [](auto a) { return a.tanh(); }},
      {ProgramOp::kRelu, [](auto a) { return a.relu(); }},
      {ProgramOp::kSigmoid, [](auto a) { return a.sigmoid(); }},
  };
  for (const auto& [op, ref] : unary) {
    torch::Tensor got = Saved(kZ1, {P::Activation("z"), P::Op("r", op, {"z"})}, "r");
    EXPECT_TRUE(AllClose(got, ref(z), 1e-6, ProgramOpName(op)));
  }
  torch::Tensor sq =
      Saved(kZ1,
            {P::Activation("z"), P::Op("a", ProgramOp::kAbs, {"z"}),
             P::Op("s", ProgramOp::kSqrt, {"a"}), P::Op("r", ProgramOp::kLog, {"s"})},
            "r");
  EXPECT_TRUE(AllClose(sq, z.abs().sqrt().log(), 1e-5, "log sqrt abs"));
  // where(z > 0, z, 0.5 * z) with a scalar broadcast.
  torch::Tensor leaky = Saved(
      kZ1,
      {P::Activation("z"), P::Constant("zero", 0), P::Constant("h", 0.5),
       P::Op("pos", ProgramOp::kGt, {"z", "zero"}), P::Op("half", ProgramOp::kMul, {"z", "h"}),
       P::Op("r", ProgramOp::kWhere, {"pos", "z", "half"})},
      "r");
  EXPECT_TRUE(AllClose(leaky, torch::where(z > 0, z, 0.5 * z), 1e-7, "where"));
}

TEST_F(HookProgramTest, IndexSliceAndWriteWithNegativeIndices) {
  const torch::Tensor z = clean_.Get(kZ1).value();  // [2, 5, 4, 8]
  // z[:, -1, 2] -> [2, 8]
  EXPECT_TRUE(
      AllClose(Saved(kZ1, {P::Activation("z"), P::Index("r", "z", {All(), At(-1), At(2)})}, "r"),
               z.select(2, 2).select(1, 4), 0, "z[:, -1, 2]"));
  // z[..., 1:7:2] and z[:, [-1, 0], :, -2]
  EXPECT_TRUE(AllClose(
      Saved(kZ1, {P::Activation("z"), P::Index("r", "z", {Ellipsis(), Range(1, 7, 2)})}, "r"),
      z.slice(3, 1, 7, 2), 0, "z[..., 1:7:2]"));
  EXPECT_TRUE(AllClose(
      Saved(kZ1, {P::Activation("z"), P::Index("r", "z", {All(), List({-1, 0}), All(), At(-2)})},
            "r"),
      z.index_select(1, torch::tensor({4, 0})).select(3, 6), 0, "z[:, [-1, 0], :, -2]"));
  // Python clamps slices: z[:, -100:2]
  EXPECT_TRUE(
      AllClose(Saved(kZ1, {P::Activation("z"), P::Index("r", "z", {All(), Range(-100, 2)})}, "r"),
               z.slice(1, 0, 2), 0, "z[:, -100:2]"));
  // z[:, [0, 3], -1] = 7 * ones([8]) (broadcast), orthogonally.
  torch::Tensor got = Saved(kZ1,
                            {P::Activation("z"), P::Literal("v", torch::full({8}, 7.0)),
                             P::Write("r", "z", "v", {All(), List({0, 3}), At(-1)})},
                            "r");
  torch::Tensor want = z.clone();
  for (int64_t p : {0, 3}) want.select(1, p).select(1, 3).fill_(7.0);
  EXPECT_TRUE(AllClose(got, want, 0, "write"));
  // The written value has the region's own shape: [2, 2 positions, 8].
  torch::Tensor value = torch::randn({2, 2, 8});
  got = Saved(kZ1,
              {P::Activation("z"), P::Literal("v", value),
               P::Write("r", "z", "v", {All(), Range(1, 3), At(0)})},
              "r");
  want = z.clone();
  want.slice(1, 1, 3).select(2, 0).copy_(value);
  EXPECT_TRUE(AllClose(got, want, 0, "write a [2, 2, 8] region"));
}

TEST_F(HookProgramTest, ContractionsReductionsSoftmaxAndProjections) {
  const torch::Tensor resid = clean_.Get(kResid0).value();  // [2, 5, 32]
  const torch::Tensor W_U = model_->W_U();
  EXPECT_TRUE(AllClose(Saved(kResid0,
                             {P::Activation("x"), P::Weight("wu", "W_U"),
                              P::Op("r", ProgramOp::kMatmul, {"x", "wu"})},
                             "r"),
                       torch::matmul(resid, W_U), 1e-4, "resid @ W_U"));
  const torch::Tensor W_O = model_->Weight("blocks.1.attn.W_O").value();  // [4, 8, 32]
  const torch::Tensor z = clean_.Get(kZ1).value();
  EXPECT_TRUE(AllClose(Saved(kZ1,
                             {P::Activation("z"), P::Weight("wo", "blocks.-1.attn.W_O"),
                              P::Einsum("r", "bphd,hdm->bphm", {"z", "wo"})},
                             "r"),
                       torch::einsum("bphd,hdm->bphm", {z, W_O}), 1e-5, "einsum per-head result"));
  struct Case {
    ProgramOp op;
    std::vector<int64_t> axes;
    bool keepdim;
    torch::Tensor want;
  };
  std::vector<Case> cases = {
      {ProgramOp::kSum, {-1}, false, resid.sum(-1)},
      {ProgramOp::kMean, {0, 2}, true, resid.mean(std::vector<int64_t>{0, 2}, true)},
      {ProgramOp::kMax, {1}, false, resid.amax(1)},
      {ProgramOp::kMin, {}, false, resid.min()},
      {ProgramOp::kNorm, {-1}, true, resid.norm(2, {-1}, true)},
  };
  for (const Case& c : cases) {
    EXPECT_TRUE(AllClose(
        Saved(kResid0, {P::Activation("x"), P::Reduce("r", c.op, "x", c.axes, c.keepdim)}, "r"),
        c.want, 1e-4, ProgramOpName(c.op)));
  }
  ProgramNodeSpec sm = P::Op("r", ProgramOp::kSoftmax, {"x"});
  sm.axes = {-1};
  EXPECT_TRUE(AllClose(Saved(kResid0, {P::Activation("x"), sm}, "r"), torch::softmax(resid, -1),
                       1e-6, "softmax"));
  const torch::Tensor d = torch::randn({32});
  const torch::Tensor onto = (resid * d).sum(-1, true) / d.dot(d) * d;
  EXPECT_TRUE(AllClose(Saved(kResid0,
                             {P::Activation("x"), P::Literal("d", d),
                              P::Op("r", ProgramOp::kProjectOut, {"x", "d"})},
                             "r"),
                       resid - onto, 1e-5, "project out"));
  torch::Tensor out =
      Saved(kResid0,
            {P::Activation("x"), P::Literal("d", d), P::Op("o", ProgramOp::kProjectOut, {"x", "d"}),
             P::Literal("dd", d), P::Op("m", ProgramOp::kMul, {"o", "dd"}),
             P::Reduce("r", ProgramOp::kSum, "m", {-1})},
            "r");
  EXPECT_LT(out.abs().max().item<double>(), 1e-3) << "what is left has no component along d";
  ProgramNodeSpec reshape = P::Op("r", ProgramOp::kReshape, {"x"});
  reshape.shape = {-1, 32};
  EXPECT_TRUE(AllClose(Saved(kResid0, {P::Activation("x"), reshape}, "r"), resid.reshape({10, 32}),
                       0, "reshape"));
  ProgramNodeSpec permute = P::Op("r", ProgramOp::kPermute, {"x"});
  permute.axes = {2, 0, 1};
  EXPECT_TRUE(AllClose(Saved(kResid0, {P::Activation("x"), permute}, "r"), resid.permute({2, 0, 1}),
                       0, "permute"));
}

TEST_F(HookProgramTest, AProgramEqualsTheSameHookFunction) {
  // Scale neuron 5 of blocks.0's MLP by 3 and remove the embedding's direction
  // of token 7 from resid_post 0: as programs and as hand-written hooks.
  HookProgramSpec scale;
  scale.hook = "blocks.0.mlp.hook_post";
  scale.nodes = {P::Activation("a"), P::Index("n5", "a", {Ellipsis(), At(5)}),
                 P::Constant("three", 3), P::Op("s", ProgramOp::kMul, {"n5", "three"}),
                 P::Write("out", "a", "s", {Ellipsis(), At(5)})};
  scale.output = "out";
  HookProgramSpec project;
  project.hook = kResid0;
  project.nodes = {P::Activation("x"), P::Weight("we", "W_E"), P::Index("d", "we", {At(7)}),
                   P::Op("out", ProgramOp::kProjectOut, {"x", "d"})};
  project.output = "out";
  ProgramValues values;
  torch::Tensor got = Run({project, scale}, &values);

  const torch::Tensor d = model_->Weight("W_E").value()[7];
  std::vector<NamedHook> hooks = {
      {"blocks.0.mlp.hook_post",
       [](const torch::Tensor& a, const HookPointImpl&) -> std::optional<torch::Tensor> {
         torch::Tensor out = a.clone();
         out.select(-1, 5).mul_(3);
         return out;
       }},
      {kResid0, [d](const torch::Tensor& x, const HookPointImpl&) -> std::optional<torch::Tensor> {
         return x - (x * d).sum(-1, true) / d.dot(d) * d;
       }}};
  torch::Tensor want = model_->Run(in_, {}, hooks).value().logits;
  EXPECT_TRUE(AllClose(got, want, 1e-5, "program vs hook function"));
  EXPECT_FALSE(AllClose(got, model_->Run(in_, {}).value().logits, 1e-3, "changed"));
}

TEST_F(HookProgramTest, PatchingAHeadFromThePatchRunEqualsThePatchEdit) {
  HookProgramSpec p;
  p.hook = kZ1;
  p.nodes = {P::Activation("z"), P::Hook("clean", kZ1, HookRun::kPatch),
             P::Index("h", "clean", {All(), All(), At(2)}),
             P::Write("out", "z", "h", {All(), All(), At(2)})};
  p.output = "out";
  ProgramValues values;
  torch::Tensor got = Run({p}, &values);

  ActivationCache patch_cache;
  CacheOptions names;
  names.names = {kZ1};
  ASSERT_TRUE(model_->RunWithCache(patch_, {}, names, &patch_cache).ok());
  ActivationEdit e;
  e.op = EditOp::kPatch;
  e.head_axis = 2;
  e.head = 2;
  torch::Tensor want =
      model_->Run(in_, {}, {{kZ1, EditHook({e}, {patch_cache.Get(kZ1).value()})}}).value().logits;
  EXPECT_TRUE(AllClose(got, want, 0, "program patch vs PATCH edit"));
}

// The six declarative edits stay as fast paths; each equals its program form.
TEST_F(HookProgramTest, EveryEditOpEqualsItsProgram) {
  const std::vector<RegionAxis> region = {All(), List({0, -1}),
                                          At(1)};  // positions 0, -1 of head 1
  const torch::Tensor value = torch::randn({8});
  ActivationCache patch_cache;
  CacheOptions names;
  names.names = {kZ1};
  ASSERT_TRUE(model_->RunWithCache(patch_, {}, names, &patch_cache).ok());
  struct Case {
    EditOp op;
    std::vector<ProgramNodeSpec> nodes;  // ending in "out"
  };
  const std::vector<Case> cases = {
      {EditOp::kZero, {P::Constant("v", 0)}},
      {EditOp::kMean,
       {P::Index("r", "z", region), P::Reduce("v", ProgramOp::kMean, "r", {0}, true)}},
      {EditOp::kSet, {P::Literal("v", value)}},
      {EditOp::kAdd,
       {P::Index("r", "z", region), P::Literal("l", value),
        P::Op("v", ProgramOp::kAdd, {"r", "l"})}},
      {EditOp::kScale,
       {P::Index("r", "z", region), P::Constant("k", 2.5),
        P::Op("v", ProgramOp::kMul, {"r", "k"})}},
      {EditOp::kPatch, {P::Hook("clean", kZ1, HookRun::kPatch), P::Index("v", "clean", region)}},
  };
  for (const Case& c : cases) {
    EditRequest request;
    request.op = c.op;
    request.positions = {0, -1};
    request.head = 1;
    if (c.op == EditOp::kSet || c.op == EditOp::kAdd) request.value = value;
    request.scale = 2.5;
    ActivationLayout layout{env_.hook_shapes[model_->HookId(kZ1).value()], 1, 2};
    absl::StatusOr<ActivationEdit> edit =
        MakeEdit(request, layout, kZ1, torch::kCPU, torch::kFloat32);
    ASSERT_TRUE(edit.ok()) << edit.status();
    torch::Tensor want =
        model_->Run(in_, {}, {{kZ1, EditHook({*edit}, {patch_cache.Get(kZ1).value()})}})
            .value()
            .logits;
    HookProgramSpec p;
    p.hook = kZ1;
    p.nodes = {P::Activation("z")};
    p.nodes.insert(p.nodes.end(), c.nodes.begin(), c.nodes.end());
    p.nodes.push_back(P::Write("out", "z", "v", region));
    p.output = "out";
    ProgramValues values;
    torch::Tensor got = Run({p}, &values);
    EXPECT_TRUE(AllClose(got, want, 1e-6, absl::StrCat("edit op ", static_cast<int>(c.op))));
  }
}

TEST_F(HookProgramTest, ProgramsReadEarlierHooksAndEarlierSaves) {
  // Program 1 on resid_post 0 saves the norm of every position; program 2 on
  // layer 1's z reads it and the embedding (an earlier hook of this run).
  HookProgramSpec first;
  first.hook = kResid0;
  first.nodes = {P::Activation("x"), P::Reduce("n", ProgramOp::kNorm, "x", {-1})};
  first.saves = {{"norms", "n"}};
  HookProgramSpec second;
  second.hook = kZ1;
  second.nodes = {P::Saved("n", "norms"), P::Hook("e", "hook_embed"),
                  P::Reduce("s", ProgramOp::kSum, "e", {-1}),
                  P::Op("r", ProgramOp::kAdd, {"n", "s"})};
  second.saves = {{"sum", "r"}};
  // hook_pattern runs before hook_z (though registered after it).
  HookProgramSpec third;
  third.hook = kZ1;
  third.nodes = {P::Hook("p", "blocks.1.attn.hook_pattern"),
                 P::Reduce("m", ProgramOp::kMax, "p", {-1})};
  third.saves = {{"peak", "m"}};
  ProgramValues values;
  Run({second, first, third}, &values);  // given out of order: they run in forward order
  EXPECT_TRUE(AllClose(values.Get("peak").value(),
                       clean_.Get("blocks.1.attn.hook_pattern").value().amax(-1), 1e-6,
                       "pattern read at hook_z"));
  ASSERT_EQ(values.saved.size(), 3u);
  EXPECT_EQ(values.saved[0].first, "norms");
  const torch::Tensor want =
      clean_.Get(kResid0).value().norm(2, {-1}) + clean_.Get("hook_embed").value().sum(-1);
  EXPECT_TRUE(AllClose(values.Get("sum").value(), want, 1e-4, "saved + earlier hook"));
}

TEST_F(HookProgramTest, ALongChainCompilesWithoutRecursion) {
  std::vector<ProgramNodeSpec> nodes = {P::Constant("n0", 1)};
  const int kLength = 300000;  // far deeper than a thread's stack would take recursively
  for (int i = 1; i < kLength; ++i) {
    nodes.push_back(P::Op(absl::StrCat("n", i), ProgramOp::kNeg, {absl::StrCat("n", i - 1)}));
  }
  std::reverse(nodes.begin(), nodes.end());  // the last node first: the deepest walk
  HookProgramSpec p;
  p.hook = kZ1;
  p.nodes = std::move(nodes);
  p.saves = {{"end", absl::StrCat("n", kLength - 1)}};
  ProgramLimits limits;
  limits.max_nodes = kLength;
  absl::StatusOr<ProgramPlan> plan = Compile({p}, limits);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->saved().size(), 1u);
}

// Random programs: whatever Compile accepts runs, and every node's value has the shape Compile
// inferred (RunProgram checks each one and fails the run otherwise); whatever it refuses is
// INVALID_ARGUMENT or RESOURCE_EXHAUSTED, never a crash.
TEST_F(HookProgramTest, RandomProgramsRunWithTheShapesTheirCheckInferred) {
  std::mt19937 rng(20261202);
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  const std::vector<ProgramOp> binary = {ProgramOp::kAdd, ProgramOp::kSub,     ProgramOp::kMul,
                                         ProgramOp::kDiv, ProgramOp::kMaximum, ProgramOp::kGt,
                                         ProgramOp::kEq,  ProgramOp::kMatmul};
  const std::vector<ProgramOp> unary = {ProgramOp::kNeg, ProgramOp::kAbs, ProgramOp::kTanh,
                                        ProgramOp::kRelu};
  const std::vector<ProgramOp> reduce = {ProgramOp::kSum, ProgramOp::kMean, ProgramOp::kMax,
                                         ProgramOp::kMin, ProgramOp::kNorm};
  auto random_axes = [&](int count) {
    std::vector<int64_t> axes;
    for (int i = 0; i < count; ++i) axes.push_back(pick(9) - 4);
    return axes;
  };
  auto random_selector = [&]() -> RegionAxis {
    switch (pick(5)) {
      case 0:
        return All();
      case 1:
        return At(pick(11) - 5);
      case 2:
        return Range(pick(9) - 4, pick(9) - 2, 1 + pick(2));
      case 3:
        return List({pick(7) - 3, pick(7) - 3});
      default:
        return Ellipsis();
    }
  };
  int accepted = 0, ran = 0;
  for (int trial = 0; trial < 4000; ++trial) {
    std::vector<ProgramNodeSpec> nodes = {P::Activation("n0"), P::Constant("n1", 0.5),
                                          P::Literal("n2", torch::randn({8})),
                                          P::Literal("n3", torch::randn({5, 1}))};
    const int extra = 1 + pick(8);
    for (int i = 0; i < extra; ++i) {
      const std::string id = absl::StrCat("n", nodes.size());
      auto any = [&] { return absl::StrCat("n", pick(static_cast<int>(nodes.size()))); };
      switch (pick(7)) {
        case 0:
          nodes.push_back(P::Op(id, binary[pick(binary.size())], {any(), any()}));
          break;
        case 1:
          nodes.push_back(P::Op(id, unary[pick(unary.size())], {any()}));
          break;
        case 2:
          nodes.push_back(P::Reduce(id, reduce[pick(reduce.size())], any(), random_axes(pick(3)),
                                    pick(2) == 0));
          break;
        case 3: {
          std::vector<RegionAxis> region;
          for (int k = pick(4); k >= 0; --k) region.push_back(random_selector());
          nodes.push_back(P::Index(id, any(), region));
          break;
        }
        case 4: {
          std::vector<RegionAxis> region;
          for (int k = pick(4); k >= 0; --k) region.push_back(random_selector());
          nodes.push_back(P::Write(id, any(), any(), region));
          break;
        }
        case 5: {
          ProgramNodeSpec sm = P::Op(id, ProgramOp::kSoftmax, {any()});
          sm.axes = random_axes(1);
          nodes.push_back(sm);
          break;
        }
        default:
          nodes.push_back(P::Op(id, ProgramOp::kWhere, {any(), any(), any()}));
      }
    }
    HookProgramSpec p;
    p.hook = kZ1;
    p.nodes = nodes;
    p.saves = {{"last", nodes.back().id}};
    absl::StatusOr<ProgramPlan> plan = Compile({p});
    if (!plan.ok()) {
      EXPECT_TRUE(plan.status().code() == absl::StatusCode::kInvalidArgument ||
                  plan.status().code() == absl::StatusCode::kResourceExhausted)
          << plan.status();
      continue;
    }
    ++accepted;
    auto values = std::make_shared<ProgramValues>();
    absl::StatusOr<RunOutput> out = model_->Run(in_, {}, plan->MakeHooks(nullptr, values));
    ASSERT_TRUE(out.ok()) << "trial " << trial << ": " << out.status();
    ASSERT_EQ(values->saved.size(), 1u);
    EXPECT_EQ(values->saved[0].second.sizes().vec(), plan->saved()[0].shape) << "trial " << trial;
    ++ran;
  }
  EXPECT_GT(accepted, 300) << "the generator should make many valid programs";
  EXPECT_EQ(ran, accepted);
}

TEST_F(HookProgramTest, BadProgramsAreRefusedWithTheNodeAndShapes) {
  auto expect = [](const absl::Status& s, absl::StatusCode code, const std::string& text) {
    EXPECT_EQ(s.code(), code) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr(text));
  };
  using C = absl::StatusCode;
  expect(
      CompileError({P::Op("a", ProgramOp::kAdd, {"b", "b"}), P::Op("b", ProgramOp::kNeg, {"a"})}),
      C::kInvalidArgument, "cycle: a -> b -> a");
  expect(CompileError({P::Activation("z"), P::Op("a", ProgramOp::kNeg, {"ghost"})}),
         C::kInvalidArgument, "node 'a' (neg): input 'ghost' is not a node of this program");
  expect(CompileError({P::Hook("h", "blocks.0.attn.hook_zz")}), C::kNotFound, "hook_zz");
  expect(CompileError({P::Weight("w", "blocks.0.attn.W_X")}), C::kNotFound, "unknown weight");
  expect(CompileError({P::Activation("z"), P::Literal("l", torch::zeros({3})),
                       P::Op("a", ProgramOp::kAdd, {"z", "l"})}),
         C::kInvalidArgument, "node 'a' (add): shapes [2, 5, 4, 8] and [3] do not broadcast");
  expect(CompileError({P::Activation("z"), P::Index("i", "z", {All(), All(), At(4)})}),
         C::kInvalidArgument, "index 4 is out of range for axis 2 of size 4");
  expect(CompileError({P::Activation("z"), P::Index("i", "z", {All(), List({0, -6})})}),
         C::kInvalidArgument, "index -6 is out of range for axis 1 of size 5");
  ProgramLimits small;
  small.max_einsum_elements = 1000;
  expect(CompileError({P::Activation("z"), P::Einsum("e", "bphd,bqhd->bhpq", {"z", "z"})}, "", kZ1,
                      small),
         C::kResourceExhausted, "max einsum elements");
  small = {};
  small.max_bytes = 2000;
  expect(CompileError({P::Activation("z"), P::Op("a", ProgramOp::kExp, {"z"}),
                       P::Op("b", ProgramOp::kExp, {"a"})},
                      "", kZ1, small),
         C::kResourceExhausted, "max program bytes");
  small = {};
  small.max_nodes = 2;
  expect(CompileError({P::Activation("z"), P::Op("a", ProgramOp::kExp, {"z"}),
                       P::Op("b", ProgramOp::kExp, {"a"})},
                      "", kZ1, small),
         C::kResourceExhausted, "max program nodes");
  expect(CompileError({P::Activation("z"), P::Literal("v", torch::zeros({3, 8})),
                       P::Write("w", "z", "v", {All(), All(), At(1)})},
                      "w"),
         C::kInvalidArgument, "the value [3, 8] does not broadcast to the region [2, 5, 8]");
  expect(CompileError({P::Literal("v", torch::tensor({1.0, std::nan("")}))}), C::kInvalidArgument,
         "node 'v' (literal): holds NaN");
  expect(CompileError({P::Activation("z"), P::Reduce("s", ProgramOp::kSum, "z", {-1})}, "s"),
         C::kInvalidArgument, "output 's': is [2, 5, 4] but replaces the activation [2, 5, 4, 8]");
  expect(CompileError({P::Hook("later", "blocks.1.hook_resid_post")}), C::kInvalidArgument,
         "is not computed before blocks.1.attn.hook_z");
  expect(CompileError({P::Saved("s", "nothing")}), C::kInvalidArgument,
         "no program that runs before this one saves 'nothing'");
  expect(CompileError({P::Activation("z"), P::Einsum("e", "ab->a", {"z"})}), C::kInvalidArgument,
         "einsum term 'ab' has 2 axes but input 0 is [2, 5, 4, 8]");
  expect(CompileError({P::Activation("z"), P::Activation("z")}), C::kInvalidArgument,
         "repeats id 'z'");
  expect(CompileError({P::Activation("z"), P::Op("w", ProgramOp::kWhere, {"z", "z", "z"})}),
         C::kInvalidArgument, "the condition must be bool");
}

}  // namespace
}  // namespace lensgrid
