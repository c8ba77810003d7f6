// TransformerLens's published numbers on the real GPT-2 small weights. Runs
// when LENSGRID_GPT2_DIR points to a Hugging Face gpt2 dir (config.json,
// model.safetensors; tokenizer files or the bootstrap default); otherwise
// exits 77, which ctest reports as skipped.
#include <cstdlib>
#include <iostream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/worker/model/test_util.h"
#include "worker/model/hooked_transformer.h"
#include "worker/model/tokenizer/tokenizer.h"

namespace lensgrid {
namespace {

using ::testing::ElementsAre;

class Gpt2RealTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string dir = std::getenv("LENSGRID_GPT2_DIR");
    processed_ = HookedTransformer::FromPretrained(dir).value();
    LoadOptions raw;
    raw.processing = ProcessingOptions::None();
    unprocessed_ = HookedTransformer::FromPretrained(dir, raw).value();
    tokenizer_ = LoadTokenizerForModel(dir).value().release();
  }

  // TransformerLens's to_tokens: BOS + the text's ids.
  static torch::Tensor ToTokens(const std::string& text) {
    std::vector<int64_t> ids = {50256};
    for (int64_t id : tokenizer_->Encode(text)) ids.push_back(id);
    return torch::tensor(ids, torch::kInt64).unsqueeze(0);
  }

  static std::shared_ptr<HookedTransformer> processed_, unprocessed_;
  static Tokenizer* tokenizer_;
};
std::shared_ptr<HookedTransformer> Gpt2RealTest::processed_;
std::shared_ptr<HookedTransformer> Gpt2RealTest::unprocessed_;
Tokenizer* Gpt2RealTest::tokenizer_ = nullptr;

TEST_F(Gpt2RealTest, TokenizesLikeTransformerLens) {
  torch::Tensor t = ToTokens("The cat sat on the mat.");
  std::vector<int64_t> ids(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
  EXPECT_THAT(ids, ElementsAre(50256, 464, 3797, 3332, 319, 262, 2603, 13));
}

TEST_F(Gpt2RealTest, HelloWorldLossIsPublishedValue) {
  ModelInput in;
  in.tokens = ToTokens("Hello world!");
  RunOptions opts;
  opts.return_type = ReturnType::kLoss;
  EXPECT_NEAR(processed_->Run(in, opts).value().loss.item<double>(), 5.3319, 1e-3);
  EXPECT_NEAR(unprocessed_->Run(in, opts).value().loss.item<double>(), 5.3319, 1e-3);
}

TEST_F(Gpt2RealTest, IoiLogitDifferenceIsPublishedValue) {
  ModelInput in;
  in.tokens = ToTokens(
      "After John and Mary went to the store, John gave a bottle of milk to");
  torch::Tensor logits = processed_->Run(in, {}).value().logits[0][-1];
  int64_t mary = tokenizer_->ToSingleToken(" Mary").value();
  int64_t john = tokenizer_->ToSingleToken(" John").value();
  EXPECT_NEAR((logits[mary] - logits[john]).item<double>(), 4.276, 0.01);
}

TEST_F(Gpt2RealTest, ProcessingKeepsLogProbs) {
  ModelInput in;
  in.tokens = ToTokens("Hello world! The quick brown fox jumps over the lazy dog.");
  auto a = processed_->Run(in, {}).value().logits;
  auto b = unprocessed_->Run(in, {}).value().logits;
  EXPECT_TRUE(::lensgrid::testing::AllClose(torch::log_softmax(a, -1), torch::log_softmax(b, -1),
                                            1e-4, "log probs"));
}

}  // namespace
}  // namespace lensgrid

int main(int argc, char** argv) {
  if (std::getenv("LENSGRID_GPT2_DIR") == nullptr) {
    std::cout << "skipped: set LENSGRID_GPT2_DIR to a Hugging Face gpt2 dir to run\n";
    return 77;
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
