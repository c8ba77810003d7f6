#include "client/local/train_command.h"

#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <ostream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/command_status.h"
#include "common/status_macros.h"
#include "worker/model/cpu_threads.h"
#include "worker/model/hooked_transformer.h"
#include "worker/model/tokenizer/tokenizer.h"
#include "worker/model/training/evaluate.h"
#include "worker/model/training/train_data.h"
#include "worker/model/training/trainer.h"
#include "worker/model/training/truncated_bpe.h"
#include "worker/model/weights.h"

namespace lensgrid {
namespace {

struct TrainFlags {
  std::string out_dir, bpe_dir;
  int64_t layers = 2, heads = 4, d_model = 128, d_mlp = 0, merges = 6000;
  bool attn_only = false;
  int threads = 0;
  int64_t ioi_eval_prompts = 200;
  TrainDataOptions data;
  TrainOptions train;
};

std::string Fixed(double v, int digits) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(digits) << v;
  return s.str();
}

// Shell-quotes an argument when it needs it.
std::string Quote(const std::string& arg) {
  if (arg.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                            "-_./=,:+") == std::string::npos &&
      !arg.empty()) {
    return arg;
  }
  std::string q = "'";
  for (char c : arg) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// A card names the model (its directory's name), never a path of the machine
// that trained it.
std::string ModelName(const std::string& out_dir) {
  std::filesystem::path p = std::filesystem::path(out_dir).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();  // "models/x/"
  return p.filename().string();
}

std::string ModelCard(const TrainFlags& f, const HookedTransformerConfig& cfg,
                      const std::string& command, const TrainData& data, const TrainResult& r,
                      const ModelFacts& facts, const IoiScore& ioi_held_out,
                      const IoiScore& ioi_train, const absl::StatusOr<IoiScore>& ioi_dataset) {
  const TrainDataOptions& d = data.options();
  const TrainOptions& t = f.train;
  const double total = d.repeats_fraction + d.chain_fraction + d.triggers_fraction +
                       (data.has_ioi() ? d.ioi_fraction : 0.0);
  auto percent = [total](double fraction) { return Fixed(100 * fraction / total, 0) + "%"; };
  std::ostringstream m;
  m << "# " << ModelName(f.out_dir) << ": a small GPT-2-family model with real circuits\n\n"
    << "Trained by `lensgrid train` (worker/model/training/) on data the project generates, "
       "through the same HookedTransformer forward that runs GPT-2. GPT-2 architecture: "
    << cfg.n_layers << " layers, " << cfg.n_heads << " heads, d_model " << cfg.d_model << ", d_mlp "
    << (cfg.attn_only ? 0 : cfg.d_mlp) << (cfg.attn_only ? " (attention only)" : "") << ", n_ctx "
    << cfg.n_ctx << ", d_vocab " << cfg.d_vocab << " (GPT-2's byte-level BPE cut to "
    << "its first " << f.merges << " merges; <|endoftext|> = " << cfg.d_vocab - 1
    << " is BOS), LayerNorms, gelu_new, tied unembedding. Weights: F16, Hugging Face layout, "
       "unprocessed (load with default processing).\n\n"
    << "## Reproduce\n\n```\n"
    << command << "\n```\n\n"
    << "Deterministic for a seed on one machine; " << Fixed(r.seconds / 60, 1) << " minutes here ("
    << BlasThreads() << " BLAS threads).\n\n"
    << "## Data (seed " << d.seed << ", rows of " << d.seq_len << " tokens, each starting with "
    << "<|endoftext|>)\n\n"
    << "- " << percent(d.repeats_fraction)
    << " *repeats*: filler from a noisy second-order "
       "chain over "
    << d.chain_alphabet << " tokens (x[t+1] = PERM[x[t-1]] with probability "
    << Fixed(1 - d.chain_noise, 2)
    << "), which rewards a previous-token head first; into it, "
       "spans of uniform random tokens ("
    << d.min_span << "-" << d.max_span << " tokens) each copied 1-" << d.max_copies
    << " more times, each copy after a gap of 0-" << d.max_gap
    << " filler tokens, at varying offsets (no positional shortcut)"
    << (d.half_repeat_batches > 0
            ? absl::StrCat("; curriculum: for the first ", d.half_repeat_batches,
                           " steps these rows are BOS + x + x with |x| = ", (d.seq_len - 1) / 2,
                           " instead (one fixed offset: a head learns to copy through a "
                           "positional shortcut first)")
            : std::string())
    << ".\n"
    << "- " << percent(d.chain_fraction) << " *chain*: the filler alone.\n";
  if (d.triggers_fraction > 0) {
    m << "- " << percent(d.triggers_fraction) << " *triggers*: the filler, with 1-"
      << d.max_triggers
      << " random trigger tokens per row, each followed by its own random "
         "token every time it occurs (a position starts a pair with probability "
      << d.trigger_rate << ").\n";
  }
  if (data.has_ioi()) {
    m << "- " << percent(d.ioi_fraction)
      << " *ioi*: packed templated sentences (\"When Mary "
         "and John went to the store, John gave a drink to Mary.\"), BABA and ABBA; "
      << data.train_templates().size() << " templates and " << data.train_names().size()
      << " names for training, " << data.held_out_templates().size() << " templates and "
      << data.held_out_names().size() << " names (" << absl::StrJoin(data.held_out_names(), ",")
      << ") held out.\n";
  }
  m << "\n## Training\n\n"
    << t.steps << " steps x " << t.batch << " rows (" << t.steps * t.batch * d.seq_len / 1000000.0
    << " M tokens); AdamW (betas " << t.beta1 << ", " << t.beta2 << "; weight decay "
    << t.weight_decay << " on matrices), lr " << t.lr << " with " << t.warmup_steps
    << " warm-up steps then cosine decay to " << t.min_lr_ratio << "x, gradient clipping at "
    << t.grad_clip << "; init: GPT-2's (std 0.02, position embeddings std 0.01), seed " << t.seed
    << ".\n\n"
    << "| | loss (nats/token) |\n|---|---|\n"
    << "| final training (mean of the last " << t.log_every << " steps) | "
    << Fixed(r.final_loss, 4) << " |\n| held-out stream (rows from another seed"
    << (data.has_ioi() ? "; held-out IOI templates and names" : "") << ") | "
    << Fixed(r.held_out_loss, 4) << " |\n\n"
    << "## Facts (measured by `lensgrid train` on the saved F16 weights)\n\n"
    << "On " << FactsOptions{}.n_prompts
    << " prompts of repeated random tokens (the `induction` "
       "dataset, seed "
    << FactsOptions{}.seed << ": BOS + x + x with " << FactsOptions{}.seq_len
    << " uniform random tokens in x):\n\n"
    << "- top induction head **" << facts.top_induction.name() << "**: attention stripe "
    << Fixed(facts.top_induction.score, 3)
    << " (mean attention from each repeated token to the "
       "token after its first copy), TransformerLens detect_head (\"mul\") score "
    << Fixed(facts.induction[facts.top_induction.layer][facts.top_induction.head].item<double>(), 3)
    << " (at most (n-1)/2n = 0.475 on this dataset, since only the second half has targets)\n"
    << "- top previous-token head **" << facts.top_previous.name() << "**: stripe "
    << Fixed(facts.top_previous.score, 3) << ", detect_head score "
    << Fixed(facts.previous_token[facts.top_previous.layer][facts.top_previous.head].item<double>(),
             3)
    << "\n- loss on the repeated half " << Fixed(facts.clean_loss, 3) << " nats; zero-ablating "
    << facts.top_induction.name() << " raises it by "
    << Fixed(facts.top_induction_ablation_delta, 3) << " nats\n\n"
    << "Induction stripe:\n\n"
    << HeadTableMarkdown(facts.induction_stripe) << "\nPrevious-token stripe:\n\n"
    << HeadTableMarkdown(facts.previous_stripe) << "\ndetect_head induction (\"mul\"):\n\n"
    << HeadTableMarkdown(facts.induction) << "\ndetect_head previous-token (\"mul\"):\n\n"
    << HeadTableMarkdown(facts.previous_token)
    << "\nLoss increase when zero-ablating each head (repeated half):\n\n"
    << HeadTableMarkdown(facts.ablation_delta) << "\n"
    << "## IOI-like behaviour\n\n";
  if (!data.has_ioi()) {
    m << "Not trained: no IOI sentences in the data (`--ioi 0`"
      << (f.merges < 1500
              ? "; with " + std::to_string(f.merges) + " merges the names are not single tokens"
              : std::string())
      << "), so the model has no IOI-like behaviour and the demo does not run the IOI search.\n";
    return m.str();
  }
  m << "| prompts | n | accuracy (logit IO > logit S) | mean logit diff |\n|---|---|---|---|\n"
    << "| held-out templates and names | " << ioi_held_out.n << " | "
    << Fixed(100 * ioi_held_out.accuracy, 1) << "% | " << Fixed(ioi_held_out.mean_logit_diff, 3)
    << " |\n| training templates and names | " << ioi_train.n << " | "
    << Fixed(100 * ioi_train.accuracy, 1) << "% | " << Fixed(ioi_train.mean_logit_diff, 3)
    << " |\n";
  if (ioi_dataset.ok()) {
    m << "| `ioi` search dataset (seed 0) | " << ioi_dataset->n << " | "
      << Fixed(100 * ioi_dataset->accuracy, 1) << "% | " << Fixed(ioi_dataset->mean_logit_diff, 3)
      << " |\n";
  }
  m << "\nThe IOI behaviour " << (ioi_held_out.accuracy >= 0.9 ? "formed" : "did not fully form")
    << ": held-out accuracy " << Fixed(100 * ioi_held_out.accuracy, 1) << "%.\n";
  return m.str();
}

absl::Status Execute(const TrainFlags& flags, const std::string& command, std::ostream& out) {
  ConfigureCpuThreads(flags.threads);
  HookedTransformerConfig cfg;
  cfg.n_layers = flags.layers;
  cfg.n_heads = flags.heads;
  cfg.d_model = flags.d_model;
  if (cfg.d_model % cfg.n_heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--d-model ", cfg.d_model, " is not divisible by --heads ", cfg.n_heads));
  }
  cfg.d_head = cfg.d_model / cfg.n_heads;
  cfg.d_mlp = flags.d_mlp > 0 ? flags.d_mlp : 4 * cfg.d_model;
  cfg.attn_only = flags.attn_only;
  cfg.n_ctx = flags.data.seq_len;
  cfg.d_vocab = TruncatedGpt2VocabSize(flags.merges);
  cfg.bos_token_id = cfg.eos_token_id = cfg.d_vocab - 1;

  LG_RETURN_IF_ERROR(WriteTruncatedGpt2Tokenizer(
      flags.bpe_dir.empty() ? DefaultBpeDir() : flags.bpe_dir, flags.merges, flags.out_dir));
  LG_ASSIGN_OR_RETURN(auto tokenizer, LoadTokenizerFromDir(flags.out_dir));
  LG_ASSIGN_OR_RETURN(TrainData data, TrainData::Create(flags.data, cfg.d_vocab, tokenizer.get()));
  out << "lensgrid train: " << cfg.n_layers << " layers, " << cfg.n_heads << " heads, d_model "
      << cfg.d_model << (cfg.attn_only ? " (attention only)" : "") << ", d_vocab " << cfg.d_vocab
      << ", " << flags.train.steps << " steps x " << flags.train.batch << " x "
      << flags.data.seq_len << " tokens, " << BlasThreads() << " BLAS threads" << std::endl;
  LG_ASSIGN_OR_RETURN(
      TrainResult result, Train(cfg, data, flags.train, [&out](const TrainProgress& p) {
        out << "step " << p.step << "  loss " << Fixed(p.loss, 4) << "  lr " << std::scientific
            << std::setprecision(2) << p.lr << std::defaultfloat;
        if (p.held_out_loss >= 0) {
          out << "  held-out " << Fixed(p.held_out_loss, 4);
          FactsOptions quick;
          quick.n_prompts = 8;
          if (auto facts = MeasureModelFacts(*p.model, quick); facts.ok()) {
            out << "  induction " << facts->top_induction.name() << " "
                << Fixed(facts->top_induction.score, 2) << "  prev " << facts->top_previous.name()
                << " " << Fixed(facts->top_previous.score, 2) << "  repeat-loss "
                << Fixed(facts->clean_loss, 2);
          }
        }
        out << "  " << Fixed(p.seconds, 0) << " s" << std::endl;
      }));
  LG_RETURN_IF_ERROR(SaveHfCheckpoint(result.weights, cfg, flags.out_dir, /*f16=*/true));

  // Facts about what was saved: reload the F16 file as any user would.
  LG_ASSIGN_OR_RETURN(auto model, HookedTransformer::FromPretrained(flags.out_dir));
  LG_ASSIGN_OR_RETURN(ModelFacts facts, MeasureModelFacts(*model, FactsOptions{}));
  LG_ASSIGN_OR_RETURN(IoiScore ioi_held_out,
                      ScoreIoi(*model, data.IoiPrompts(flags.ioi_eval_prompts, 1, true)));
  LG_ASSIGN_OR_RETURN(IoiScore ioi_train,
                      ScoreIoi(*model, data.IoiPrompts(flags.ioi_eval_prompts, 2, false)));
  absl::StatusOr<IoiScore> ioi_dataset = absl::UnknownError("not run");
  if (auto ds = MakeDataset({"ioi", flags.ioi_eval_prompts, 0, 16}, cfg, tokenizer.get());
      ds.ok()) {
    ioi_dataset = ScoreIoi(*model, ds->prompts);
  }
  std::ofstream card(flags.out_dir + "/MODEL_CARD.md");
  card << ModelCard(flags, cfg, command, data, result, facts, ioi_held_out, ioi_train, ioi_dataset);
  if (!card) return absl::PermissionDeniedError("cannot write MODEL_CARD.md");
  out << "final loss " << Fixed(result.final_loss, 4) << ", held-out "
      << Fixed(result.held_out_loss, 4) << ", " << Fixed(result.seconds / 60, 1) << " min\n"
      << "induction head " << facts.top_induction.name() << " stripe "
      << Fixed(facts.top_induction.score, 3) << " (ablation +"
      << Fixed(facts.top_induction_ablation_delta, 3) << " nats), previous-token head "
      << facts.top_previous.name() << " stripe " << Fixed(facts.top_previous.score, 3) << "\n"
      << (data.has_ioi()
              ? absl::StrCat("IOI held-out accuracy ", Fixed(100 * ioi_held_out.accuracy, 1),
                             "%, logit diff ", Fixed(ioi_held_out.mean_logit_diff, 3))
              : std::string("IOI not trained (--ioi 0)"))
      << "\n"
      << "wrote " << flags.out_dir << "/{config.json, model.safetensors, vocab.json, merges.txt, "
      << "MODEL_CARD.md}\n";
  return absl::OkStatus();
}

}  // namespace

int RunTrainCommand(int argc, char** argv, std::ostream& out, std::ostream& err) {
  CLI::App app{"Train a small GPT-2-family model with real circuits", "lensgrid train"};
  TrainFlags f;
  TrainDataOptions& d = f.data;
  TrainOptions& t = f.train;
  uint64_t seed = 0;
  app.add_option("--out", f.out_dir, "model directory to write")->required();
  app.add_option("--seed", seed, "seed of the data and the initial weights")->required();
  app.add_option("--steps", t.steps, "optimizer steps")->check(CLI::PositiveNumber);
  app.add_option("--batch", t.batch, "rows per step")->check(CLI::PositiveNumber);
  app.add_option("--layers", f.layers, "n_layer")->check(CLI::PositiveNumber);
  app.add_option("--heads", f.heads, "n_head")->check(CLI::PositiveNumber);
  app.add_option("--d-model", f.d_model, "n_embd")->check(CLI::PositiveNumber);
  app.add_option("--d-mlp", f.d_mlp, "n_inner (default 4 x d_model)");
  app.add_flag("--attn-only", f.attn_only, "blocks without MLPs");
  app.add_option("--merges", f.merges, "keep GPT-2's first K BPE merges (d_vocab = 257 + K)");
  app.add_option("--bpe-dir", f.bpe_dir, "GPT-2's encoder.json + vocab.bpe (default: bootstrap's)");
  app.add_option("--seq-len", d.seq_len, "tokens per row (= n_positions)")
      ->check(CLI::PositiveNumber);
  app.add_option("--lr", t.lr, "peak learning rate");
  app.add_option("--warmup", t.warmup_steps, "linear warm-up steps");
  app.add_option("--min-lr-ratio", t.min_lr_ratio, "final lr / peak lr (cosine decay)");
  app.add_option("--weight-decay", t.weight_decay, "AdamW decay on matrices");
  app.add_option("--grad-clip", t.grad_clip, "max global gradient norm (0: off)");
  app.add_option("--repeats", d.repeats_fraction, "fraction of rows with repeated spans");
  app.add_option("--chain", d.chain_fraction, "fraction of rows of chain filler only");
  app.add_option("--ioi", d.ioi_fraction, "fraction of rows of IOI-like sentences");
  app.add_option("--triggers", d.triggers_fraction, "fraction of rows with trigger pairs");
  app.add_option("--max-triggers", d.max_triggers, "trigger tokens per row (at most)");
  app.add_option("--trigger-rate", d.trigger_rate, "probability a position starts a pair");
  app.add_option("--chain-alphabet", d.chain_alphabet, "tokens of the chain filler");
  app.add_option("--chain-noise", d.chain_noise, "probability of a random filler token");
  app.add_option("--max-span", d.max_span, "longest repeated span");
  app.add_option("--max-gap", d.max_gap, "longest gap before a span's copy");
  app.add_option("--max-copies", d.max_copies, "copies of each span (at most)");
  app.add_option("--half-repeat-steps", d.half_repeat_batches,
                 "curriculum: repeats rows are BOS + x + x for the first N steps");
  app.add_option("--log-every", t.log_every, "progress line period (steps)");
  app.add_option("--eval-every", t.eval_every, "held-out loss period (steps)");
  app.add_option("--threads", f.threads, "CPU threads (0: all)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e, out, err);
  }
  d.seed = t.seed = seed;
  std::vector<std::string> args = {"lensgrid", "train"};
  for (int i = 1; i < argc; ++i) args.push_back(Quote(argv[i]));
  return ReportCommandStatus("train", Execute(f, absl::StrJoin(args, " "), out), err);
}

}  // namespace lensgrid
