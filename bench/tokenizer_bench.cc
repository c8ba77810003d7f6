// Tokenizer encode throughput (MB/s) on English text, lensgrid vs the npm GPT-2
// encoders under Node, on the same documents in the same run, printed side by
// side.
//
//   tokenizer_bench [--mb 10] [--corpus FILE] [--threads 2] [--passes 2]
//
// Without --corpus the text is Debian's /usr/share/common-licenses (real
// English prose), paragraphs shuffled with a fixed seed until --mb megabytes.
// Documents are the paragraphs joined up to ~4 KB; every encoder encodes each
// document on its own (gpt-3-encoder's encode() is quadratic in the length of
// its input). Pass 1 starts with empty caches.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "nlohmann/json.hpp"
#include "worker/model/tokenizer/tokenizer.h"

#ifndef LENSGRID_SOURCE_DIR
#define LENSGRID_SOURCE_DIR "."
#endif

namespace lensgrid {
namespace {

struct Flags {
  double mb = 10;
  std::string corpus;
  int threads = 2;
  int passes = 2;
};

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

std::vector<std::string> Paragraphs(const std::string& text) {
  std::vector<std::string> paragraphs;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find("\n\n", pos);
    if (end == std::string::npos) end = text.size();
    if (end > pos) paragraphs.push_back(text.substr(pos, end - pos) + "\n\n");
    pos = end + 2;
  }
  return paragraphs;
}

std::vector<std::string> BuildDocs(const Flags& flags, std::string* source) {
  std::vector<std::string> paragraphs;
  if (!flags.corpus.empty()) {
    paragraphs = Paragraphs(ReadAll(flags.corpus));
    *source = flags.corpus;
  } else {
    for (const char* name : {"GPL-3", "GPL-2", "LGPL-2.1", "LGPL-3", "Apache-2.0", "Artistic",
                             "MPL-2.0", "GFDL-1.3", "CC0-1.0"}) {
      for (std::string& p :
           Paragraphs(ReadAll(std::string("/usr/share/common-licenses/") + name))) {
        paragraphs.push_back(std::move(p));
      }
    }
    *source = "/usr/share/common-licenses (shuffled paragraphs)";
  }
  if (paragraphs.empty()) return {};
  std::mt19937 rng(42);
  const size_t target = static_cast<size_t>(flags.mb * 1e6);
  std::vector<std::string> docs(1);
  size_t total = 0;
  while (total < target) {
    const std::string& p = paragraphs[rng() % paragraphs.size()];
    if (docs.back().size() + p.size() > 4096 && !docs.back().empty()) docs.emplace_back();
    docs.back() += p;
    total += p.size();
  }
  return docs;
}

// Seconds to encode every doc with `threads` threads; `tokens` gets the token
// count.
double TimeEncode(const Tokenizer& tokenizer, const std::vector<std::string>& docs, int threads,
                  size_t* tokens) {
  std::vector<size_t> counts(threads, 0);
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      std::vector<int64_t> ids;
      for (size_t i = t; i < docs.size(); i += threads) {
        ids.clear();
        tokenizer.EncodeTo(docs[i], &ids);
        counts[t] += ids.size();
      }
    });
  }
  for (std::thread& w : workers) w.join();
  *tokens = 0;
  for (size_t c : counts) *tokens += c;
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void PrintRow(const std::string& name, double mb, const std::vector<double>& seconds, size_t tokens,
              double baseline_mbps) {
  std::printf("%-34s", name.c_str());
  for (double s : seconds) std::printf(" %9.2f", mb / s);
  const double best = mb / *std::min_element(seconds.begin(), seconds.end());
  std::printf("  %10zu", tokens);
  if (baseline_mbps > 0) std::printf("  %6.1fx", best / baseline_mbps);
  std::printf("\n");
}

int Main(int argc, char** argv) {
  Flags flags;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--mb")
      flags.mb = std::atof(value.c_str());
    else if (flag == "--corpus")
      flags.corpus = value;
    else if (flag == "--threads")
      flags.threads = std::max(1, std::atoi(value.c_str()));
    else if (flag == "--passes")
      flags.passes = std::max(1, std::atoi(value.c_str()));
    else {
      std::cerr << "unknown flag " << flag << "\n";
      return 2;
    }
  }
  std::string source;
  const std::vector<std::string> docs = BuildDocs(flags, &source);
  if (docs.empty()) {
    std::cerr << "no text: pass --corpus FILE\n";
    return 1;
  }
  double mb = 0;
  for (const std::string& d : docs) mb += d.size() / 1e6;

  const auto load_start = std::chrono::steady_clock::now();
  auto tokenizer = LoadTokenizerFromDir(DefaultBpeDir());
  if (!tokenizer.ok()) {
    std::cerr << tokenizer.status() << "\n";
    return 1;
  }
  const double load_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();

  // Node first, while our caches are still empty.
  const std::string node_modules =
      std::string(LENSGRID_SOURCE_DIR) + "/third_party/gpt2-bpe/node_modules";
  const std::string docs_path =
      (std::filesystem::temp_directory_path() / "lensgrid_tokenizer_bench.jsonl").string();
  {
    std::ofstream out(docs_path);
    for (const std::string& d : docs) out << nlohmann::json(d).dump() << "\n";
  }
  const std::string command = "node " + std::string(LENSGRID_SOURCE_DIR) +
                              "/bench/tokenizer_bench.js " + node_modules + " " + docs_path + " " +
                              std::to_string(flags.passes);
  std::string node_output;
  if (FILE* pipe = popen(command.c_str(), "r")) {
    char buffer[4096];
    for (size_t n; (n = fread(buffer, 1, sizeof(buffer), pipe)) > 0;) node_output.append(buffer, n);
    pclose(pipe);
  }
  std::filesystem::remove(docs_path);

  std::vector<std::pair<std::string, std::vector<double>>> ours;
  size_t our_tokens = 0;
  for (int threads : {1, flags.threads}) {
    std::vector<double> seconds;
    for (int pass = 0; pass < flags.passes; ++pass) {
      seconds.push_back(TimeEncode(**tokenizer, docs, threads, &our_tokens));
    }
    ours.push_back(
        {"lensgrid C++ (" + std::to_string(threads) + " thread" + (threads > 1 ? "s)" : ")"),
         seconds});
    if (flags.threads == 1) break;
  }

  std::printf("text: %.2f MB English, %zu docs, from %s\n", mb, docs.size(), source.c_str());
  std::printf("lensgrid tokenizer load: %.3f s; threads on this machine: %u\n", load_s,
              std::thread::hardware_concurrency());
  std::printf("%-34s", "encoder (MB/s per pass)");
  for (int p = 1; p <= flags.passes; ++p) std::printf("    pass %d", p);
  std::printf("  %10s  %7s\n", "tokens", "vs gpt-3-encoder");

  double baseline = 0;
  nlohmann::json node = nlohmann::json::parse(node_output, nullptr, false);
  if (node.is_discarded() || !node.is_object()) {
    std::printf("(node encoders unavailable: run scripts/bootstrap; output: %s)\n",
                node_output.c_str());
  } else {
    for (const char* name : {"gpt-3-encoder", "js-tiktoken"}) {
      const std::vector<double> seconds = node[name]["seconds"].get<std::vector<double>>();
      if (baseline == 0) baseline = mb / *std::min_element(seconds.begin(), seconds.end());
      PrintRow(std::string(name) + " (node)", mb, seconds, node[name]["tokens"].get<size_t>(),
               baseline);
    }
  }
  for (const auto& [name, seconds] : ours) PrintRow(name, mb, seconds, our_tokens, baseline);
  return 0;
}

}  // namespace
}  // namespace lensgrid

int main(int argc, char** argv) { return lensgrid::Main(argc, argv); }
