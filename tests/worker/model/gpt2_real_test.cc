// TransformerLens's published numbers on the real GPT-2 small weights. Runs
// when LENSGRID_GPT2_DIR points to a Hugging Face gpt2 dir (config.json,
// model.safetensors; tokenizer files or the bootstrap default), or when the
// Hugging Face cache holds gpt2 (`lensgrid pull gpt2`, or transformers'
// download; HF_HUB_CACHE / HF_HOME honoured); otherwise exits 77, which ctest
// reports as skipped. It never downloads.
#include <cstdlib>
#include <iostream>

#include "client/hub/hub_download.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/worker/model/test_util.h"
#include "worker/model/hooked_transformer.h"
#include "worker/model/tokenizer/tokenizer.h"

namespace lensgrid {
namespace {

using ::testing::ElementsAre;

// LENSGRID_GPT2_DIR, else gpt2 in the Hugging Face cache, else "".
std::string Gpt2Dir() {
  if (const char* dir = std::getenv("LENSGRID_GPT2_DIR")) return dir;
  hub::ResolveOptions never_download;
  never_download.offline = true;
  absl::StatusOr<std::string> cached = hub::ResolveModelDir("gpt2", never_download);
  return cached.ok() ? *cached : "";
}

class Gpt2RealTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string dir = Gpt2Dir();
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
  ForwardInput in;
  in.tokens = ToTokens("Hello world!");
  ForwardOptions opts;
  opts.return_type = ForwardReturn::kLoss;
  EXPECT_NEAR(processed_->Run(in, opts).value().loss.item<double>(), 5.3319, 1e-3);
  EXPECT_NEAR(unprocessed_->Run(in, opts).value().loss.item<double>(), 5.3319, 1e-3);
}

TEST_F(Gpt2RealTest, IoiLogitDifferenceIsPublishedValue) {
  ForwardInput in;
  in.tokens = ToTokens("After John and Mary went to the store, John gave a bottle of milk to");
  torch::Tensor logits = processed_->Run(in, {}).value().logits[0][-1];
  int64_t mary = tokenizer_->ToSingleToken(" Mary").value();
  int64_t john = tokenizer_->ToSingleToken(" John").value();
  EXPECT_NEAR((logits[mary] - logits[john]).item<double>(), 4.276, 0.01);
}

TEST_F(Gpt2RealTest, ProcessingKeepsLogProbs) {
  ForwardInput in;
  in.tokens = ToTokens("Hello world! The quick brown fox jumps over the lazy dog.");
  auto a = processed_->Run(in, {}).value().logits;
  auto b = unprocessed_->Run(in, {}).value().logits;
  EXPECT_TRUE(::lensgrid::testing::AllClose(torch::log_softmax(a, -1), torch::log_softmax(b, -1),
                                            1e-4, "log probs"));
}

}  // namespace
}  // namespace lensgrid

int main(int argc, char** argv) {
  if (lensgrid::Gpt2Dir().empty()) {
    std::cout << "skipped: no gpt2 in the Hugging Face cache (`lensgrid pull gpt2`) and "
                 "LENSGRID_GPT2_DIR unset\n";
    return 77;
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
