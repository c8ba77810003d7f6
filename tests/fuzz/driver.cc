// A small coverage-guided mutation fuzzer for g++ builds: the `main` of every
// target in tests/fuzz/, each of which defines only libFuzzer's entry point
//
//   extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
//
// so the same file also links with clang's -fsanitize=fuzzer. Coverage comes
// from GCC's -fsanitize-coverage=trace-pc on the code under test (edges hashed
// into a 64 KiB map, AFL-style hit-count buckets); an input that reaches a new
// bucket joins the in-memory corpus. Mutations: bit flips, random bytes,
// inserts, deletes, interesting integers, dictionary tokens, copies within
// the input, splices with another corpus entry, truncation, and repeats of a
// chunk (which is how "[[[[..." and other deep inputs come about).
//
// Flags follow libFuzzer's spelling:
//   fuzz_x [-runs=N] [-max_total_time=S] [-seed=N] [-max_len=N] [-timeout=S]
//          [-dict=FILE] [-artifact_prefix=P] [-save_dir=DIR] DIR_OR_FILE...
// Directories are seed corpora. Given only files (no directory), each file is
// run once: that is how a saved crash is replayed. A crash (sanitizer report,
// signal, uncaught exception) or an input running past -timeout writes the
// input to <artifact_prefix>crash-<n> (or timeout-<n>) and exits non-zero.
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <sys/personality.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
extern "C" void __sanitizer_set_death_callback(void (*callback)(void));

// Sanitizer defaults (the environment's ASAN_OPTIONS still override): treat
// abort() as a crash so uncaught exceptions are reported with a stack, and
// treat one allocation over 1 GiB or a process over 3 GiB as a finding: no
// input of these parsers should need that much.
extern "C" const char* __asan_default_options() {
  return "handle_abort=1:allocator_may_return_null=0:max_allocation_size_mb="
         "1024:hard_rss_limit_mb=3072:detect_leaks=1";
}
extern "C" const char* __ubsan_default_options() { return "print_stacktrace=1:halt_on_error=1"; }

namespace {

// ---- Coverage: GCC calls this at every basic block of instrumented code.
constexpr size_t kMapSize = 1 << 16;
uint8_t g_hits[kMapSize];
uintptr_t g_prev_location = 0;

}  // namespace

// The start of the executable's image (GNU ld). The instrumented code is all
// linked statically into the executable, so a PC less this base is the same
// in every process: without it, address-space randomization moved every PC,
// the map's collisions and so the coverage, and a fixed -seed ran different
// inputs on every run (a bug one run could find, the next one missed).
extern "C" char __executable_start;

extern "C" void __sanitizer_cov_trace_pc() {
  const uintptr_t pc = reinterpret_cast<uintptr_t>(__builtin_return_address(0)) -
                       reinterpret_cast<uintptr_t>(&__executable_start);
  uintptr_t cur = (pc ^ (pc >> 15)) * 0x9E3779B1u;
  cur = (cur >> 16) & (kMapSize - 1);
  uint8_t& hit = g_hits[cur ^ g_prev_location];
  if (hit != 255) ++hit;
  g_prev_location = cur >> 1;
}

namespace {

using Bytes = std::vector<uint8_t>;

uint8_t Bucket(uint8_t hits) {
  if (hits <= 3) return hits;  // 1, 2, 3
  if (hits <= 7) return 4;
  if (hits <= 15) return 5;
  if (hits <= 31) return 6;
  if (hits <= 127) return 7;
  return 8;
}

// The buckets seen so far, one bit each per map slot.
uint16_t g_seen[kMapSize];
size_t g_features = 0;

// True when the last run reached a (slot, bucket) never reached before.
bool CollectNewCoverage() {
  bool fresh = false;
  for (size_t i = 0; i < kMapSize; ++i) {
    if (g_hits[i] == 0) continue;
    const uint16_t bit = uint16_t{1} << Bucket(g_hits[i]);
    if (!(g_seen[i] & bit)) {
      g_seen[i] |= bit;
      ++g_features;
      fresh = true;
    }
  }
  return fresh;
}

// ---- Crash artifacts: the input being run when the process dies.
const Bytes* g_current = nullptr;
std::string g_artifact_prefix = "./";
std::atomic<int64_t> g_run_started_ms{0};
uint64_t g_seed = 0;
uint64_t g_iteration = 0;

void WriteArtifact(const char* kind) {
  if (g_current == nullptr) return;
  char path[4096];
  snprintf(path, sizeof(path), "%s%s-seed%llu-run%llu", g_artifact_prefix.c_str(), kind,
           static_cast<unsigned long long>(g_seed), static_cast<unsigned long long>(g_iteration));
  FILE* f = fopen(path, "wb");
  if (f == nullptr) return;
  fwrite(g_current->data(), 1, g_current->size(), f);
  fclose(f);
  fprintf(stderr, "fuzz: the input (%zu bytes) is in %s\n", g_current->size(), path);
}

void OnDeath() { WriteArtifact("crash"); }

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void RunOne(const Bytes& input) {
  g_current = &input;
  // An exact-size heap copy, so reading one byte past the end is a report.
  uint8_t* copy = new uint8_t[input.size()];
  if (!input.empty()) memcpy(copy, input.data(), input.size());
  memset(g_hits, 0, sizeof(g_hits));
  g_prev_location = 0;
  g_run_started_ms.store(NowMs());
  LLVMFuzzerTestOneInput(copy, input.size());
  g_run_started_ms.store(0);
  delete[] copy;
}

// ---- Mutations.
const char* const kTokens[] = {
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"",
    "\\",
    "\\u0000",
    "\\ud800",
    "0",
    "-1",
    "1e999",
    "-0",
    "1.5",
    "true",
    "null",
    "\"\"",
    "{}",
    "[]",
    "\n",
    "\r\n",
    " ",
    "#version: 0.2",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "-9223372036854775808",
    "4294967295",
    "2147483648",
    "16777215",
    "16777216",
};

const uint64_t kInteresting[] = {0,
                                 1,
                                 0x7f,
                                 0x80,
                                 0xff,
                                 0x100,
                                 0x7fff,
                                 0x8000,
                                 0xffff,
                                 0x7fffffff,
                                 0x80000000,
                                 0xffffffff,
                                 0x100000000ull,
                                 0x7fffffffffffffffull,
                                 0x8000000000000000ull,
                                 ~0ull};

class Mutator {
 public:
  Mutator(uint64_t seed, size_t max_len, std::vector<std::string> dict)
      : rng_(seed), max_len_(max_len), dict_(std::move(dict)) {}

  size_t Below(size_t n) { return n == 0 ? 0 : rng_() % n; }

  void Mutate(Bytes* data, const std::vector<Bytes>& corpus) {
    const int rounds = 1 + static_cast<int>(Below(5));
    for (int r = 0; r < rounds; ++r) MutateOnce(data, corpus);
    if (data->size() > max_len_) data->resize(max_len_);
  }

 private:
  void Insert(Bytes* d, size_t at, const uint8_t* p, size_t n) {
    d->insert(d->begin() + at, p, p + n);
  }

  void MutateOnce(Bytes* d, const std::vector<Bytes>& corpus) {
    const size_t n = d->size();
    switch (Below(12)) {
      case 0:  // flip a bit
        if (n) (*d)[Below(n)] ^= uint8_t(1u << Below(8));
        break;
      case 1:  // a random byte
        if (n) (*d)[Below(n)] = uint8_t(rng_());
        break;
      case 2: {  // insert random bytes
        const size_t k = 1 + Below(4);
        for (size_t i = 0; i < k; ++i)
          d->insert(d->begin() + Below(d->size() + 1), uint8_t(rng_()));
        break;
      }
      case 3: {  // delete a range
        if (!n) break;
        const size_t at = Below(n), len = 1 + Below(std::min<size_t>(n - at, 16));
        d->erase(d->begin() + at, d->begin() + at + len);
        break;
      }
      case 4: {  // an interesting integer, little- or big-endian, 1/2/4/8 bytes
        uint64_t v = kInteresting[Below(std::size(kInteresting))];
        const size_t width = size_t{1} << Below(4);
        uint8_t buf[8];
        for (size_t i = 0; i < width; ++i) buf[i] = uint8_t(v >> (8 * i));
        if (Below(2)) std::reverse(buf, buf + width);
        if (n >= width && Below(2)) {
          memcpy(d->data() + Below(n - width + 1), buf, width);
        } else {
          Insert(d, Below(n + 1), buf, width);
        }
        break;
      }
      case 5:
      case 6: {  // a token: the target's dictionary or generic JSON/number ones
        std::string tok;
        if (!dict_.empty() && Below(3) != 0) {
          tok = dict_[Below(dict_.size())];
        } else {
          tok = kTokens[Below(std::size(kTokens))];
        }
        const uint8_t* p = reinterpret_cast<const uint8_t*>(tok.data());
        if (n >= tok.size() && Below(2)) {
          memcpy(d->data() + Below(n - tok.size() + 1), p, tok.size());
        } else {
          Insert(d, Below(n + 1), p, tok.size());
        }
        break;
      }
      case 7: {  // copy a chunk of the input elsewhere in it
        if (!n) break;
        const size_t from = Below(n), len = 1 + Below(std::min<size_t>(n - from, 32));
        Bytes chunk(d->begin() + from, d->begin() + from + len);
        Insert(d, Below(n + 1), chunk.data(), len);
        break;
      }
      case 8: {  // splice: our head, another entry's tail
        const Bytes& other = corpus[Below(corpus.size())];
        if (other.empty()) break;
        const size_t cut = Below(n + 1), from = Below(other.size());
        d->resize(cut);
        d->insert(d->end(), other.begin() + from, other.end());
        break;
      }
      case 9:  // truncate
        if (n) d->resize(Below(n));
        break;
      case 10: {  // repeat a short chunk many times: deep nesting, long runs
        if (!n) break;
        const size_t from = Below(n), len = 1 + Below(std::min<size_t>(n - from, 4));
        const size_t times = size_t{1} << (1 + Below(16));  // 2 .. 65536
        Bytes chunk(d->begin() + from, d->begin() + from + len);
        Bytes run;
        run.reserve(std::min(len * times, max_len_));
        for (size_t i = 0; i < times && run.size() + len <= max_len_; ++i)
          run.insert(run.end(), chunk.begin(), chunk.end());
        Insert(d, from, run.data(), run.size());
        break;
      }
      case 11: {  // change an ASCII digit (numbers in JSON and text formats)
        for (size_t tries = 0; tries < 8 && n; ++tries) {
          uint8_t& c = (*d)[Below(n)];
          if (c >= '0' && c <= '9') {
            c = uint8_t('0' + Below(10));
            break;
          }
        }
        break;
      }
    }
  }

  std::mt19937_64 rng_;
  size_t max_len_;
  std::vector<std::string> dict_;
};

// ---- Files.
bool ReadFile(const std::string& path, Bytes* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  out->assign(std::istreambuf_iterator<char>(in), {});
  return true;
}

bool IsDir(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> files;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] == '.') continue;
      std::string path = dir + "/" + e->d_name;
      if (!IsDir(path)) files.push_back(path);
    }
    closedir(d);
  }
  std::sort(files.begin(), files.end());  // the same order on every machine
  return files;
}

// libFuzzer's dictionary format: one "token" per line, \\ \" and \xNN escapes;
// anything before the first quote is a name and ignored, '#' starts a comment.
std::vector<std::string> ReadDict(const std::string& path) {
  std::vector<std::string> tokens;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    size_t q = line.find('"');
    if (line.empty() || line[0] == '#' || q == std::string::npos) continue;
    size_t end = line.rfind('"');
    if (end <= q) continue;
    std::string tok;
    for (size_t i = q + 1; i < end; ++i) {
      if (line[i] == '\\' && i + 1 < end) {
        if (line[i + 1] == 'x' && i + 3 < end) {
          tok += char(std::stoi(line.substr(i + 2, 2), nullptr, 16));
          i += 3;
        } else {
          tok += line[++i];
        }
      } else {
        tok += line[i];
      }
    }
    tokens.push_back(tok);
  }
  return tokens;
}

void SaveToDir(const std::string& dir, const Bytes& data) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a names the file
  for (uint8_t b : data) h = (h ^ b) * 1099511628211ull;
  char name[32];
  snprintf(name, sizeof(name), "/%016llx", static_cast<unsigned long long>(h));
  std::ofstream(dir + name, std::ios::binary)
      .write(reinterpret_cast<const char*>(data.data()), data.size());
}

// Aborts the main thread (so the sanitizer prints its stack and the death
// callback saves the input) when one input runs longer than `timeout_s`.
void Watchdog(pthread_t main_thread, int64_t timeout_s) {
  for (;;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    const int64_t started = g_run_started_ms.load();
    if (started != 0 && NowMs() - started > timeout_s * 1000) {
      fprintf(stderr, "fuzz: one input ran longer than %llds (a hang)\n",
              static_cast<long long>(timeout_s));
      WriteArtifact("timeout");
      g_current = nullptr;  // the crash that follows saves nothing more
      pthread_kill(main_thread, SIGABRT);
      return;
    }
  }
}

}  // namespace

namespace {

// Runs this program again with address-space randomization off, once: the
// code under test still sees addresses through absl's hash seed (the address
// of a global) and pointer-keyed containers, and with them its probe
// sequences and so its coverage; a fixed -seed then ran different inputs in
// every process (fuzz_tokenizer_files did). Where the kernel refuses, the run
// goes on randomized.
void RunWithoutAddressRandomization(char** argv) {
  if (getenv("LENSGRID_FUZZ_NO_ASLR") != nullptr) return;  // this is the second run
  const int persona = personality(0xffffffff);
  if (persona == -1 || (persona & ADDR_NO_RANDOMIZE) != 0) return;
  if (personality(static_cast<unsigned long>(persona) | ADDR_NO_RANDOMIZE) == -1) return;
  setenv("LENSGRID_FUZZ_NO_ASLR", "1", 1);
  execv("/proc/self/exe", argv);
  fprintf(stderr, "fuzz: cannot re-exec without address randomization (%s); going on\n",
          strerror(errno));
}

}  // namespace

int main(int argc, char** argv) {
  RunWithoutAddressRandomization(argv);
  int64_t runs = -1, max_total_time = 0, max_len = 4096, timeout_s = 20;
  g_seed = std::random_device{}();
  std::string save_dir;
  std::vector<std::string> dict, paths;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&](const char* flag) -> const char* {
      const size_t len = strlen(flag);
      return arg.compare(0, len, flag) == 0 ? arg.c_str() + len : nullptr;
    };
    if (const char* v = value("-runs="))
      runs = atoll(v);
    else if (const char* v = value("-max_total_time="))
      max_total_time = atoll(v);
    else if (const char* v = value("-seed="))
      g_seed = strtoull(v, nullptr, 10);
    else if (const char* v = value("-max_len="))
      max_len = atoll(v);
    else if (const char* v = value("-timeout="))
      timeout_s = atoll(v);
    else if (const char* v = value("-dict="))
      dict = ReadDict(v);
    else if (const char* v = value("-artifact_prefix="))
      g_artifact_prefix = v;
    else if (const char* v = value("-save_dir="))
      save_dir = v;
    else if (arg[0] == '-')
      fprintf(stderr, "fuzz: ignoring unknown flag %s\n", argv[i]);
    else
      paths.push_back(arg);
  }
  __sanitizer_set_death_callback(OnDeath);
  std::thread(Watchdog, pthread_self(), timeout_s).detach();

  std::vector<Bytes> corpus;
  bool any_dir = false;
  for (const std::string& path : paths) {
    std::vector<std::string> files{path};
    if (IsDir(path)) {
      any_dir = true;
      files = ListDir(path);
    }
    for (const std::string& file : files) {
      Bytes data;
      if (!ReadFile(file, &data)) {
        fprintf(stderr, "fuzz: cannot read %s\n", file.c_str());
        return 2;
      }
      corpus.push_back(std::move(data));
    }
  }
  // Every seed runs once, as given: replaying a crash file is just this.
  for (const Bytes& seed : corpus) {
    RunOne(seed);
    CollectNewCoverage();
  }
  if (!any_dir && !paths.empty()) {
    fprintf(stderr, "fuzz: ran %zu input(s), no crash\n", corpus.size());
    return 0;
  }
  if (corpus.empty()) corpus.emplace_back();
  fprintf(stderr, "fuzz: seed %llu, %zu seeds, %zu features\n",
          static_cast<unsigned long long>(g_seed), corpus.size(), g_features);

  Mutator mutator(g_seed, static_cast<size_t>(max_len), std::move(dict));
  std::mt19937_64 pick(g_seed ^ 0x5eed);
  const int64_t start = NowMs();
  int64_t next_report = start + 5000;
  Bytes input;
  for (g_iteration = 1;; ++g_iteration) {
    if (runs >= 0 && static_cast<int64_t>(g_iteration) > runs) break;
    const int64_t now = NowMs();
    if (max_total_time > 0 && now - start >= max_total_time * 1000) break;
    if (now >= next_report) {
      fprintf(stderr, "fuzz: #%llu features %zu corpus %zu exec/s %lld\n",
              static_cast<unsigned long long>(g_iteration), g_features, corpus.size(),
              static_cast<long long>(g_iteration * 1000 / (now - start + 1)));
      next_report = now + 5000;
    }
    input = corpus[pick() % corpus.size()];
    mutator.Mutate(&input, corpus);
    RunOne(input);
    if (CollectNewCoverage()) {
      corpus.push_back(input);
      if (!save_dir.empty()) SaveToDir(save_dir, input);
    }
  }
  g_current = nullptr;
  const int64_t elapsed = NowMs() - start;
  fprintf(stderr,
          "fuzz: done, %llu runs in %.1fs (%lld exec/s), corpus %zu, "
          "features %zu, no crash\n",
          static_cast<unsigned long long>(g_iteration - 1), elapsed / 1000.0,
          static_cast<long long>((g_iteration - 1) * 1000 / (elapsed + 1)), corpus.size(),
          g_features);
  return 0;
}
