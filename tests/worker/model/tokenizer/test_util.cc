#include "tests/worker/model/tokenizer/test_util.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>

namespace lensgrid {

const Tokenizer* Gpt2Tokenizer() {
  static const Tokenizer* tokenizer = [] {
    auto loaded = LoadTokenizerFromDir(DefaultBpeDir());
    return loaded.ok() ? loaded->release() : nullptr;
  }();
  return tokenizer;
}

std::string MakeTempDir(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  std::filesystem::path dir = std::filesystem::path(base ? base : "/tmp") /
                              ("lensgrid_tokenizer_test_" + std::to_string(getpid())) / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

void WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream(path, std::ios::binary) << contents;
}

}  // namespace lensgrid
