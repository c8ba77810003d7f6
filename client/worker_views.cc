#include "client/worker_views.h"

#include <algorithm>
#include <cstring>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/worker_client.h"
#include "common/dtype.h"
#include "common/status_macros.h"

namespace lensgrid {
namespace {

float LoadLittleEndianF32(const char* p) {
  const uint32_t u = static_cast<uint32_t>(static_cast<uint8_t>(p[0])) |
                     static_cast<uint32_t>(static_cast<uint8_t>(p[1])) << 8 |
                     static_cast<uint32_t>(static_cast<uint8_t>(p[2])) << 16 |
                     static_cast<uint32_t>(static_cast<uint8_t>(p[3])) << 24;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

std::string PatternHook(int layer) { return absl::StrCat("blocks.", layer, ".attn.hook_pattern"); }

size_t ViewLength(const std::vector<int64_t>& token_ids) {
  return std::min(token_ids.size(), kMaxAttentionTokens);
}

// "w0 (gpt2, 3f2a9c1b04d5, alive, 127.0.0.1:7070)", for errors.
std::string DescribeWorkers(const std::vector<v1::WorkerInfo>& workers) {
  if (workers.empty()) return "no worker is registered";
  std::vector<std::string> parts;
  for (const v1::WorkerInfo& w : workers) {
    if (parts.size() == 5) {
      parts.push_back(absl::StrCat("and ", workers.size() - 5, " more"));
      break;
    }
    parts.push_back(absl::StrCat(
        w.name(), " (", w.model_id(), ", ", w.weights_sha256().substr(0, 12), ", ",
        w.alive() ? "alive" : "lost", ", ", w.address().empty() ? "no address" : w.address(), ")"));
  }
  return absl::StrCat("workers: ", absl::StrJoin(parts, "; "));
}

}  // namespace

std::vector<v1::WorkerInfo> PickViewWorkers(const std::vector<v1::WorkerInfo>& workers,
                                            const std::string& model_id,
                                            const std::string& weights_sha256) {
  std::vector<v1::WorkerInfo> picked;
  for (const v1::WorkerInfo& w : workers) {
    if (w.alive() && !w.address().empty() && w.model_id() == model_id &&
        (weights_sha256.empty() || w.weights_sha256() == weights_sha256)) {
      picked.push_back(w);
    }
  }
  std::stable_sort(
      picked.begin(), picked.end(),
      [](const v1::WorkerInfo& a, const v1::WorkerInfo& b) { return a.leases() < b.leases(); });
  return picked;
}

std::vector<std::string> PatternHooks(const HeadList& heads) {
  std::vector<std::string> hooks;
  for (const auto& [layer, head] : heads) {
    std::string hook = PatternHook(layer);
    if (std::find(hooks.begin(), hooks.end(), hook) == hooks.end()) hooks.push_back(hook);
  }
  return hooks;
}

v1::RunWithCacheRequest PatternRequest(const v1::InlinePrompt& prompt, const HeadList& heads,
                                       const std::string& weights_sha256) {
  const std::vector<int64_t> ids(prompt.tokens().begin(), prompt.tokens().end());
  const size_t n = ViewLength(ids);
  v1::RunWithCacheRequest request;
  v1::Tensor* tokens = request.mutable_input()->mutable_tokens();
  tokens->set_dtype(v1::I64);
  tokens->add_shape(1);
  tokens->add_shape(static_cast<int64_t>(n));
  std::string* data = tokens->mutable_data();
  data->reserve(n * 8);
  for (size_t i = 0; i < n; ++i) {
    const uint64_t u = static_cast<uint64_t>(ids[i]);
    for (int b = 0; b < 8; ++b) data->push_back(static_cast<char>((u >> (8 * b)) & 0xff));
  }
  request.mutable_options()->set_return_type(v1::RETURN_NONE);
  for (const std::string& hook : PatternHooks(heads)) request.mutable_cache()->add_names(hook);
  request.mutable_cache()->set_remove_batch_dim(true);
  request.mutable_cache()->set_dtype(v1::F32);
  request.set_expected_weights_sha256(weights_sha256);
  return request;
}

absl::StatusOr<std::vector<AttentionView>> AttentionViewsFromTensors(
    const std::vector<WireTensor>& tensors, const HeadList& heads,
    const std::vector<int64_t>& token_ids, const std::vector<std::string>& str_tokens) {
  const size_t n = ViewLength(token_ids);
  std::vector<std::string> labels;
  for (size_t i = 0; i < n; ++i) {
    labels.push_back(str_tokens.size() == token_ids.size() ? str_tokens[i]
                                                           : absl::StrCat("#", token_ids[i]));
  }
  std::vector<AttentionView> views;
  for (const auto& [layer, head] : heads) {
    const std::string hook = PatternHook(layer);
    const auto t = std::find_if(tensors.begin(), tensors.end(),
                                [&](const WireTensor& w) { return w.name == hook; });
    if (t == tensors.end()) {
      return absl::InternalError(absl::StrCat("the worker's reply has no tensor \"", hook, "\""));
    }
    if (DTypeName(t->dtype) != "F32") {
      return absl::InternalError(
          absl::StrCat("\"", hook, "\" is ", DTypeName(t->dtype), ", expected F32"));
    }
    std::vector<int64_t> shape = t->shape;
    if (shape.size() == 4 && shape[0] == 1) shape.erase(shape.begin());
    const int64_t q = static_cast<int64_t>(n);
    if (shape.size() != 3 || shape[0] <= 0 || shape[1] != q || shape[2] != q) {
      return absl::InternalError(absl::StrCat("\"", hook, "\" has shape [",
                                              absl::StrJoin(t->shape, ", "),
                                              "], expected [n_heads, ", q, ", ", q, "]"));
    }
    if (head < 0 || head >= shape[0]) {
      return absl::InternalError(
          absl::StrCat("\"", hook, "\" has ", shape[0], " heads; head ", head, " is not one"));
    }
    const size_t per_head = static_cast<size_t>(q * q);
    if (t->data.size() != static_cast<size_t>(shape[0]) * per_head * 4) {
      return absl::InternalError(absl::StrCat("\"", hook, "\" has ", t->data.size(),
                                              " bytes, expected ", shape[0] * per_head * 4));
    }
    AttentionView v{hook, layer, head, labels, {}};
    v.pattern.resize(per_head);
    const char* base = t->data.data() + static_cast<size_t>(head) * per_head * 4;
    for (size_t i = 0; i < per_head; ++i) v.pattern[i] = LoadLittleEndianF32(base + 4 * i);
    views.push_back(std::move(v));
  }
  return views;
}

absl::StatusOr<WorkerViews> ViewsFromJobWorkers(CoordinatorClient& coordinator,
                                                const v1::JobStatus& status, const HeadList& heads,
                                                absl::Duration timeout) {
  WorkerViews out;
  if (heads.empty()) return out;
  const v1::InlinePrompt& prompt = status.first_prompt();
  if (prompt.tokens().empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", status.job_id(), "'s status has no first prompt to show"));
  }
  const std::string& model_id =
      status.spec().model_id().empty() ? status.model_id() : status.spec().model_id();
  const std::string& sha = status.spec().weights_sha256();
  LG_ASSIGN_OR_RETURN(std::vector<v1::WorkerInfo> workers, coordinator.ListWorkers());
  const std::vector<v1::WorkerInfo> candidates = PickViewWorkers(workers, model_id, sha);
  if (candidates.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("no live worker with a Worker API address serves model \"", model_id, "\"",
                     sha.empty() ? "" : absl::StrCat(" with weights ", sha.substr(0, 12)), "; ",
                     DescribeWorkers(workers)));
  }
  const v1::RunWithCacheRequest request = PatternRequest(prompt, heads, sha);
  const std::vector<int64_t> ids(prompt.tokens().begin(), prompt.tokens().end());
  const std::vector<std::string> str_tokens(status.first_prompt_str_tokens().begin(),
                                            status.first_prompt_str_tokens().end());
  absl::Status last;
  for (size_t i = 0; i < candidates.size() && i < 3; ++i) {
    const v1::WorkerInfo& w = candidates[i];
    const std::string who = absl::StrCat("worker ", w.name(), " at ", w.address());
    WorkerClient::Options options;
    options.timeout = timeout;
    options.transport = coordinator.transport();  // the same CA and token serve its workers
    absl::StatusOr<std::unique_ptr<WorkerClient>> client =
        WorkerClient::Connect(w.address(), options);
    absl::StatusOr<v1::ModelInfo> info =
        client.ok() ? (*client)->GetModelInfo() : absl::StatusOr<v1::ModelInfo>(client.status());
    absl::StatusOr<RunReply> reply =
        info.ok() ? (*client)->RunWithCache(request) : absl::StatusOr<RunReply>(info.status());
    absl::StatusOr<std::vector<AttentionView>> views =
        reply.ok() ? AttentionViewsFromTensors(reply->tensors, heads, ids, str_tokens)
                   : absl::StatusOr<std::vector<AttentionView>>(reply.status());
    if (views.ok()) {
      out.views = std::move(*views);
      out.processed = info->processed();
      out.worker = absl::StrCat(w.name(), " at ", w.address());
      return out;
    }
    last = absl::Status(views.status().code(), absl::StrCat(who, ": ", views.status().message()));
  }
  return last;
}

absl::StatusOr<WorkerViews> ViewsFromJobWorkers(const std::string& coordinator_address,
                                                const ClientTransport& transport,
                                                const v1::JobStatus& status, const HeadList& heads,
                                                absl::Duration timeout) {
  if (heads.empty()) return WorkerViews();
  CoordinatorClient::Options options;
  options.timeout = timeout;
  options.transport = transport;
  LG_ASSIGN_OR_RETURN(std::unique_ptr<CoordinatorClient> coordinator,
                      CoordinatorClient::Connect(coordinator_address, options));
  return ViewsFromJobWorkers(*coordinator, status, heads, timeout);
}

}  // namespace lensgrid
