#include "client/local/init_command.h"

#include <CLI/CLI.hpp>
#include <optional>
#include <ostream>

#include "worker/model/config.h"
#include "worker/model/weights.h"

namespace lensgrid {

int RunInitCommand(int argc, char** argv, std::ostream& out, std::ostream& err) {
  CLI::App app{"Write a random GPT-2-family checkpoint (Hugging Face layout)", "lensgrid init"};
  std::string out_dir, preset = "gpt2";
  std::optional<int64_t> layers, heads, d_model, vocab, n_ctx;
  uint64_t seed = 0;
  bool f16 = false;
  app.add_option("--out", out_dir, "directory to write")->required();
  app.add_option("--preset", preset, "gpt2 | gpt2-medium | gpt2-large | gpt2-xl");
  app.add_option("--layers", layers, "n_layer")->check(CLI::PositiveNumber);
  app.add_option("--heads", heads, "n_head")->check(CLI::PositiveNumber);
  app.add_option("--d-model", d_model, "n_embd")->check(CLI::PositiveNumber);
  app.add_option("--vocab", vocab, "vocab_size")->check(CLI::PositiveNumber);
  app.add_option("--n-ctx", n_ctx, "n_positions")->check(CLI::PositiveNumber);
  app.add_option("--seed", seed, "random seed");
  app.add_flag("--f16", f16, "store F16 instead of F32");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e, out, err);
  }
  auto cfg = ModelConfigPreset(preset);
  if (!cfg.ok()) {
    err << "lensgrid init: " << cfg.status().message() << "\n";
    return 2;
  }
  if (layers) cfg->n_layers = *layers;
  if (heads) cfg->n_heads = *heads;
  if (d_model) {
    cfg->d_model = *d_model;
    cfg->d_mlp = 4 * *d_model;
  }
  if (vocab) cfg->d_vocab = *vocab;
  if (n_ctx) cfg->n_ctx = *n_ctx;
  if (cfg->d_model % cfg->n_heads != 0) {
    err << "lensgrid init: --d-model " << cfg->d_model << " is not divisible by --heads "
        << cfg->n_heads << "\n";
    return 2;
  }
  cfg->d_head = cfg->d_model / cfg->n_heads;
  cfg->bos_token_id = cfg->eos_token_id = cfg->d_vocab - 1;
  absl::Status status = SaveHfCheckpoint(RandomWeights(*cfg, seed), *cfg, out_dir, f16);
  if (!status.ok()) {
    err << "lensgrid init: " << status.message() << "\n";
    return 1;
  }
  out << "wrote " << out_dir << "/config.json and model.safetensors (" << cfg->n_layers
      << " layers, " << cfg->n_heads << " heads, d_model " << cfg->d_model << ", vocab "
      << cfg->d_vocab << ")\n";
  return 0;
}

}  // namespace lensgrid
