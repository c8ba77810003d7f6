// GetWeights and Generate through the real WorkerCore behind the gRPC service,
// over an in-process channel (no sockets): weights equal
// HookedTransformer::Weight, chunked like a run's tensors; generation streams
// one message per step with the library's tokens; bad fields are
// INVALID_ARGUMENT naming them; cancellation stops generation.
#include "worker/core/worker_core.h"

#include <grpcpp/grpcpp.h>
#include <torch/torch.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "client/attached_shared_memory.h"
#include "client/worker_client.h"
#include "common/worker_api_version.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/worker/model/test_util.h"
#include "worker/model/generate.h"
#include "worker/model/hooked_transformer.h"
#include "worker/model/weights.h"
#include "worker/worker_service.h"

namespace lensgrid {
namespace {

using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

constexpr size_t kChunkBytes = 1000;

// A model with MLPs and LayerNorms (n_ctx 24, vocab 50) saved as a checkpoint.
const std::string& MlpModelDir() {
  static const std::string dir = [] {
    std::string d = ::lensgrid::testing::MakeTempDir("worker_core_mlp");
    HookedTransformerConfig cfg = ::lensgrid::testing::TestConfig(2, 4, 32, 128, 24, 50);
    GPT2Weights w = RandomWeights(cfg, 3);
    for (auto& b : w.blocks) b.ln1.b = 0.1 * torch::randn_like(b.ln1.b);
    EXPECT_TRUE(SaveHfCheckpoint(w, cfg, d, /*f16=*/false).ok());
    return d;
  }();
  return dir;
}

std::string TinyModelDir() { return ::lensgrid::testing::SourceDir() + "/models/lensgrid-tiny"; }

// One WorkerCore served in process (over TCP loopback with `tcp`: shared
// memory needs a peer known to be on this host).
class Served {
 public:
  explicit Served(WorkerOptions options, bool tcp = false) {
    options.chunk_bytes = kChunkBytes;
    auto core = WorkerCore::Load(options);
    EXPECT_TRUE(core.ok()) << core.status();
    core_ = std::move(*core);
    executor_ = std::make_unique<Executor>(Executor::Options{.threads = 1, .max_pending = 8});
    service_ = std::make_unique<WorkerService>(
        executor_.get(), WorkerService::Options{.chunk_bytes = kChunkBytes, .log_requests = false});
    service_->SetBackend(core_);
    grpc::ServerBuilder builder;
    int port = 0;
    if (tcp) builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    channel_ = tcp ? grpc::CreateChannel(absl::StrCat("127.0.0.1:", port),
                                         grpc::InsecureChannelCredentials())
                   : server_->InProcessChannel(grpc::ChannelArguments());
    client_ = std::make_unique<WorkerClient>(channel_, WorkerClient::Options());
  }
  ~Served() {
    server_->Shutdown();
    executor_.reset();
  }
  WorkerClient& client() { return *client_; }
  // A client that never asks for inline tensors (as one older than 2.2).
  std::unique_ptr<WorkerClient> ChunkedClient() {
    WorkerClient::Options options;
    options.inline_tensors = false;
    return std::make_unique<WorkerClient>(channel_, options);
  }
  const WorkerCore& core() const { return *core_; }
  std::unique_ptr<v1::Worker::Stub> Stub() { return v1::Worker::NewStub(channel_); }

 private:
  std::shared_ptr<WorkerCore> core_;
  std::unique_ptr<Executor> executor_;
  std::unique_ptr<WorkerService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<WorkerClient> client_;
};

WorkerOptions Options(const std::string& dir, bool no_processing) {
  WorkerOptions o;
  o.model_dir = dir;
  o.no_processing = no_processing;
  return o;
}

std::shared_ptr<HookedTransformer> LoadModel(const std::string& dir, bool no_processing) {
  LoadOptions load;
  if (no_processing) load.processing = ProcessingOptions::None();
  auto model = HookedTransformer::FromPretrained(dir, load);
  EXPECT_TRUE(model.ok()) << model.status();
  return *model;
}

torch::Tensor ToTorch(const WireTensor& w) {
  const auto type = w.dtype == TensorDType::kF16    ? torch::kFloat16
                    : w.dtype == TensorDType::kBF16 ? torch::kBFloat16
                                                    : torch::kFloat32;
  torch::Tensor t = torch::empty(w.shape, type);
  EXPECT_EQ(static_cast<size_t>(t.nbytes()), w.data.size()) << w.name;
  std::memcpy(t.data_ptr(), w.data.data(), std::min<size_t>(t.nbytes(), w.data.size()));
  return t;
}

std::vector<std::string> Names(const RunReply& reply) {
  std::vector<std::string> names;
  for (const auto& meta : reply.header.tensors()) names.push_back(meta.name());
  return names;
}

TEST(WorkerCoreTest, ModelInfoHasTheApiVersion) {
  Served served(Options(TinyModelDir(), false));
  auto info = served.client().GetModelInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->api_version(), kWorkerApiVersion);
  EXPECT_EQ(info->api_version(), kWorkerApiVersion);
}

TEST(WorkerCoreTest, EveryWeightEqualsWeight) {
  Served served(Options(MlpModelDir(), /*no_processing=*/true));
  auto model = LoadModel(MlpModelDir(), true);
  auto reply = served.client().GetWeights(v1::GetWeightsRequest());
  ASSERT_TRUE(reply.ok()) << reply.status();
  const std::vector<std::string> all = {
      "W_E",   "W_pos", "W_Q",  "W_K",  "W_V",        "W_O",       "b_Q",   "b_K",
      "b_V",   "b_O",   "W_in", "b_in", "W_out",      "b_out",     "ln1.w", "ln1.b",
      "ln2.w", "ln2.b", "W_U",  "b_U",  "ln_final.w", "ln_final.b"};
  EXPECT_THAT(Names(*reply), ElementsAreArray(all));
  ASSERT_EQ(reply->tensors.size(), all.size());
  for (const WireTensor& w : reply->tensors) {
    torch::Tensor expected = model->Weight(w.name).value();
    torch::Tensor got = ToTorch(w);
    ASSERT_EQ(got.sizes(), expected.sizes()) << w.name;
    EXPECT_TRUE(torch::equal(got, expected)) << w.name;
  }
  // Stacked per-block names have [n_layers, ...] as TransformerLens's model.W_Q.
  EXPECT_THAT(reply->Find("W_Q")->shape, ElementsAreArray({2, 4, 32, 8}));
  EXPECT_THAT(reply->Find("ln1.b")->shape, ElementsAreArray({2, 32}));
  EXPECT_TRUE(torch::equal(ToTorch(*reply->Find("ln1.b")),
                           torch::stack({model->Weight("blocks.0.ln1.b").value(),
                                         model->Weight("blocks.1.ln1.b").value()})));
  EXPECT_EQ(reply->header.weights_sha256(), served.core().Info().weights_sha256());
}

TEST(WorkerCoreTest, WeightsTheModelLacksAreSkippedUnlessNamed) {
  // The embedded model is attention-only, and processing folds its LayerNorms.
  Served served(Options(TinyModelDir(), false));
  auto reply = served.client().GetWeights(v1::GetWeightsRequest());
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_THAT(Names(*reply), ElementsAreArray({"W_E", "W_pos", "W_Q", "W_K", "W_V", "W_O", "b_Q",
                                               "b_K", "b_V", "b_O", "W_U", "b_U"}));
  v1::GetWeightsRequest named;
  named.add_names("blocks.0.ln1.w");
  auto folded = served.client().GetWeights(named);
  EXPECT_EQ(folded.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(folded.status().message(), HasSubstr("names[0]"));
}

TEST(WorkerCoreTest, NamedWeightsInTheAskedDtypeAndBigOnesChunked) {
  Served served(Options(MlpModelDir(), true));
  auto model = LoadModel(MlpModelDir(), true);
  v1::GetWeightsRequest request;
  request.add_names("W_E");  // [50, 32]: 3200 bytes in F16, 4 chunks of <= 1000
  request.add_names("blocks.-1.attn.W_O");
  request.set_dtype(v1::F16);
  auto stub = served.Stub();
  grpc::ClientContext ctx;
  auto reader = stub->GetWeights(&ctx, request);
  v1::RunResponse response;
  int headers = 0, w_e_chunks = 0;
  while (reader->Read(&response)) {
    if (response.has_header()) ++headers;
    if (response.has_chunk()) {
      EXPECT_LE(response.chunk().data().size(), kChunkBytes);
      if (response.chunk().name() == "W_E") ++w_e_chunks;
    }
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(headers, 1);
  EXPECT_EQ(w_e_chunks, 4);

  auto reply = served.client().GetWeights(request);
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_THAT(Names(*reply), ElementsAreArray({"W_E", "blocks.-1.attn.W_O"}));
  for (const WireTensor& w : reply->tensors) {
    EXPECT_EQ(w.dtype, TensorDType::kF16);
    EXPECT_TRUE(torch::equal(ToTorch(w), model->Weight(w.name).value().to(torch::kFloat16)))
        << w.name;
  }
}

TEST(WorkerCoreTest, BadWeightRequestsSayWhatWasWrong) {
  WorkerOptions options = Options(MlpModelDir(), true);
  options.max_response_bytes = 8000;  // W_E (6400 bytes) fits, W_E + W_pos not
  Served served(options);
  auto expect = [&](const v1::GetWeightsRequest& r, absl::StatusCode code, const std::string& why) {
    auto reply = served.client().GetWeights(r);
    EXPECT_EQ(reply.status().code(), code) << why << ": " << reply.status();
    EXPECT_THAT(reply.status().message(), HasSubstr(why));
  };
  v1::GetWeightsRequest r;
  r.add_names("W_E");
  r.add_names("W_X");
  expect(r, absl::StatusCode::kNotFound, "names[1]: unknown weight 'W_X'");
  r.set_names(1, "blocks.7.attn.W_Q");
  expect(r, absl::StatusCode::kNotFound, "layers 0 to 1");
  r.set_names(1, "W_E");
  expect(r, absl::StatusCode::kInvalidArgument, "names[1] repeats names[0]");
  r.set_names(1, std::string(10000, 'x'));
  expect(r, absl::StatusCode::kInvalidArgument, "too long");
  r.clear_names();
  r.set_dtype(v1::I64);
  expect(r, absl::StatusCode::kInvalidArgument, "dtype");
  r.set_dtype(v1::F32);
  expect(r, absl::StatusCode::kResourceExhausted, "--max-response-bytes 8000");
}

v1::GenerateRequest Prompt(std::vector<int64_t> ids, int max_new_tokens) {
  v1::GenerateRequest r;
  v1::Tensor* t = r.mutable_input()->mutable_tokens();
  t->set_dtype(v1::I64);
  t->add_shape(static_cast<int64_t>(ids.size()));
  t->set_data(reinterpret_cast<const char*>(ids.data()), ids.size() * sizeof(int64_t));
  r.set_max_new_tokens(max_new_tokens);
  return r;
}

TEST(WorkerCoreTest, GenerateStreamsOneMessagePerStepWithTheLibrarysTokens) {
  Served served(Options(TinyModelDir(), false));
  auto model = LoadModel(TinyModelDir(), false);
  const std::vector<int64_t> prompt = {306, 5, 7, 11};
  int seen = 0;
  auto reply = served.client().Generate(Prompt(prompt, 6), [&](const v1::GenerateResponse& m) {
    EXPECT_EQ(m.step(), seen++);
    return true;
  });
  ASSERT_TRUE(reply.ok()) << reply.status();
  ASSERT_EQ(reply->steps.size(), 6u);
  EXPECT_EQ(seen, 6);
  EXPECT_THAT(reply->prompt_tokens.shape(), ElementsAreArray({1, 4}));
  for (const auto& step : reply->steps) {
    EXPECT_FALSE(step.has_prompt_tokens());
    EXPECT_EQ(step.tokens_size(), 1);
    EXPECT_EQ(step.texts_size(), 1);  // the embedded model has a tokenizer
    EXPECT_EQ(step.finished_size(), 1);
  }
  GenerateOptions g;
  g.max_new_tokens = 6;
  auto expected = Generate(*model, LeftPadded({prompt}, 306), g);
  ASSERT_TRUE(expected.ok()) << expected.status();
  torch::Tensor row = expected->new_tokens[0].contiguous();
  EXPECT_THAT(reply->Tokens(0),
              ElementsAreArray(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + row.numel()));

  // Texts of different lengths are left-padded; sampling with a seed repeats.
  v1::GenerateRequest texts;
  texts.mutable_input()->add_texts("the cat");
  texts.mutable_input()->add_texts("a");
  texts.set_max_new_tokens(5);
  texts.set_temperature(1.0);
  texts.set_top_p(0.9);
  texts.set_seed(7);
  auto first = served.client().Generate(texts);
  auto again = served.client().Generate(texts);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(first->steps.size(), 5u);
  EXPECT_EQ(first->prompt_tokens.shape(0), 2);
  EXPECT_EQ(first->Tokens(0), again->Tokens(0));
  EXPECT_EQ(first->Tokens(1), again->Tokens(1));
}

TEST(WorkerCoreTest, BadGenerateFieldsAreInvalidArgumentNamingThem) {
  WorkerOptions options = Options(TinyModelDir(), false);
  options.max_tokens = 100;
  Served served(options);
  auto expect = [&](const v1::GenerateRequest& r, absl::StatusCode code, const std::string& why) {
    auto reply = served.client().Generate(r);
    EXPECT_EQ(reply.status().code(), code) << why << ": " << reply.status();
    EXPECT_THAT(reply.status().message(), HasSubstr(why));
  };
  const std::vector<int64_t> ids = {306, 5};
  expect(Prompt(ids, 0), absl::StatusCode::kInvalidArgument, "max_new_tokens");
  expect(Prompt(ids, -4), absl::StatusCode::kInvalidArgument, "max_new_tokens");
  v1::GenerateRequest r = Prompt(ids, 3);
  r.set_temperature(-0.5);
  expect(r, absl::StatusCode::kInvalidArgument, "temperature");
  r.set_temperature(std::numeric_limits<double>::infinity());
  expect(r, absl::StatusCode::kInvalidArgument, "temperature");
  r = Prompt(ids, 3);
  r.set_top_p(1.5);
  expect(r, absl::StatusCode::kInvalidArgument, "top_p");
  r = Prompt(ids, 3);
  r.set_top_k(-1);
  expect(r, absl::StatusCode::kInvalidArgument, "top_k");
  // n_ctx is 64: 2 + 63 tokens do not fit.
  expect(Prompt(ids, 63), absl::StatusCode::kInvalidArgument, "n_ctx (64)");
  // --max-tokens 100: 2 rows x (2 + 49) tokens are over it.
  r = Prompt(ids, 49);
  r.mutable_input()->mutable_tokens()->set_data(r.input().tokens().data() +
                                                r.input().tokens().data());
  r.mutable_input()->mutable_tokens()->clear_shape();
  r.mutable_input()->mutable_tokens()->add_shape(2);
  r.mutable_input()->mutable_tokens()->add_shape(2);
  expect(r, absl::StatusCode::kResourceExhausted, "--max-tokens (100)");
  expect(Prompt({306, 999}, 2), absl::StatusCode::kInvalidArgument, "outside the vocabulary");
  r = Prompt(ids, 2);
  r.set_expected_weights_sha256("beef");
  expect(r, absl::StatusCode::kFailedPrecondition, "weights mismatch");
}

// Collects what WorkerCore::Generate sends.
class Collect : public GenerateSink {
 public:
  void Hold(std::shared_ptr<const void> hold) override { hold_ = std::move(hold); }
  void Send(v1::GenerateResponse message) override { messages.push_back(std::move(message)); }
  std::vector<v1::GenerateResponse> messages;

 private:
  std::shared_ptr<const void> hold_;
};

TEST(WorkerCoreTest, GenerateStopsWhenCancelled) {
  auto core = WorkerCore::Load(Options(TinyModelDir(), false));
  ASSERT_TRUE(core.ok()) << core.status();
  Collect sink;
  // The caller goes away once two steps have been sent.
  absl::Status status = (*core)->Generate(
      Prompt({306, 5}, 40), [&] { return sink.messages.size() >= 2; }, &sink);
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled) << status;
  EXPECT_EQ(sink.messages.size(), 2u);

  // Through the service: the client stops reading after two messages.
  Served served(Options(TinyModelDir(), false));
  int seen = 0;
  auto reply = served.client().Generate(Prompt({306, 5}, 40),
                                        [&](const v1::GenerateResponse&) { return ++seen < 2; });
  EXPECT_EQ(reply.status().code(), absl::StatusCode::kCancelled) << reply.status();
  // The worker still serves.
  EXPECT_TRUE(served.client().Generate(Prompt({306, 5}, 2)).ok());
}

}  // namespace
}  // namespace lensgrid

namespace lensgrid {
namespace {

// An I64 [batch, pos] token tensor (the MLP model's vocabulary is 50).
v1::Tensor TokenIds(const std::vector<std::vector<int64_t>>& rows) {
  v1::Tensor t;
  t.set_dtype(v1::I64);
  t.add_shape(static_cast<int64_t>(rows.size()));
  t.add_shape(static_cast<int64_t>(rows[0].size()));
  std::string data;
  for (const auto& row : rows) {
    data.append(reinterpret_cast<const char*>(row.data()), row.size() * sizeof(int64_t));
  }
  t.set_data(data);
  return t;
}

// Every tensor of a shared-memory reply, bit for bit the streamed reply's.
void ExpectSameBytes(const RunReply& streamed, const RunReply& shared,
                     const AttachedSharedMemory& region, const std::string& what) {
  EXPECT_FALSE(streamed.header.in_shared_memory()) << what;
  EXPECT_TRUE(shared.header.in_shared_memory()) << what;
  EXPECT_EQ(Names(streamed), Names(shared)) << what;
  absl::StatusOr<std::vector<TensorView>> views = region.Views(shared.header);
  ASSERT_TRUE(views.ok()) << what << ": " << views.status();
  ASSERT_EQ(views->size(), streamed.tensors.size()) << what;
  for (size_t i = 0; i < views->size(); ++i) {
    const TensorView& v = (*views)[i];
    const WireTensor& s = streamed.tensors[i];
    EXPECT_EQ(v.name, s.name) << what;
    EXPECT_EQ(v.dtype, s.dtype) << what << " " << s.name;
    EXPECT_EQ(v.shape, s.shape) << what << " " << s.name;
    EXPECT_TRUE(v.bytes.size() == s.data.size() &&
                std::memcmp(v.bytes.data(), s.data.data(), s.data.size()) == 0)
        << what << ": " << s.name << " differs";
  }
}

TEST(WorkerCoreTest, SharedMemoryRepliesEqualStreamedOnesBitForBit) {
  Served served(Options(MlpModelDir(), false), /*tcp=*/true);
  auto region = AttachedSharedMemory::Create(&served.client(), 8 << 20);
  ASSERT_TRUE(region.ok()) << region.status();

  for (v1::DType dtype : {v1::F32, v1::F16, v1::BF16}) {
    v1::RunWithCacheRequest request;
    *request.mutable_input()->mutable_tokens() =
        TokenIds({{1, 2, 3, 4, 5, 6}, {7, 8, 9, 10, 11, 12}});
    request.mutable_options()->set_per_token_loss(true);
    request.mutable_options()->set_return_type(v1::RETURN_BOTH);
    request.mutable_cache()->set_dtype(dtype);  // every hook
    absl::StatusOr<RunReply> streamed = served.client().RunWithCache(request);
    ASSERT_TRUE(streamed.ok()) << streamed.status();
    *request.mutable_options()->mutable_shared_memory() = (*region)->Target(64);
    absl::StatusOr<RunReply> shared = served.client().RunWithCache(request);
    ASSERT_TRUE(shared.ok()) << shared.status();
    ExpectSameBytes(*streamed, *shared, **region, v1::DType_Name(dtype));
  }

  v1::RunWithInterventionsRequest edit;
  *edit.mutable_input()->mutable_tokens() = TokenIds({{3, 1, 4, 1, 5, 9, 2, 6}});
  v1::Intervention* zero = edit.add_interventions();
  zero->set_hook("blocks.0.attn.hook_z");
  zero->set_head(1);
  zero->set_op(v1::Intervention::ZERO);
  edit.mutable_cache()->add_regexes("resid");
  absl::StatusOr<RunReply> streamed_edit = served.client().RunWithInterventions(edit);
  ASSERT_TRUE(streamed_edit.ok()) << streamed_edit.status();
  *edit.mutable_options()->mutable_shared_memory() = (*region)->Target();
  absl::StatusOr<RunReply> shared_edit = served.client().RunWithInterventions(edit);
  ASSERT_TRUE(shared_edit.ok()) << shared_edit.status();
  ExpectSameBytes(*streamed_edit, *shared_edit, **region, "RunWithInterventions");

  v1::GetWeightsRequest weights;  // every weight
  absl::StatusOr<RunReply> streamed_weights = served.client().GetWeights(weights);
  ASSERT_TRUE(streamed_weights.ok()) << streamed_weights.status();
  *weights.mutable_shared_memory() = (*region)->Target();
  absl::StatusOr<RunReply> shared_weights = served.client().GetWeights(weights);
  ASSERT_TRUE(shared_weights.ok()) << shared_weights.status();
  ExpectSameBytes(*streamed_weights, *shared_weights, **region, "GetWeights");
}

// The raw messages of a RunWithCache call, and its status.
std::vector<v1::RunResponse> RawMessages(v1::Worker::Stub* stub,
                                         const v1::RunWithCacheRequest& request,
                                         grpc::Status* status) {
  grpc::ClientContext ctx;
  auto reader = stub->RunWithCache(&ctx, request);
  std::vector<v1::RunResponse> messages;
  v1::RunResponse message;
  while (reader->Read(&message)) messages.push_back(message);
  *status = reader->Finish();
  return messages;
}

void ExpectSameTensors(const RunReply& a, const RunReply& b, const std::string& what) {
  ASSERT_EQ(Names(a), Names(b)) << what;
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    EXPECT_EQ(a.tensors[i].dtype, b.tensors[i].dtype) << what << " " << a.tensors[i].name;
    EXPECT_EQ(a.tensors[i].shape, b.tensors[i].shape) << what << " " << a.tensors[i].name;
    EXPECT_TRUE(a.tensors[i].data == b.tensors[i].data) << what << ": " << a.tensors[i].name;
  }
}

TEST(WorkerCoreTest, SmallRepliesComeInlineAndEqualChunkedOnesBitForBit) {
  Served served(Options(MlpModelDir(), false), /*tcp=*/true);
  std::unique_ptr<WorkerClient> chunked = served.ChunkedClient();
  std::unique_ptr<v1::Worker::Stub> stub = served.Stub();

  v1::RunWithCacheRequest small;  // the loss per token and layer 0's pattern: < 1000 bytes
  *small.mutable_input()->mutable_tokens() = TokenIds({{1, 2, 3}});
  small.mutable_options()->set_per_token_loss(true);
  small.mutable_options()->set_return_type(v1::RETURN_LOSS);
  small.mutable_cache()->add_names("pattern0");
  v1::RunWithCacheRequest big = small;  // every hook: more than one 1000-byte chunk
  big.mutable_options()->set_return_type(v1::RETURN_BOTH);
  big.mutable_cache()->clear_names();

  // On the wire: one message, the header carrying the tensors, only when the
  // client asks and they fit in a chunk.
  for (bool inline_tensors : {false, true}) {
    for (v1::RunWithCacheRequest request : {small, big}) {
      request.mutable_options()->set_inline_tensors(inline_tensors);
      const bool fits = request.cache().names_size() > 0;
      const std::string what =
          absl::StrCat(fits ? "small" : "big", " reply, inline_tensors ", inline_tensors);
      grpc::Status status;
      std::vector<v1::RunResponse> messages = RawMessages(stub.get(), request, &status);
      ASSERT_TRUE(status.ok()) << what << ": " << status.error_message();
      ASSERT_FALSE(messages.empty()) << what;
      ASSERT_TRUE(messages[0].has_header()) << what;
      const v1::RunHeader& header = messages[0].header();
      if (inline_tensors && fits) {
        EXPECT_EQ(messages.size(), 1u) << what;
        ASSERT_EQ(header.inline_chunks_size(), header.tensors_size()) << what;
        for (int i = 0; i < header.tensors_size(); ++i) {
          EXPECT_EQ(header.inline_chunks(i).name(), header.tensors(i).name()) << what;
          EXPECT_EQ(header.inline_chunks(i).offset(), 0u) << what;
          EXPECT_EQ(header.inline_chunks(i).data().size(), header.tensors(i).num_bytes()) << what;
        }
      } else {
        EXPECT_EQ(header.inline_chunks_size(), 0) << what;
        EXPECT_GE(messages.size(), 1u + header.tensors_size()) << what;
      }
    }
  }

  // Through the client, each form gives the same bits.
  for (const v1::RunWithCacheRequest& request : {small, big}) {
    absl::StatusOr<RunReply> one = served.client().RunWithCache(request);
    absl::StatusOr<RunReply> streamed = chunked->RunWithCache(request);
    ASSERT_TRUE(one.ok() && streamed.ok()) << one.status() << " " << streamed.status();
    EXPECT_EQ(one->header.inline_chunks_size(), 0);  // moved into the tensors
    ExpectSameTensors(*one, *streamed, "RunWithCache");
  }
  v1::RunWithInterventionsRequest edit;
  *edit.mutable_input()->mutable_tokens() = TokenIds({{3, 1, 4, 1}});
  edit.mutable_options()->set_return_type(v1::RETURN_LOSS);
  v1::Intervention* zero = edit.add_interventions();
  zero->set_hook("blocks.0.attn.hook_z");
  zero->set_head(1);
  zero->set_op(v1::Intervention::ZERO);
  absl::StatusOr<RunReply> one_edit = served.client().RunWithInterventions(edit);
  absl::StatusOr<RunReply> streamed_edit = chunked->RunWithInterventions(edit);
  ASSERT_TRUE(one_edit.ok() && streamed_edit.ok())
      << one_edit.status() << " " << streamed_edit.status();
  ExpectSameTensors(*one_edit, *streamed_edit, "RunWithInterventions");
  for (const char* name : {"b_U", ""}) {  // one small weight; every weight
    v1::GetWeightsRequest weights;
    if (*name != '\0') weights.add_names(name);
    absl::StatusOr<RunReply> one_weights = served.client().GetWeights(weights);
    absl::StatusOr<RunReply> streamed_weights = chunked->GetWeights(weights);
    ASSERT_TRUE(one_weights.ok() && streamed_weights.ok())
        << one_weights.status() << " " << streamed_weights.status();
    ExpectSameTensors(*one_weights, *streamed_weights, absl::StrCat("GetWeights ", name));
  }
}

}  // namespace
}  // namespace lensgrid
