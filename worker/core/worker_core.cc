#include "worker/core/worker_core.h"

#include <torch/torch.h>

#include <exception>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/echo.h"
#include "common/status_macros.h"
#include "common/worker_api_version.h"
#include "worker/core/guarded.h"
#include "worker/core/interventions.h"
#include "worker/core/program_messages.h"
#include "worker/core/run_inputs.h"
#include "worker/core/wire_tensors.h"
#include "worker/hook_shapes.h"
#include "worker/model/generate.h"
#include "worker/model/gradients.h"
#include "worker/model/hook_program.h"
#include "worker/model/hooked_transformer.h"
#include "worker/model/tensor_io.h"
#include "worker/model/tokenizer/tokenizer.h"

namespace lensgrid {
namespace {

absl::StatusOr<std::vector<HookShape>> ProbeHookShapes(const HookedTransformer& model) {
  CacheOptions all;
  ActivationCache a, b;
  ForwardOptions none;
  none.return_type = ForwardReturn::kNone;
  ForwardInput in_a, in_b;
  in_a.tokens = torch::zeros({kProbeBatchA, kProbePosA}, torch::kInt64);
  in_b.tokens = torch::zeros({kProbeBatchB, kProbePosB}, torch::kInt64);
  LG_RETURN_IF_ERROR(model.RunWithCache(in_a, none, all, &a).status());
  LG_RETURN_IF_ERROR(model.RunWithCache(in_b, none, all, &b).status());
  std::vector<HookShape> shapes;
  for (const std::string& name : model.hook_names()) {
    auto ta = a.Get(name), tb = b.Get(name);
    if (!ta.ok() || !tb.ok()) {
      return absl::InternalError(absl::StrCat("probe run did not record ", name));
    }
    shapes.push_back(InferHookShape(ta->sizes().vec(), tb->sizes().vec()));
  }
  return shapes;
}

v1::ModelConfig ConfigProto(const HookedTransformerConfig& cfg) {
  v1::ModelConfig out;
  out.set_n_layers(cfg.n_layers);
  out.set_n_heads(cfg.n_heads);
  out.set_d_model(cfg.d_model);
  out.set_d_head(cfg.d_head);
  out.set_d_mlp(cfg.d_mlp);
  out.set_n_ctx(cfg.n_ctx);
  out.set_d_vocab(cfg.d_vocab);
  out.set_eps(cfg.eps);
  out.set_act_fn(std::string(ActivationName(cfg.act_fn)));
  out.set_bos_token_id(cfg.bos_token_id);
  out.set_eos_token_id(cfg.eos_token_id);
  out.set_attn_only(cfg.attn_only);
  return out;
}

// What GetWeights sends without names, in this order: each that the model has.
const std::vector<std::string>& AllWeightNames() {
  static const std::vector<std::string> names = {
      "W_E",   "W_pos", "W_Q",  "W_K",  "W_V",        "W_O",       "b_Q",   "b_K",
      "b_V",   "b_O",   "W_in", "b_in", "W_out",      "b_out",     "ln1.w", "ln1.b",
      "ln2.w", "ln2.b", "W_U",  "b_U",  "ln_final.w", "ln_final.b"};
  return names;
}

// Longest weight name GetWeights looks up (the longest real one is ~25 bytes).
constexpr size_t kMaxWeightNameBytes = 256;

// Reply bytes Generate reserves per generated token of a row: the id, the
// finished flag, the token's text and the message framing. An estimate: the
// messages are small, and at most --max-tokens of them exist.
constexpr int64_t kGenerateBytesPerToken = 64;

// Header + tensors of a run's reply, in the order RunResponse documents.
absl::StatusOr<RunResult> Pack(const ForwardInput& input, const RunOutput& out, bool keep_logits,
                               c10::ScalarType logits_type, const at::Tensor& metric,
                               const ActivationCache* cache, c10::ScalarType cache_type,
                               const std::string& sha256,
                               const std::vector<std::pair<std::string, at::Tensor>>& extra = {}) {
  RunResult result;
  LG_ASSIGN_OR_RETURN(*result.header.mutable_tokens(), ToProto(input.tokens));
  if (input.attention_mask.defined()) {
    LG_ASSIGN_OR_RETURN(*result.header.mutable_attention_mask(),
                        ToProto(input.attention_mask.ne(0)));
  }
  result.header.set_weights_sha256(sha256);
  result.tokens = input.tokens.numel();
  auto add = [&](std::string name, const at::Tensor& t) -> absl::Status {
    LG_ASSIGN_OR_RETURN(TensorBytes bytes, ToTensorBytes(std::move(name), t));
    result.tensors.push_back(std::move(bytes));
    return absl::OkStatus();
  };
  if (keep_logits && out.logits.defined())
    LG_RETURN_IF_ERROR(add("logits", out.logits.to(logits_type)));
  if (out.loss.defined()) LG_RETURN_IF_ERROR(add("loss", out.loss.to(torch::kFloat32)));
  if (metric.defined()) LG_RETURN_IF_ERROR(add("metric", metric.to(torch::kFloat32)));
  if (cache != nullptr) {
    for (const auto& [name, t] : cache->entries()) LG_RETURN_IF_ERROR(add(name, t.to(cache_type)));
  }
  for (const auto& [name, t] : extra) LG_RETURN_IF_ERROR(add(name, t));
  ChunkCursor cursor(result.tensors);
  for (auto& meta : cursor.Metas()) *result.header.add_tensors() = std::move(meta);
  result.header.set_total_bytes(cursor.total_bytes());
  return result;
}

}  // namespace

WorkerCore::~WorkerCore() = default;

absl::StatusOr<std::unique_ptr<WorkerCore>> WorkerCore::Load(const WorkerOptions& options) {
  return Guarded("loading the model", [&]() -> absl::StatusOr<std::unique_ptr<WorkerCore>> {
    std::unique_ptr<WorkerCore> core(new WorkerCore());
    core->options_ = options;
    core->reply_budget_ = std::make_unique<ReplyBudget>(options.max_reply_memory);
    LoadOptions load;
    if (options.no_processing) load.processing = ProcessingOptions::None();
    load.device = options.device;
    LG_ASSIGN_OR_RETURN(core->model_, HookedTransformer::FromPretrained(options.model_dir, load));
    auto tokenizer = LoadTokenizerForModel(options.model_dir);
    if (tokenizer.ok()) core->tokenizer_ = std::move(*tokenizer);
    LG_ASSIGN_OR_RETURN(core->hook_shapes_, ProbeHookShapes(*core->model_));

    v1::ModelInfo& info = core->info_;
    info.set_model_dir(options.model_dir);
    info.set_api_version(kWorkerApiVersion);
    *info.mutable_config() = ConfigProto(core->model_->cfg());
    info.set_weights_sha256(core->model_->load_report().weights_sha256);
    info.set_device(core->model_->device().str());
    LG_ASSIGN_OR_RETURN(TensorDType dtype, DTypeOfTensor(core->model_->W_U()));
    LG_ASSIGN_OR_RETURN(v1::DType wire_dtype, ToProtoDType(dtype));
    info.set_dtype(wire_dtype);
    info.set_processed(core->model_->processed());
    info.set_has_tokenizer(core->tokenizer_ != nullptr);
    if (core->tokenizer_ != nullptr) info.set_tokenizer_sha256(core->tokenizer_->identity());
    for (size_t i = 0; i < core->hook_shapes_.size(); ++i) {
      v1::HookInfo* hook = info.add_hooks();
      hook->set_name(core->model_->hook_names()[i]);
      for (int64_t d : core->hook_shapes_[i].shape) hook->add_shape(d);
      for (const auto& a : core->hook_shapes_[i].axes) hook->add_axes(a);
    }
    v1::WorkerLimits* limits = info.mutable_limits();
    limits->set_max_batch(options.max_batch);
    limits->set_max_tokens(options.max_tokens);
    limits->set_max_response_bytes(options.max_response_bytes);
    limits->set_chunk_bytes(options.chunk_bytes);
    limits->set_max_queue(options.max_queue);
    limits->set_max_program_nodes(options.max_program_nodes);
    limits->set_max_program_bytes(options.max_program_bytes);
    limits->set_max_einsum_elements(options.max_einsum_elements);
    core->shard_cache_ = std::make_unique<BaseRunCache>(options.shard_cache_bytes);
    core->shard_cache_scope_ =
        absl::StrCat("weights ", info.weights_sha256(), " processed ", info.processed(), " device ",
                     info.device(), " dtype ", info.dtype());
    return core;
  });
}

absl::Status WorkerCore::CheckWeights(const std::string& expected) const {
  if (expected.empty() || expected == info_.weights_sha256()) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "weights mismatch: the request expects weights sha256 ", expected, " but this worker serves ",
      info_.model_dir(), " with sha256 ", info_.weights_sha256()));
}

absl::StatusOr<v1::TokenizeResponse> WorkerCore::Tokenize(const v1::TokenizeRequest& request,
                                                          const CancelCheck& cancelled) const {
  return Guarded("Tokenize", [&]() -> absl::StatusOr<v1::TokenizeResponse> {
    if (tokenizer_ == nullptr) {
      return absl::FailedPreconditionError(
          "the worker's model dir has no tokenizer files (vocab.json + "
          "merges.txt)");
    }
    if (request.texts_size() > options_.max_tokenize_texts) {
      return absl::ResourceExhaustedError(
          absl::StrCat("Tokenize: ", request.texts_size(), " texts is over this worker's limit of ",
                       options_.max_tokenize_texts, " per request; split the request"));
    }
    LG_RETURN_IF_ERROR(CheckTextBytes(request.texts(), options_, "Tokenize"));
    v1::TokenizeResponse response;
    int64_t reply_bytes = 0;
    const bool bos = PrependsBos(request);
    for (const std::string& text : request.texts()) {
      if (cancelled()) return absl::CancelledError("Tokenize cancelled");
      std::vector<int64_t> ids;
      if (bos) ids.push_back(model_->cfg().bos_token_id);
      tokenizer_->EncodeTo(text, &ids);
      LG_ASSIGN_OR_RETURN(std::vector<std::string> strs, tokenizer_->ToStrTokens(ids));
      v1::TokenList* list = response.add_tokens();
      list->mutable_ids()->Add(ids.begin(), ids.end());
      for (auto& s : strs) list->add_str_tokens(std::move(s));
      reply_bytes += static_cast<int64_t>(list->ByteSizeLong()) + 8;
      if (reply_bytes > options_.max_unary_reply_bytes) {
        return absl::ResourceExhaustedError(
            absl::StrCat("Tokenize: the reply would be over ", options_.max_unary_reply_bytes,
                         " bytes (at text ", response.tokens_size() - 1,
                         "), more than a gRPC client receives by default; send fewer or "
                         "shorter texts per request"));
      }
    }
    return response;
  });
}

absl::StatusOr<v1::DetokenizeResponse> WorkerCore::Detokenize(
    const v1::DetokenizeRequest& request) const {
  return Guarded("Detokenize", [&]() -> absl::StatusOr<v1::DetokenizeResponse> {
    if (tokenizer_ == nullptr) {
      return absl::FailedPreconditionError(
          "the worker's model dir has no tokenizer files (vocab.json + "
          "merges.txt)");
    }
    if (request.ids_size() > options_.max_detokenize_ids) {
      return absl::ResourceExhaustedError(
          absl::StrCat("Detokenize: ", request.ids_size(), " ids is over this worker's limit of ",
                       options_.max_detokenize_ids, " per request; split the request"));
    }
    std::vector<int64_t> ids(request.ids().begin(), request.ids().end());
    v1::DetokenizeResponse response;
    LG_ASSIGN_OR_RETURN(*response.mutable_text(), tokenizer_->Decode(ids));
    LG_ASSIGN_OR_RETURN(std::vector<std::string> strs, tokenizer_->ToStrTokens(ids));
    for (auto& s : strs) response.add_str_tokens(std::move(s));
    if (static_cast<int64_t>(response.ByteSizeLong()) > options_.max_unary_reply_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat("Detokenize: the reply would be ", response.ByteSizeLong(), " bytes, over ",
                       options_.max_unary_reply_bytes,
                       " (more than a gRPC client receives by default); send fewer ids"));
    }
    return response;
  });
}

absl::StatusOr<RunResult> WorkerCore::RunWithCache(const v1::RunWithCacheRequest& request,
                                                   const CancelCheck& cancelled) const {
  return Guarded("RunWithCache", [&] { return RunWithCacheImpl(request, cancelled); });
}

absl::StatusOr<RunResult> WorkerCore::RunWithInterventions(
    const v1::RunWithInterventionsRequest& request, const CancelCheck& cancelled) const {
  return Guarded("RunWithInterventions",
                 [&] { return RunWithInterventionsImpl(request, cancelled); });
}

absl::StatusOr<RunResult> WorkerCore::RunWithCacheImpl(const v1::RunWithCacheRequest& request,
                                                       const CancelCheck& cancelled) const {
  LG_RETURN_IF_ERROR(CheckWeights(request.expected_weights_sha256()));
  LG_ASSIGN_OR_RETURN(ForwardInput input, PrepareInput(request.input(), tokenizer_.get(),
                                                       model_->cfg(), options_, "input"));
  LG_ASSIGN_OR_RETURN(ForwardOptions run, ToRunOptions(request.options()));
  run.is_cancelled = cancelled;
  LG_ASSIGN_OR_RETURN(
      c10::ScalarType logits_type,
      FloatScalarType(request.options().logits_dtype(), torch::kFloat32, "options.logits_dtype"));
  LG_ASSIGN_OR_RETURN(
      c10::ScalarType cache_type,
      FloatScalarType(request.cache().dtype(), model_->W_U().scalar_type(), "cache.dtype"));
  CacheOptions cache_options = ToCacheOptions(request.cache());
  LG_ASSIGN_OR_RETURN(std::vector<std::string> names, model_->SelectHookNames(cache_options));
  LG_ASSIGN_OR_RETURN(
      int64_t reply_bytes,
      CheckResponseBytes(*model_, hook_shapes_, names, input, run, c10::elementSize(logits_type),
                         &request.cache(), c10::elementSize(cache_type),
                         options_.max_response_bytes));
  LG_ASSIGN_OR_RETURN(ReplyBudget::Hold hold, ReserveReply(reply_bytes, "RunWithCache"));
  ActivationCache cache;
  LG_ASSIGN_OR_RETURN(RunOutput out, model_->RunWithCache(input, run, cache_options, &cache));
  LG_ASSIGN_OR_RETURN(RunResult result,
                      Pack(input, out, /*keep_logits=*/true, logits_type, at::Tensor(), &cache,
                           cache_type, info_.weights_sha256()));
  result.hold = std::move(hold);
  return result;
}

absl::StatusOr<ProgramPlan> WorkerCore::CompilePrograms(
    const v1::RunWithInterventionsRequest& request, int64_t batch, int64_t pos) const {
  if (request.programs_size() == 0) return ProgramPlan();
  LG_ASSIGN_OR_RETURN(std::vector<HookProgramSpec> programs, ProgramsFromProto(request.programs()));
  ProgramEnv env;
  for (const HookShape& shape : hook_shapes_) {
    env.hook_shapes.push_back(ConcreteShape(shape, batch, pos, pos, false));
  }
  env.dtype = model_->W_U().scalar_type();
  env.has_patch_run = request.has_patch_input();
  ProgramLimits limits;
  limits.max_nodes = options_.max_program_nodes;
  limits.max_bytes = options_.max_program_bytes;
  limits.max_einsum_elements = options_.max_einsum_elements;
  return ProgramPlan::Compile(programs, *model_, env, limits);
}

absl::StatusOr<std::vector<std::string>> WorkerCore::GradientHooks(
    const v1::RunWithInterventionsRequest& request, const ProgramPlan& programs,
    bool has_metric) const {
  std::vector<std::string> names;
  if (!request.has_gradients()) return names;
  const v1::Gradients& g = request.gradients();
  if (g.hooks_size() == 0) {
    return absl::InvalidArgumentError("gradients.hooks: name at least one hook");
  }
  for (int i = 0; i < g.hooks_size(); ++i) {
    absl::StatusOr<std::string> name = model_->ResolveHookName(g.hooks(i));
    if (!name.ok()) {
      return absl::Status(name.status().code(),
                          absl::StrCat("gradients.hooks[", i, "]: ", name.status().message()));
    }
    names.push_back(*name);
  }
  if (!g.saved().empty()) {
    const auto& saved = programs.saved();
    auto it = std::find_if(saved.begin(), saved.end(),
                           [&](const SavedInfo& s) { return s.name == g.saved(); });
    if (it == saved.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("gradients.saved: no program saves '", g.saved(), "'"));
    }
    int64_t n = 1;
    for (int64_t d : it->shape) n *= d;
    if (n != 1 || it->is_bool) {
      return absl::InvalidArgumentError(absl::StrCat(
          "gradients.saved: '", g.saved(), "' is ", it->is_bool ? "bool " : "", "[",
          absl::StrJoin(it->shape, ", "),
          "] but the objective must be one number: reduce it in the program (a reduce node)"));
    }
  } else if (!has_metric) {
    return absl::InvalidArgumentError(
        "gradients: set metric (the objective) or gradients.saved (a program's saved scalar)");
  }
  return names;
}

absl::StatusOr<RunResult> WorkerCore::RunWithInterventionsImpl(
    const v1::RunWithInterventionsRequest& request, const CancelCheck& cancelled) const {
  LG_RETURN_IF_ERROR(CheckWeights(request.expected_weights_sha256()));
  LG_ASSIGN_OR_RETURN(ForwardInput input, PrepareInput(request.input(), tokenizer_.get(),
                                                       model_->cfg(), options_, "input"));
  LG_ASSIGN_OR_RETURN(ForwardOptions run, ToRunOptions(request.options()));
  run.is_cancelled = cancelled;
  LG_ASSIGN_OR_RETURN(
      c10::ScalarType logits_type,
      FloatScalarType(request.options().logits_dtype(), torch::kFloat32, "options.logits_dtype"));
  const int64_t batch = input.tokens.size(0), pos = input.tokens.size(1);
  LG_ASSIGN_OR_RETURN(
      std::vector<ResolvedIntervention> plan,
      ResolveInterventions(request.interventions(), *model_, hook_shapes_, batch, pos));
  // The metric reads logits even when the reply does not carry them.
  LG_ASSIGN_OR_RETURN(std::optional<MetricKind> metric_kind, RequestedMetric(request.metric()));
  const bool wants_metric = metric_kind.has_value();
  const bool keep_logits =
      run.return_type == ForwardReturn::kLogits || run.return_type == ForwardReturn::kBoth;
  if (wants_metric) {
    if (run.stop_at_layer.has_value()) {
      return absl::InvalidArgumentError("a metric needs the final logits: drop stop_at_layer");
    }
    if (run.return_type == ForwardReturn::kNone) run.return_type = ForwardReturn::kLogits;
    if (run.return_type == ForwardReturn::kLoss) run.return_type = ForwardReturn::kBoth;
  }

  LG_ASSIGN_OR_RETURN(ProgramPlan programs, CompilePrograms(request, batch, pos));
  LG_ASSIGN_OR_RETURN(std::vector<std::string> grad_names,
                      GradientHooks(request, programs, wants_metric));

  std::vector<std::string> patch_names = PatchHookNames(plan);
  if (!patch_names.empty() && !request.has_patch_input()) {
    return absl::InvalidArgumentError("PATCH interventions need a patch_input to patch from");
  }
  for (const std::string& name : programs.PatchHookNames()) {
    if (std::find(patch_names.begin(), patch_names.end(), name) == patch_names.end()) {
      patch_names.push_back(name);
    }
  }
  ActivationCache patch_cache;
  if (!patch_names.empty()) {
    LG_ASSIGN_OR_RETURN(ForwardInput source, PrepareInput(request.patch_input(), tokenizer_.get(),
                                                          model_->cfg(), options_, "patch_input"));
    if (source.tokens.sizes() != input.tokens.sizes()) {
      return absl::InvalidArgumentError(
          absl::StrCat("patch_input has [batch, pos] ", c10::str(source.tokens.sizes()),
                       ", the input has ", c10::str(input.tokens.sizes()), "; they must match"));
    }
    ForwardOptions source_run;
    source_run.return_type = ForwardReturn::kNone;
    source_run.is_cancelled = cancelled;
    int last = -1;
    for (const auto& name : patch_names) last = std::max(last, HookLayer(name).value_or(1 << 20));
    if (last + 1 < model_->cfg().n_layers) source_run.stop_at_layer = last + 1;
    CacheOptions source_cache;
    source_cache.names = patch_names;
    LG_RETURN_IF_ERROR(
        model_->RunWithCache(source, source_run, source_cache, &patch_cache).status());
  }

  c10::ScalarType cache_type = model_->W_U().scalar_type();
  CacheOptions cache_options;
  std::vector<std::string> names;
  if (request.has_cache()) {
    LG_ASSIGN_OR_RETURN(cache_type, FloatScalarType(request.cache().dtype(),
                                                    model_->W_U().scalar_type(), "cache.dtype"));
    cache_options = ToCacheOptions(request.cache());
    LG_ASSIGN_OR_RETURN(names, model_->SelectHookNames(cache_options));
  }
  ForwardOptions counted = run;
  if (!keep_logits) counted.return_type = ForwardReturn::kLoss;
  LG_ASSIGN_OR_RETURN(
      int64_t reply_bytes,
      CheckResponseBytes(*model_, hook_shapes_, names, input, counted,
                         c10::elementSize(logits_type),
                         request.has_cache() ? &request.cache() : nullptr,
                         c10::elementSize(cache_type), options_.max_response_bytes));
  // Saved values (in the cache's dtype) and gradients come after the cache.
  for (const SavedInfo& saved : programs.saved()) {
    int64_t n = 1;
    for (int64_t d : saved.shape) n *= d;
    reply_bytes += n * (saved.is_bool ? 1 : static_cast<int64_t>(c10::elementSize(cache_type)));
  }
  const v1::Gradients& grad_spec = request.gradients();
  LG_ASSIGN_OR_RETURN(
      c10::ScalarType grad_type,
      FloatScalarType(grad_spec.dtype(), model_->W_U().scalar_type(), "gradients.dtype"));
  std::optional<PositionSlice> grad_positions;
  if (grad_spec.has_positions()) {
    grad_positions = PositionSlice{};
    if (grad_spec.positions().has_start()) grad_positions->start = grad_spec.positions().start();
    if (grad_spec.positions().has_stop()) grad_positions->stop = grad_spec.positions().stop();
  }
  for (const std::string& name : grad_names) {
    const HookShape& shape = hook_shapes_[model_->HookId(name).value()];
    const int64_t kept = grad_positions.has_value()
                             ? SliceLength(grad_positions->start, grad_positions->stop, pos)
                             : pos;
    int64_t n = 1;
    for (int64_t d : ConcreteShape(shape, batch, pos, kept, false)) n *= d;
    reply_bytes += n * static_cast<int64_t>(c10::elementSize(grad_type));
  }
  if (reply_bytes > options_.max_response_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the reply (logits, cache, saved values and gradients) would be ", reply_bytes,
        " bytes, over this worker's --max-response-bytes ", options_.max_response_bytes,
        "; cache fewer hooks or positions, or ask for fewer gradients"));
  }
  LG_ASSIGN_OR_RETURN(ReplyBudget::Hold hold, ReserveReply(reply_bytes, "RunWithInterventions"));

  std::vector<NamedHook> hooks = MakeHooks(plan, &patch_cache);
  auto values = std::make_shared<ProgramValues>();
  for (NamedHook& hook : programs.MakeHooks(&patch_cache, values)) hooks.push_back(std::move(hook));
  ActivationCache cache, grads;
  RunOutput out;
  at::Tensor metric;
  if (!grad_names.empty()) {
    GradientRequest g;
    g.hooks = grad_names;
    g.objective = [&](const RunOutput& o) -> absl::StatusOr<at::Tensor> {
      if (!request.gradients().saved().empty()) return values->Get(request.gradients().saved());
      LG_ASSIGN_OR_RETURN(at::Tensor m, ComputeMetric(*metric_kind, request.metric(), o.logits,
                                                      input, model_->cfg()));
      metric = m.detach();
      return request.metric().per_prompt() ? m.sum() : m;
    };
    LG_ASSIGN_OR_RETURN(out, RunWithGradients(*model_, input, run, g, &grads, nullptr, hooks,
                                              request.has_cache() ? &cache_options : nullptr,
                                              request.has_cache() ? &cache : nullptr));
  } else if (request.has_cache()) {
    LG_ASSIGN_OR_RETURN(out, model_->RunWithCache(input, run, cache_options, &cache, hooks));
  } else {
    LG_ASSIGN_OR_RETURN(out, model_->Run(input, run, hooks));
  }
  if (wants_metric && !metric.defined()) {
    LG_ASSIGN_OR_RETURN(
        metric, ComputeMetric(*metric_kind, request.metric(), out.logits, input, model_->cfg()));
  }
  std::vector<std::pair<std::string, at::Tensor>> extra;
  for (const auto& [name, t] : values->saved) {
    extra.emplace_back(absl::StrCat("saved:", name),
                       t.scalar_type() == at::kBool ? t.detach() : t.detach().to(cache_type));
  }
  for (const auto& [name, g] : grads.entries()) {
    at::Tensor t = g;
    if (grad_positions.has_value()) {
      const int axis = PosAxis(hook_shapes_[model_->HookId(name).value()]).value_or(1);
      const int64_t start = SliceStart(grad_positions->start, t.size(axis));
      t = t.slice(axis, start,
                  start + SliceLength(grad_positions->start, grad_positions->stop, t.size(axis)));
    }
    extra.emplace_back(absl::StrCat("grad:", name), t.to(grad_type));
  }
  LG_ASSIGN_OR_RETURN(RunResult result, Pack(input, out, keep_logits, logits_type, metric,
                                             request.has_cache() ? &cache : nullptr, cache_type,
                                             info_.weights_sha256(), extra));
  result.hold = std::move(hold);
  return result;
}

absl::StatusOr<RunResult> WorkerCore::GetWeights(const v1::GetWeightsRequest& request,
                                                 const CancelCheck& cancelled) const {
  return Guarded("GetWeights", [&] { return GetWeightsImpl(request, cancelled); });
}

absl::StatusOr<RunResult> WorkerCore::GetWeightsImpl(const v1::GetWeightsRequest& request,
                                                     const CancelCheck& cancelled) const {
  LG_ASSIGN_OR_RETURN(c10::ScalarType type,
                      FloatScalarType(request.dtype(), model_->W_U().scalar_type(), "dtype"));
  const bool all = request.names_size() == 0;
  const std::vector<std::string> names =
      all ? AllWeightNames()
          : std::vector<std::string>(request.names().begin(), request.names().end());
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i].size() > kMaxWeightNameBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("names[", i, "] is ", names[i].size(),
                       " bytes, too long for a weight name: ", Echo(names[i])));
    }
    for (size_t j = 0; j < i; ++j) {
      if (names[j] == names[i]) {
        return absl::InvalidArgumentError(
            absl::StrCat("names[", i, "] repeats names[", j, "] (", Echo(names[i]), ")"));
      }
    }
  }
  std::vector<std::pair<std::string, at::Tensor>> weights;
  int64_t bytes = 0;
  for (size_t i = 0; i < names.size(); ++i) {
    if (cancelled()) return absl::CancelledError("GetWeights cancelled");
    absl::StatusOr<at::Tensor> w = model_->Weight(names[i]);
    if (!w.ok()) {
      // Without names: only what the model has (no folded LayerNorms, no MLP
      // in an attention-only model).
      if (all && w.status().code() == absl::StatusCode::kFailedPrecondition) continue;
      return absl::Status(w.status().code(),
                          absl::StrCat("names[", i, "]: ", w.status().message()));
    }
    bytes += w->numel() * static_cast<int64_t>(c10::elementSize(type));
    if (bytes > options_.max_response_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat("GetWeights: the reply would be over this worker's --max-response-bytes ",
                       options_.max_response_bytes, " (at ", names[i],
                       "); ask for fewer weights per request, or F16/BF16"));
    }
    weights.emplace_back(names[i], *w);
  }
  LG_ASSIGN_OR_RETURN(ReplyBudget::Hold hold, ReserveReply(bytes, "GetWeights"));
  RunResult result;
  result.hold = std::move(hold);
  result.header.set_weights_sha256(info_.weights_sha256());
  for (auto& [name, t] : weights) {
    LG_ASSIGN_OR_RETURN(TensorBytes tensor, ToTensorBytes(name, t.to(type)));
    result.tensors.push_back(std::move(tensor));
    t = at::Tensor();  // a stacked copy goes as soon as its bytes are packed
  }
  ChunkCursor cursor(result.tensors);
  for (auto& meta : cursor.Metas()) *result.header.add_tensors() = std::move(meta);
  result.header.set_total_bytes(cursor.total_bytes());
  return result;
}

absl::Status WorkerCore::Generate(const v1::GenerateRequest& request, const CancelCheck& cancelled,
                                  GenerateSink* sink) const {
  return Guarded("Generate", [&] { return GenerateImpl(request, cancelled, sink); });
}

absl::Status WorkerCore::GenerateImpl(const v1::GenerateRequest& request,
                                      const CancelCheck& cancelled, GenerateSink* sink) const {
  LG_RETURN_IF_ERROR(CheckWeights(request.expected_weights_sha256()));
  GenerateOptions g;
  g.max_new_tokens = request.max_new_tokens();
  g.temperature = request.temperature();
  g.top_k = request.top_k();
  g.top_p = request.top_p();
  if (request.has_seed()) g.seed = request.seed();
  g.stop_at_eos = request.stop_at_eos();
  LG_RETURN_IF_ERROR(CheckGenerateOptions(g));
  v1::ModelInput input = request.input();
  input.set_padding_side(v1::ModelInput::PADDING_LEFT);  // generation appends on the right
  LG_ASSIGN_OR_RETURN(ForwardInput prompt,
                      PrepareInput(input, tokenizer_.get(), model_->cfg(), options_, "input"));
  const int64_t batch = prompt.tokens.size(0), pos = prompt.tokens.size(1);
  const int64_t total = batch * (pos + g.max_new_tokens);
  if (total > options_.max_tokens) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "Generate: ", batch, " x (", pos, " prompt tokens + max_new_tokens ", g.max_new_tokens,
        ") = ", total, " tokens is over this worker's --max-tokens (", options_.max_tokens,
        "); ask for fewer new tokens or send fewer or shorter prompts"));
  }
  const int64_t reply_bytes = batch * pos * 8 + g.max_new_tokens * batch * kGenerateBytesPerToken;
  if (reply_bytes > options_.max_response_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("Generate: the reply would be about ", reply_bytes,
                     " bytes, over this worker's --max-response-bytes ",
                     options_.max_response_bytes, "; ask for fewer new tokens"));
  }
  LG_ASSIGN_OR_RETURN(ReplyBudget::Hold hold, ReserveReply(reply_bytes, "Generate"));
  sink->Hold(std::move(hold));
  g.is_cancelled = cancelled;
  g.on_step = [&](const GenerateStep& step) -> absl::Status {
    v1::GenerateResponse message;
    if (step.prompt_tokens.defined()) {
      LG_ASSIGN_OR_RETURN(*message.mutable_prompt_tokens(), ToProto(step.prompt_tokens));
    }
    message.set_step(static_cast<int32_t>(step.step));
    message.mutable_tokens()->Add(step.tokens.begin(), step.tokens.end());
    for (bool f : step.finished) message.add_finished(f);
    if (tokenizer_ != nullptr) {
      for (int64_t id : step.tokens) {
        // A model's vocabulary may be larger than its tokenizer's: "" then.
        if (id < 0 || id >= tokenizer_->vocab_size()) {
          message.add_texts();
          continue;
        }
        LG_ASSIGN_OR_RETURN(std::vector<std::string> text, tokenizer_->ToStrTokens({id}));
        message.add_texts(text.empty() ? "" : std::move(text[0]));
      }
    }
    sink->Send(std::move(message));
    return absl::OkStatus();
  };
  return ::lensgrid::Generate(*model_, prompt, g).status();
}

}  // namespace lensgrid
