// Reading tokenizer files: both spellings, truncated merges, model-dir
// precedence, and errors that name the file and line.
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/worker/model/tokenizer/test_util.h"
#include "worker/model/tokenizer/byte_level.h"
#include "worker/model/tokenizer/tokenizer.h"

namespace lensgrid {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A toy vocab: the 256 bytes (ids 0..255), then `extra` tokens.
std::string ToyVocab(const std::vector<std::string>& extra) {
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[ByteLevelEncode(std::string(1, static_cast<char>(b)))] = b;
  for (size_t i = 0; i < extra.size(); ++i) vocab[extra[i]] = 256 + i;
  return vocab.dump();
}

const std::string kToyMerges = "#version: 0.2\n\xC4\xA0 t\nh e\n\xC4\xA0t he\n";
const std::vector<std::string> kToyTokens = {"\xC4\xA0t", "he", "\xC4\xA0the", "<|endoftext|>"};

absl::Status ToyError(const std::string& vocab, const std::string& merges) {
  return Tokenizer::FromContents(vocab, merges).status();
}

TEST(TokenizerFilesTest, ToyFiles) {
  auto tok = Tokenizer::FromContents(ToyVocab(kToyTokens), kToyMerges);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_THAT((*tok)->Encode(" the<|endoftext|> then"), ElementsAre(258, 259, 258, 'n'));
  EXPECT_EQ((*tok)->vocab_size(), 260);
  EXPECT_EQ((*tok)->eot_token(), 259);
  auto without_eot =
      Tokenizer::FromContents(ToyVocab({"\xC4\xA0t", "he", "\xC4\xA0the"}), kToyMerges);
  ASSERT_TRUE(without_eot.ok());
  EXPECT_EQ((*without_eot)->eot_token(), std::nullopt);
  EXPECT_EQ((*without_eot)->Encode("<|endoftext|>").size(),
            13u);  // plain bytes
}

TEST(TokenizerFilesTest, MergesErrorsNameFileAndLine) {
  const std::string vocab = ToyVocab(kToyTokens);
  EXPECT_THAT(ToyError(vocab, "#version: 0.2\n\xC4\xA0 t\nh e x\n").message(),
              AllOf(HasSubstr("merges.txt:3:"), HasSubstr("two tokens")));
  EXPECT_THAT(ToyError(vocab, "\xC4\xA0 t\nh  e\n").message(), HasSubstr("merges.txt:2:"));
  EXPECT_THAT(ToyError(vocab, "\xC4\xA0 t\nx qq\n").message(),
              HasSubstr("merges.txt:2: token \"qq\" is not in vocab.json"));
  EXPECT_THAT(ToyError(vocab, "a b\n").message(),
              HasSubstr("merges.txt:1: token \"ab\" is not in vocab.json"));
  EXPECT_EQ(ToyError(vocab, "a b\n").code(), absl::StatusCode::kInvalidArgument);
}

TEST(TokenizerFilesTest, VocabErrorsNameFileAndEntry) {
  EXPECT_THAT(ToyError("{\"a\": 1,,}", kToyMerges).message(),
              AllOf(HasSubstr("vocab.json: invalid JSON"), HasSubstr("line 1")));
  EXPECT_THAT(ToyError("[1, 2]", kToyMerges).message(), HasSubstr("vocab.json: expected"));
  EXPECT_THAT(ToyError("{\"a\": \"1\"}", kToyMerges).message(),
              HasSubstr("vocab.json: token \"a\" has id \"1\""));
  EXPECT_THAT(ToyError("{\"a\": 1, \"b\": 1}", kToyMerges).message(),
              HasSubstr("vocab.json: id 1 is used by both"));
  nlohmann::json no_space = nlohmann::json::parse(ToyVocab(kToyTokens));
  no_space.erase("\xC4\xA0");
  EXPECT_THAT(ToyError(no_space.dump(), "").message(),
              HasSubstr("vocab.json: no token for byte 0x20"));
}

TEST(TokenizerFilesTest, MissingFilesAreNotFound) {
  const std::string dir = MakeTempDir("missing");
  auto status = Tokenizer::FromHuggingFaceFiles(dir + "/vocab.json", dir + "/merges.txt").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(status.message(), HasSubstr(dir + "/vocab.json"));
  EXPECT_EQ(Tokenizer::FromDirectory(dir).status().code(), absl::StatusCode::kNotFound);
  WriteFile(dir + "/vocab.json", ToyVocab(kToyTokens));
  status = LoadTokenizerFromDir(dir).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(status.message(), HasSubstr(dir + "/merges.txt"));
  WriteFile(dir + "/merges.txt", kToyMerges);
  EXPECT_TRUE(LoadTokenizerFromDir(dir).ok());
}

TEST(TokenizerFilesTest, OpenAISpelling) {
  const std::string dir = MakeTempDir("openai");
  WriteFile(dir + "/encoder.json", ToyVocab(kToyTokens));
  WriteFile(dir + "/vocab.bpe", kToyMerges);
  auto tok = Tokenizer::FromDirectory(dir);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_THAT((*tok)->Encode(" the"), ElementsAre(258));
  EXPECT_TRUE(Tokenizer::FromOpenAIFiles(dir + "/encoder.json", dir + "/vocab.bpe").ok());
}

// Sets an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    value ? setenv(name, value, 1) : unsetenv(name);
  }
  ~ScopedEnv() { old_ ? setenv(name_, old_->c_str(), 1) : unsetenv(name_); }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

TEST(TokenizerFilesTest, ModelDirWithoutFilesAndNoDefaultIsNotFound) {
  const std::string model_dir = MakeTempDir("bare_model");
  ScopedEnv env("LENSGRID_BPE_DIR", "/nonexistent/bpe");
  absl::Status status = LoadTokenizerForModel(model_dir).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(status.message(), AllOf(HasSubstr(model_dir), HasSubstr("/nonexistent/bpe"),
                                      HasSubstr("LENSGRID_BPE_DIR")));
  EXPECT_EQ(LoadTokenizerForModel(model_dir + "/nope").status().code(),
            absl::StatusCode::kNotFound);
}

// GPT-2's first 1000 merges with the tokens they make: a truncated tokenizer
// for a small model.
TEST(TokenizerFilesTest, TruncatedGpt2FilesInModelDirWin) {
  LG_REQUIRE_GPT2();
  std::ifstream in(DefaultBpeDir() + "/vocab.bpe");
  std::stringstream full;
  full << in.rdbuf();
  std::vector<std::string> lines = absl::StrSplit(full.str(), '\n');
  std::string merges = lines[0] + "\n";
  std::vector<std::string> made;
  for (int i = 1; i <= 1000; ++i) {
    merges += lines[i] + "\n";
    std::vector<std::string> parts = absl::StrSplit(lines[i], ' ');
    made.push_back(parts[0] + parts[1]);
  }
  made.push_back("<|endoftext|>");
  const std::string model_dir = MakeTempDir("truncated_model");
  WriteFile(model_dir + "/vocab.json", ToyVocab(made));
  WriteFile(model_dir + "/merges.txt", merges);
  WriteFile(model_dir + "/config.json", "{}");

  ScopedEnv env("LENSGRID_BPE_DIR", nullptr);
  auto tok = LoadTokenizerForModel(model_dir);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->vocab_size(), 256 + 1001);
  EXPECT_EQ((*tok)->eot_token(), 256 + 1000);
  EXPECT_TRUE((*tok)->merger().merges_ordered());
  const std::string text = "The cat sat on the mat. Interpretability<|endoftext|>";
  const std::vector<int64_t> ids = (*tok)->Encode(text);
  EXPECT_GT(ids.size(), Gpt2Tokenizer()->Encode(text).size());
  EXPECT_EQ(*(*tok)->Decode(ids), text);
  EXPECT_EQ(ids.back(), 1256);

  // Without its own files the model dir gets GPT-2's defaults.
  auto fallback = LoadTokenizerForModel(MakeTempDir("no_tokenizer_model"));
  ASSERT_TRUE(fallback.ok()) << fallback.status();
  EXPECT_EQ((*fallback)->vocab_size(), 50257);
}

}  // namespace
}  // namespace lensgrid
