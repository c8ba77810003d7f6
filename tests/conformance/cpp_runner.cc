// The conformance suite's C++ runner (tests/conformance/README.md): every case through the C++
// client library (WorkerClient, CoordinatorClient, MakeSearchJobSpec, ParseProgramsJson,
// WireToDoubles), never raw stubs. No LibTorch.
//
//   conformance_cpp_runner --worker ADDR --coordinator ADDR --cases FILE --out DIR [--case NAME]...
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "client/coordinator_client.h"
#include "client/program_json.h"
#include "client/search_command.h"
#include "client/search_job.h"
#include "client/wire_values.h"
#include "client/worker_client.h"
#include "common/sha256.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace lensgrid {
namespace {

using json = nlohmann::json;

// A float as the suite writes it: its binary64 bits, big-endian hex.
json F64(double x) {
  uint64_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(bits));
  return json{{"f64", hex}};
}

std::string Sanitize(const std::string& name) {
  std::string out = name;
  for (char& c : out) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') {
      c = '_';
    }
  }
  return out;
}

// The wire dtype's name, as tensor.proto spells it.
std::string WireDTypeName(TensorDType d) {
  switch (d) {
    case TensorDType::kF32:
      return "F32";
    case TensorDType::kF16:
      return "F16";
    case TensorDType::kBF16:
      return "BF16";
    case TensorDType::kI64:
      return "I64";
    case TensorDType::kI32:
      return "I32";
    case TensorDType::kBool:
      return "BOOL";
    default:
      return std::string(DTypeName(d));
  }
}

void AppendLE(std::string* out, const void* value, size_t n) {
  // This runner is built for little-endian hosts only (static_assert below).
  out->append(static_cast<const char*>(value), n);
}
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "canonical bytes are little-endian");

// The canonical bytes of each tensor of a case (README: floats widened to float32).
class Tensors {
 public:
  absl::Status Add(const WireTensor& t) {
    Item item{t.name, WireDTypeName(t.dtype), t.shape, ""};
    switch (t.dtype) {
      case TensorDType::kF32:
      case TensorDType::kF16:
      case TensorDType::kBF16: {
        // The client's own widening (client/wire_values.h); every value is a float32.
        LG_ASSIGN_OR_RETURN(std::vector<double> values, WireToDoubles(t));
        item.bytes.reserve(values.size() * 4);
        for (double v : values) {
          const float f = static_cast<float>(v);
          AppendLE(&item.bytes, &f, 4);
        }
        break;
      }
      case TensorDType::kI64:
      case TensorDType::kI32:
        item.bytes = t.data;
        break;
      case TensorDType::kBool:
        item.bytes.reserve(t.data.size());
        for (char c : t.data) item.bytes.push_back(c != 0 ? 1 : 0);
        break;
      default:
        return absl::InternalError(
            absl::StrCat("tensor ", t.name, ": unexpected dtype ", DTypeName(t.dtype)));
    }
    items_.push_back(std::move(item));
    return absl::OkStatus();
  }

  absl::Status AddProto(const std::string& name, const v1::Tensor& t) {
    LG_ASSIGN_OR_RETURN(TensorDType dtype, FromProtoDType(t.dtype(), name));
    WireTensor w;
    w.name = name;
    w.dtype = dtype;
    w.shape.assign(t.shape().begin(), t.shape().end());
    w.data = t.data();
    return Add(w);
  }

  json Record() const {
    json out = json::object();
    for (const Item& i : items_) {
      out[i.name] = {{"dtype", i.dtype}, {"shape", i.shape}, {"sha256", Sha256Hex(i.bytes)}};
    }
    return out;
  }

  absl::Status Write(const std::filesystem::path& dir) const {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) return absl::InternalError(absl::StrCat(dir.string(), ": ", ec.message()));
    for (const Item& i : items_) {
      std::ofstream f(dir / (Sanitize(i.name) + ".bin"), std::ios::binary);
      f.write(i.bytes.data(), static_cast<std::streamsize>(i.bytes.size()));
      if (!f) return absl::InternalError(absl::StrCat("cannot write ", dir.string()));
    }
    return absl::OkStatus();
  }

 private:
  struct Item {
    std::string name, dtype;
    std::vector<int64_t> shape;
    std::string bytes;
  };
  std::vector<Item> items_;
};

absl::StatusOr<v1::DType> DTypeOf(const json& name) {
  const std::string n = name.get<std::string>();
  if (n == "F32") return v1::F32;
  if (n == "F16") return v1::F16;
  if (n == "BF16") return v1::BF16;
  return absl::InvalidArgumentError("dtype must be F32, F16 or BF16, got " + n);
}

v1::Tensor I64Tensor(const json& rows) {
  v1::Tensor t;
  t.set_dtype(v1::I64);
  t.add_shape(static_cast<int64_t>(rows.size()));
  t.add_shape(rows.empty() ? 0 : static_cast<int64_t>(rows[0].size()));
  std::string* data = t.mutable_data();
  for (const json& row : rows) {
    for (const json& id : row) {
      const int64_t v = id.get<int64_t>();
      AppendLE(data, &v, 8);
    }
  }
  return t;
}

v1::Tensor F32Literal(const json& lit) {
  v1::Tensor t;
  t.set_dtype(v1::F32);
  for (const json& d : lit["shape"]) t.add_shape(d.get<int64_t>());
  for (const json& v : lit["values"]) {
    const float f = v.get<float>();
    AppendLE(t.mutable_data(), &f, 4);
  }
  return t;
}

void FillInput(const json& spec, const json& c, v1::ModelInput* in) {
  if (spec.contains("texts")) {
    for (const json& t : spec["texts"]) in->add_texts(t.get<std::string>());
  } else {
    *in->mutable_tokens() = I64Tensor(spec["tokens"]);
  }
  if (c.contains("prepend_bos")) in->set_prepend_bos(c["prepend_bos"].get<bool>());
  if (c.contains("padding_side")) {
    in->set_padding_side(c["padding_side"] == "left" ? v1::ModelInput::PADDING_LEFT
                                                     : v1::ModelInput::PADDING_RIGHT);
  }
}

absl::Status FillOptions(const json& c, v1::RunOptions* o) {
  if (c.contains("return_type")) {
    static const std::map<std::string, v1::ReturnType> kTypes = {{"logits", v1::RETURN_LOGITS},
                                                                 {"loss", v1::RETURN_LOSS},
                                                                 {"both", v1::RETURN_BOTH},
                                                                 {"none", v1::RETURN_NONE}};
    auto it = kTypes.find(c["return_type"].get<std::string>());
    if (it == kTypes.end()) return absl::InvalidArgumentError("unknown return_type");
    o->set_return_type(it->second);
  }
  if (c.contains("per_token_loss")) o->set_per_token_loss(c["per_token_loss"].get<bool>());
  if (c.contains("stop_at_layer")) o->set_stop_at_layer(c["stop_at_layer"].get<int32_t>());
  if (c.contains("logits_dtype")) {
    LG_ASSIGN_OR_RETURN(v1::DType d, DTypeOf(c["logits_dtype"]));
    o->set_logits_dtype(d);
  }
  return absl::OkStatus();
}

void FillPositions(const json& p, v1::PosSlice* s) {
  s->Clear();  // present, even when open at both ends
  if (p.contains("start")) s->set_start(p["start"].get<int64_t>());
  if (p.contains("stop")) s->set_stop(p["stop"].get<int64_t>());
}

absl::StatusOr<json> RunRecord(const RunReply& reply, Tensors* tensors) {
  LG_RETURN_IF_ERROR(tensors->AddProto("tokens", reply.header.tokens()));
  if (reply.header.has_attention_mask()) {
    LG_RETURN_IF_ERROR(tensors->AddProto("attention_mask", reply.header.attention_mask()));
  }
  json names = json::array();
  for (const WireTensor& t : reply.tensors) {
    LG_RETURN_IF_ERROR(tensors->Add(t));
    if (t.name != "logits" && t.name != "loss" && t.name != "metric") names.push_back(t.name);
  }
  return json{{"weights_sha256", reply.header.weights_sha256()}, {"cache_names", names}};
}

struct Clients {
  std::unique_ptr<WorkerClient> worker;
  std::unique_ptr<CoordinatorClient> coordinator;
};

absl::StatusOr<json> ModelInfoCase(Clients& cl, const json&, Tensors*) {
  LG_ASSIGN_OR_RETURN(v1::ModelInfo info, cl.worker->GetModelInfo());
  const v1::ModelConfig& c = info.config();
  const v1::WorkerLimits& l = info.limits();
  json hooks = json::array();
  for (const v1::HookInfo& h : info.hooks()) {
    hooks.push_back({{"name", h.name()},
                     {"shape", std::vector<int64_t>(h.shape().begin(), h.shape().end())},
                     {"axes", std::vector<std::string>(h.axes().begin(), h.axes().end())}});
  }
  return json{{"api_version", info.api_version()},
              {"weights_sha256", info.weights_sha256()},
              {"tokenizer_sha256", info.tokenizer_sha256()},
              {"dtype", v1::DType_Name(info.dtype())},
              {"processed", info.processed()},
              {"has_tokenizer", info.has_tokenizer()},
              {"config",
               {{"n_layers", c.n_layers()},
                {"n_heads", c.n_heads()},
                {"d_model", c.d_model()},
                {"d_head", c.d_head()},
                {"d_mlp", c.d_mlp()},
                {"n_ctx", c.n_ctx()},
                {"d_vocab", c.d_vocab()},
                {"eps", F64(c.eps())},
                {"act_fn", c.act_fn()},
                {"bos_token_id", c.bos_token_id()},
                {"eos_token_id", c.eos_token_id()},
                {"attn_only", c.attn_only()}}},
              {"hooks", hooks},
              {"limits",
               {{"max_batch", l.max_batch()},
                {"max_tokens", l.max_tokens()},
                {"max_response_bytes", l.max_response_bytes()},
                {"chunk_bytes", l.chunk_bytes()},
                {"max_queue", l.max_queue()},
                {"max_program_nodes", l.max_program_nodes()},
                {"max_program_bytes", l.max_program_bytes()},
                {"max_einsum_elements", l.max_einsum_elements()}}}};
}

absl::StatusOr<v1::TokenizeResponse> TokenizeOf(Clients& cl, const json& c) {
  v1::TokenizeRequest r;
  for (const json& t : c["texts"]) r.add_texts(t.get<std::string>());
  // Absent: not set, so the worker's default (BOS) applies, as the C++ client leaves it.
  if (c.contains("prepend_bos")) r.set_prepend_bos(c["prepend_bos"].get<bool>());
  return cl.worker->Tokenize(r);
}

absl::StatusOr<json> TokenizeCase(Clients& cl, const json& c, Tensors*) {
  LG_ASSIGN_OR_RETURN(v1::TokenizeResponse resp, TokenizeOf(cl, c));
  json ids = json::array();
  for (const v1::TokenList& t : resp.tokens()) {
    ids.push_back(std::vector<int64_t>(t.ids().begin(), t.ids().end()));
  }
  return json{{"ids", ids}};
}

absl::StatusOr<json> StrTokensCase(Clients& cl, const json& c, Tensors*) {
  LG_ASSIGN_OR_RETURN(v1::TokenizeResponse resp, TokenizeOf(cl, c));
  json strs = json::array();
  for (const v1::TokenList& t : resp.tokens()) {
    strs.push_back(std::vector<std::string>(t.str_tokens().begin(), t.str_tokens().end()));
  }
  return json{{"str_tokens", strs}};
}

absl::StatusOr<json> DetokenizeCase(Clients& cl, const json& c, Tensors*) {
  v1::DetokenizeRequest r;
  for (const json& id : c["ids"]) r.add_ids(id.get<int64_t>());
  LG_ASSIGN_OR_RETURN(v1::DetokenizeResponse resp, cl.worker->Detokenize(r));
  return json{{"text", resp.text()}};
}

absl::StatusOr<json> RunWithCacheCase(Clients& cl, const json& c, Tensors* tensors) {
  v1::RunWithCacheRequest r;
  FillInput(c["input"], c, r.mutable_input());
  LG_RETURN_IF_ERROR(FillOptions(c, r.mutable_options()));
  v1::CacheSpec* cache = r.mutable_cache();
  for (const json& n : c.value("names", json::array())) cache->add_names(n.get<std::string>());
  for (const json& n : c.value("regexes", json::array())) cache->add_regexes(n.get<std::string>());
  if (c.contains("positions")) FillPositions(c["positions"], cache->mutable_positions());
  if (c.contains("remove_batch_dim")) cache->set_remove_batch_dim(c["remove_batch_dim"]);
  if (c.contains("dtype")) {
    LG_ASSIGN_OR_RETURN(v1::DType d, DTypeOf(c["dtype"]));
    cache->set_dtype(d);
  }
  LG_ASSIGN_OR_RETURN(RunReply reply, cl.worker->RunWithCache(r));
  return RunRecord(reply, tensors);
}

absl::StatusOr<json> RunWithInterventionsCase(Clients& cl, const json& c, Tensors* tensors) {
  v1::RunWithInterventionsRequest r;
  FillInput(c["input"], c, r.mutable_input());
  LG_RETURN_IF_ERROR(FillOptions(c, r.mutable_options()));
  for (const json& i : c.value("interventions", json::array())) {
    v1::Intervention* iv = r.add_interventions();
    iv->set_hook(i["hook"].get<std::string>());
    v1::Intervention::Op op;
    if (!v1::Intervention::Op_Parse(absl::AsciiStrToUpper(i["op"].get<std::string>()), &op)) {
      return absl::InvalidArgumentError("unknown intervention op " + i["op"].dump());
    }
    iv->set_op(op);
    if (i.contains("head")) iv->set_head(i["head"].get<int32_t>());
    for (const json& p : i.value("positions", json::array())) iv->add_positions(p.get<int64_t>());
    if (i.contains("value")) *iv->mutable_value() = F32Literal(i["value"]);
    if (i.contains("scale")) iv->set_scale(i["scale"].get<double>());
  }
  if (c.contains("patch_input")) FillInput(c["patch_input"], c, r.mutable_patch_input());
  if (c.contains("metric")) {
    const json& m = c["metric"];
    v1::SearchMetric kind;
    const std::string enum_name =
        "METRIC_" +
        absl::StrReplaceAll(absl::AsciiStrToUpper(m["kind"].get<std::string>()), {{"-", "_"}});
    if (!v1::SearchMetric_Parse(enum_name, &kind)) {
      return absl::InvalidArgumentError("unknown metric " + m["kind"].dump());
    }
    v1::Metric* metric = r.mutable_metric();
    metric->set_kind(kind);
    for (const json& t : m["answer"]) metric->add_answer_tokens(t.get<int64_t>());
    for (const json& t : m.value("wrong", json::array()))
      metric->add_wrong_tokens(t.get<int64_t>());
    if (m.contains("position")) metric->set_position(m["position"].get<int64_t>());
    if (m.contains("per_prompt")) metric->set_per_prompt(m["per_prompt"].get<bool>());
  }
  if (c.contains("names") || c.contains("regexes")) {
    v1::CacheSpec* cache = r.mutable_cache();
    for (const json& n : c.value("names", json::array())) cache->add_names(n.get<std::string>());
    for (const json& n : c.value("regexes", json::array())) {
      cache->add_regexes(n.get<std::string>());
    }
  }
  if (c.contains("programs")) {
    LG_ASSIGN_OR_RETURN(
        std::vector<v1::HookProgram> programs,
        ParseProgramsJson(c["programs"].dump(), "cases.json:" + c["name"].get<std::string>()));
    for (v1::HookProgram& p : programs) *r.add_programs() = std::move(p);
  }
  if (c.contains("gradients")) {
    const json& g = c["gradients"];
    v1::Gradients* grad = r.mutable_gradients();
    for (const json& h : g["hooks"]) grad->add_hooks(h.get<std::string>());
    if (g.contains("saved")) grad->set_saved(g["saved"].get<std::string>());
    if (g.contains("positions")) FillPositions(g["positions"], grad->mutable_positions());
    if (g.contains("dtype")) {
      LG_ASSIGN_OR_RETURN(v1::DType d, DTypeOf(g["dtype"]));
      grad->set_dtype(d);
    }
  }
  LG_ASSIGN_OR_RETURN(RunReply reply, cl.worker->RunWithInterventions(r));
  return RunRecord(reply, tensors);
}

absl::Status StatusOfJob(const v1::JobStatus& st) {
  if (st.state() == v1::JOB_SUCCEEDED) return absl::OkStatus();
  const auto code = st.state() == v1::JOB_CANCELLED
                        ? absl::StatusCode::kCancelled
                        : static_cast<absl::StatusCode>(st.error_code());
  return absl::Status(
      code == absl::StatusCode::kOk ? absl::StatusCode::kUnknown : code,
      absl::StrCat("job ", st.job_id(), " ", JobStateName(st.state()), ": ", st.error()));
}

absl::StatusOr<json> SearchCase(Clients& cl, const json& c, Tensors* tensors) {
  SearchJobRequest r;
  r.model_id = c["model"].get<std::string>();
  r.dataset = c["dataset"].get<std::string>();
  r.method = c["method"].get<std::string>();
  // Absent metric / ablation: what `lensgrid search` sends (the dataset's default; zero).
  r.metric = c.contains("metric") ? c["metric"].get<std::string>() : DefaultMetric(r.dataset);
  r.ablation = c.contains("ablation") ? c["ablation"].get<std::string>() : "zero";
  r.n_prompts = c["n_prompts"].get<int64_t>();
  r.seed = c["seed"].get<uint64_t>();
  r.seq_len = c["seq_len"].get<int64_t>();
  r.prompts_per_shard = c["prompts_per_shard"].get<int64_t>();
  r.components_per_shard = c["components_per_shard"].get<int64_t>();
  LG_ASSIGN_OR_RETURN(v1::JobSpec spec, MakeSearchJobSpec(r));
  LG_ASSIGN_OR_RETURN(v1::SubmitJobResponse job, cl.coordinator->Submit(spec));
  LG_ASSIGN_OR_RETURN(v1::JobStatus final_status,
                      cl.coordinator->Watch(job.job_id(), [](const v1::JobEvent&) {}));
  LG_RETURN_IF_ERROR(StatusOfJob(final_status));
  LG_ASSIGN_OR_RETURN(JobResult result, cl.coordinator->GetResult(job.job_id()));
  for (const WireTensor& t : result.tensors) LG_RETURN_IF_ERROR(tensors->Add(t));
  const v1::JobStatus& st = result.header.job();
  // As the coordinator echoes them: it writes unset defaults in (WithSpecDefaults).
  const v1::SearchMetric metric = st.spec().metric();
  const v1::Ablation ablation = st.spec().ablation();
  json grids = json::array();
  for (const v1::ResultGrid& g : result.header.grids()) {
    grids.push_back({{"name", g.name()},
                     {"axes", std::vector<std::string>(g.axes().begin(), g.axes().end())},
                     {"shape", std::vector<int64_t>(g.shape().begin(), g.shape().end())}});
  }
  return json{
      {"state", JobStateName(st.state())},
      {"method", st.method()},
      {"model_id", st.model_id()},
      {"metric", v1::SearchMetric_Name(metric)},
      {"ablation", v1::Ablation_Name(ablation)},
      {"n_prompts", st.n_prompts()},
      {"n_pos", st.n_pos()},
      {"shards_total", st.shards_total()},
      {"first_prompt_tokens",
       std::vector<int64_t>(st.first_prompt().tokens().begin(), st.first_prompt().tokens().end())},
      {"first_prompt_str_tokens", std::vector<std::string>(st.first_prompt_str_tokens().begin(),
                                                           st.first_prompt_str_tokens().end())},
      {"grids", grids}};
}

using CaseFn = absl::StatusOr<json> (*)(Clients&, const json&, Tensors*);

const std::map<std::string, CaseFn>& Calls() {
  static const auto* calls =
      new std::map<std::string, CaseFn>{{"model_info", &ModelInfoCase},
                                        {"tokenize", &TokenizeCase},
                                        {"to_str_tokens", &StrTokensCase},
                                        {"detokenize", &DetokenizeCase},
                                        {"run_with_cache", &RunWithCacheCase},
                                        {"run_with_interventions", &RunWithInterventionsCase},
                                        {"search", &SearchCase}};
  return *calls;
}

json RunCase(Clients& cl, const json& c, const std::filesystem::path& out) {
  const std::string name = c["name"].get<std::string>();
  Tensors tensors;
  auto it = Calls().find(c["call"].get<std::string>());
  if (it == Calls().end()) {
    return {{"case", name}, {"ok", false}, {"code", "UNSUPPORTED"}, {"message", "unknown call"}};
  }
  absl::StatusOr<json> values;
  try {
    values = it->second(cl, c, &tensors);
  } catch (const std::exception& e) {  // a case this runner misread (nlohmann::json)
    return {{"case", name}, {"ok", false}, {"code", "RUNNER_ERROR"}, {"message", e.what()}};
  }
  if (!values.ok()) {
    return {{"case", name},
            {"ok", false},
            {"code", absl::StatusCodeToString(values.status().code())},
            {"message", std::string(values.status().message())}};
  }
  if (absl::Status s = tensors.Write(out / name); !s.ok()) {
    return {{"case", name}, {"ok", false}, {"code", "RUNNER_ERROR"}, {"message", s.ToString()}};
  }
  return {{"case", name}, {"ok", true}, {"values", *values}, {"tensors", tensors.Record()}};
}

int Main(int argc, char** argv) {
  std::string worker, coordinator, cases_path, out;
  std::set<std::string> only;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) {
      std::cerr << "conformance_cpp_runner: " << a << " needs a value\n";
      return 2;
    }
    const std::string v = argv[++i];
    if (a == "--worker") {
      worker = v;
    } else if (a == "--coordinator") {
      coordinator = v;
    } else if (a == "--cases") {
      cases_path = v;
    } else if (a == "--out") {
      out = v;
    } else if (a == "--case") {
      only.insert(v);
    } else {
      std::cerr << "conformance_cpp_runner: unknown argument " << a << "\n";
      return 2;
    }
  }
  if (worker.empty() || coordinator.empty() || cases_path.empty() || out.empty()) {
    std::cerr << "usage: conformance_cpp_runner --worker ADDR --coordinator ADDR --cases FILE "
                 "--out DIR [--case NAME]...\n";
    return 2;
  }
  json cases;
  try {
    std::ifstream f(cases_path);
    cases = json::parse(f)["cases"];
  } catch (const std::exception& e) {
    std::cerr << "conformance_cpp_runner: " << cases_path << ": " << e.what() << "\n";
    return 2;
  }
  Clients cl;
  WorkerClient::Options wopt;
  wopt.timeout = absl::Seconds(120);
  auto w = WorkerClient::Connect(worker, wopt);
  CoordinatorClient::Options copt;
  copt.timeout = absl::Seconds(120);
  auto co = CoordinatorClient::Connect(coordinator, copt);
  if (!w.ok() || !co.ok()) {
    std::cerr << "conformance_cpp_runner: " << (w.ok() ? co.status() : w.status()) << "\n";
    return 1;
  }
  cl.worker = std::move(*w);
  cl.coordinator = std::move(*co);
  std::filesystem::create_directories(out);
  for (const json& c : cases) {
    const std::string name = c["name"].get<std::string>();
    if (!only.empty() && only.count(name) == 0) continue;
    json record = RunCase(cl, c, out);
    std::ofstream f(std::filesystem::path(out) / (name + ".json"));
    f << record.dump(1) << "\n";
    if (!f) {
      std::cerr << "conformance_cpp_runner: cannot write " << out << "/" << name << ".json\n";
      return 1;
    }
    std::cerr << "cpp_runner: " << name << ": "
              << (record["ok"].get<bool>() ? std::string("ok") : record["code"].get<std::string>())
              << "\n";
  }
  return 0;
}

}  // namespace
}  // namespace lensgrid

int main(int argc, char** argv) { return lensgrid::Main(argc, argv); }
