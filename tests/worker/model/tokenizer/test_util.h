// Shared by the tokenizer tests: GPT-2's real BPE files, when scripts/bootstrap
// installed them.
#ifndef LENSGRID_TESTS_WORKER_MODEL_TOKENIZER_TEST_UTIL_H_
#define LENSGRID_TESTS_WORKER_MODEL_TOKENIZER_TEST_UTIL_H_

#include <string>

#include "worker/model/tokenizer/tokenizer.h"

namespace lensgrid {

// GPT-2's tokenizer from DefaultBpeDir(), loaded once; nullptr when the files
// are missing.
const Tokenizer* Gpt2Tokenizer();

// A fresh empty directory under the test's temp dir.
std::string MakeTempDir(const std::string& name);

void WriteFile(const std::string& path, const std::string& contents);

}  // namespace lensgrid

// Skips the current test when GPT-2's files are not installed.
#define LG_REQUIRE_GPT2()                                              \
  if (::lensgrid::Gpt2Tokenizer() == nullptr) {                        \
    GTEST_SKIP() << "GPT-2 BPE files not found in " << DefaultBpeDir() \
                 << " (run scripts/bootstrap)";                        \
  }

#endif  // LENSGRID_TESTS_WORKER_MODEL_TOKENIZER_TEST_UTIL_H_
