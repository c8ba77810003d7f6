// Fuzz target: bytes a server or client receives as protobuf messages. The
// first byte picks the reader; the rest is the wire bytes:
//   0  SubmitJobRequest -> the coordinator planner's PlanJob (validation,
//      shard cutting), then the first and last shard's ShardSpec
//   1  a CompleteShard stream (length-delimited CompleteShardRequest
//      messages) -> TensorAssembler -> the coordinator's CheckShardResult
//   2  a RunResponse stream (what a worker client reads) -> TensorAssembler,
//      and the same messages' raw bytes, each split into two gRPC slices at a
//      point the input picks, through the C++ client's ReadRawResponse
//   3+ a worker or coordinator request (RunWithCache, RunWithInterventions,
//      RunShard, Tokenize, Detokenize, LeaseShardResponse, Register,
//      Heartbeat, FailShard): every Tensor in it through ValidateTensor /
//      FromProtoTensor, every ShardSpec through the worker's enum conversion
//      and the method table's grids.
// Properties: no crash; a plan covers every (prompt, component) once with
// non-empty in-range shards; the planner's ShardSpecs carry exactly their
// range's prompts, fit its size estimate and convert back to the plan's
// method, metric and ablation.
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/slice.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "client/raw_run_response.h"
#include "common/search_proto.h"
#include "common/tensor_chunks.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/stubs/logging.h"
#include "lensgrid/v1/coordinator.pb.h"
#include "lensgrid/v1/worker.pb.h"
#include "service/merger.h"
#include "service/planner.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using lensgrid::service::JobPlan;
using lensgrid::service::ShardRange;

// Calls `each` with every length-delimited message the bytes hold, until
// they end or stop parsing.
template <typename M, typename F>
void ForEachDelimited(const uint8_t* data, size_t size, F each) {
  google::protobuf::io::CodedInputStream in(data, static_cast<int>(size));
  uint32_t len = 0;
  while (in.ReadVarint32(&len)) {
    auto limit = in.PushLimit(static_cast<int>(len));
    M message;
    if (!message.ParseFromCodedStream(&in) || !in.ConsumedEntireMessage()) {
      return;
    }
    in.PopLimit(limit);
    if (!each(std::move(message))) return;
  }
}

// What a worker reads of a ShardSpec before its library checks the rest.
void CheckShardSpec(const lensgrid::v1::ShardSpec& spec) {
  auto method = lensgrid::MethodFromProto(spec.method());
  (void)lensgrid::MetricFromProto(spec.metric());
  (void)lensgrid::AblationFromProto(spec.ablation());
  if (method.ok()) {
    FUZZ_CHECK(!lensgrid::MethodGrids(*method, {2, 2, false}, 3).empty(),
               "a known method has grids");
  }
}

void PlanAndCheck(const lensgrid::v1::JobSpec& spec) {
  auto plan = lensgrid::service::PlanJob(spec);
  if (!plan.ok()) return;
  FUZZ_CHECK(!plan->shards.empty(), "a plan has shards");
  __int128 covered = 0;
  for (const ShardRange& r : plan->shards) {
    FUZZ_CHECK(
        0 <= r.prompt_begin && r.prompt_begin < r.prompt_end && r.prompt_end <= plan->n_prompts,
        "prompt range inside the job");
    FUZZ_CHECK(0 <= r.component_begin && r.component_begin < r.component_end &&
                   r.component_end <= plan->n_components,
               "component range inside the grid");
    covered += static_cast<__int128>(r.num_prompts()) * r.num_components();
  }
  FUZZ_CHECK(covered == static_cast<__int128>(plan->n_prompts) * plan->n_components,
             "shards cover the job exactly once");
  for (const ShardRange* r : {&plan->shards.front(), &plan->shards.back()}) {
    const lensgrid::v1::ShardSpec shard = lensgrid::service::MakeShardSpec(*plan, *r);
    FUZZ_CHECK(shard.prompts_size() == r->num_prompts() &&
                   shard.prompt_begin() == r->prompt_begin &&
                   shard.component_end() == r->component_end,
               "a shard carries exactly its range's prompts");
    FUZZ_CHECK(static_cast<int64_t>(shard.ByteSizeLong()) <= plan->max_spec_bytes,
               "the planner's size estimate bounds every ShardSpec");
    FUZZ_CHECK(lensgrid::MethodFromProto(shard.method()).value() == plan->method &&
                   lensgrid::MetricFromProto(shard.metric()).value() == plan->metric &&
                   lensgrid::AblationFromProto(shard.ablation()).value() == plan->ablation,
               "the ShardSpec's enums are the plan's");
  }
}

// A small valid job: the plan that fuzzed shard results are checked against.
const JobPlan& SmallPlan() {
  static const JobPlan* plan = [] {
    lensgrid::v1::JobSpec spec;
    spec.set_model_id("gpt2");
    spec.set_weights_sha256("00");
    spec.set_method(lensgrid::v1::METHOD_ABLATE_HEADS);
    spec.set_n_layers(2);
    spec.set_n_heads(2);
    for (int i = 0; i < 2; ++i) {
      auto* p = spec.add_prompts();
      for (int t : {1, 2, 3}) p->add_tokens(t);
      p->add_answers(4);
      p->add_wrongs(5);
    }
    auto planned = lensgrid::service::PlanJob(spec);
    FUZZ_CHECK(planned.ok(), "the fixed job plans");
    return new JobPlan(*std::move(planned));
  }();
  return *plan;
}

void AssembleShardResult(const uint8_t* data, size_t size) {
  lensgrid::TensorAssembler assembler;
  bool ok = true;
  ForEachDelimited<lensgrid::v1::CompleteShardRequest>(
      data, size, [&](lensgrid::v1::CompleteShardRequest m) {
        if (!m.has_chunk()) return true;  // the header: ids only
        ok = assembler.Add(std::move(*m.mutable_chunk())).ok();
        return ok;
      });
  if (!ok) return;
  auto tensors = assembler.Finish();
  if (!tensors.ok()) return;
  // As the coordinator's CompleteShard does.
  std::vector<lensgrid::service::Array> arrays;
  for (lensgrid::WireTensor& t : *tensors) {
    if (t.dtype != lensgrid::TensorDType::kF32) return;
    lensgrid::service::Array a{t.name, t.shape, std::vector<float>(t.data.size() / 4)};
    if (!a.values.empty()) memcpy(a.values.data(), t.data.data(), t.data.size());
    arrays.push_back(std::move(a));
  }
  const JobPlan& plan = SmallPlan();
  (void)lensgrid::service::CheckShardResult(plan, plan.shards.front(), arrays);
}

void AssembleRunResponse(const uint8_t* data, size_t size) {
  lensgrid::TensorAssembler assembler;
  bool ok = true;
  ForEachDelimited<lensgrid::v1::RunResponse>(data, size, [&](lensgrid::v1::RunResponse m) {
    if (m.has_header()) {
      assembler.Expect({m.header().tensors().begin(), m.header().tensors().end()});
      return true;
    }
    ok = assembler.Add(std::move(*m.mutable_chunk())).ok();
    return ok;
  });
  if (ok) (void)assembler.Finish();
}

// The same stream as the C++ client reads it: each length-delimited
// message's bytes, parsed or not, as a ByteBuffer of two slices (the split
// at the message's first byte modulo its length), until one is refused.
void ReadRawRunResponses(const uint8_t* data, size_t size) {
  lensgrid::RawReplyState state;
  lensgrid::v1::RunHeader header;
  lensgrid::TensorAssembler assembler;
  google::protobuf::io::CodedInputStream in(data, static_cast<int>(size));
  uint32_t len = 0;
  while (in.ReadVarint32(&len) && len <= size) {
    std::string bytes;
    if (!in.ReadString(&bytes, static_cast<int>(len))) return;
    const size_t split = bytes.empty() ? 0 : static_cast<uint8_t>(bytes[0]) % bytes.size();
    grpc::Slice slices[2] = {grpc::Slice(bytes.data(), split),
                             grpc::Slice(bytes.data() + split, bytes.size() - split)};
    grpc::ByteBuffer buffer(slices, 2);
    absl::Status read = lensgrid::ReadRawResponse(buffer, &state, &header, &assembler);
    if (!read.ok()) {
      FUZZ_CHECK(read.code() == absl::StatusCode::kInternal, "a malformed reply is INTERNAL");
      return;
    }
  }
  auto tensors = assembler.Finish();
  if (!tensors.ok()) return;
  for (const lensgrid::WireTensor& t : *tensors) {
    FUZZ_CHECK(
        t.data.size() == static_cast<uint64_t>(t.NumElements()) * lensgrid::DTypeSize(t.dtype),
        "an assembled tensor's bytes match its shape");
  }
}

// Every Tensor and ShardSpec anywhere in `message`, found by reflection.
void CheckFields(const Message& message) {
  if (auto* shard = dynamic_cast<const lensgrid::v1::ShardSpec*>(&message)) {
    CheckShardSpec(*shard);  // and its prompts, below
  }
  if (auto* tensor = dynamic_cast<const lensgrid::v1::Tensor*>(&message)) {
    const bool valid = lensgrid::ValidateTensor(*tensor, "tensor").ok();
    auto wire = lensgrid::FromProtoTensor(*tensor, "tensor");
    FUZZ_CHECK(valid == wire.ok(), "Validate and FromProto agree");
    if (wire.ok()) {
      FUZZ_CHECK(wire->data.size() ==
                     static_cast<uint64_t>(wire->NumElements()) * lensgrid::DTypeSize(wire->dtype),
                 "a valid tensor's bytes match its shape");
    }
    return;
  }
  const auto* reflection = message.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  reflection->ListFields(message, &fields);
  for (const FieldDescriptor* f : fields) {
    if (f->type() != FieldDescriptor::TYPE_MESSAGE) continue;
    if (f->is_repeated()) {
      for (int i = 0; i < reflection->FieldSize(message, f); ++i) {
        CheckFields(reflection->GetRepeatedMessage(message, f, i));
      }
    } else {
      CheckFields(reflection->GetMessage(message, f));
    }
  }
}

template <typename M>
void ParseAndCheck(const uint8_t* data, size_t size) {
  M message;
  if (!message.ParseFromArray(data, static_cast<int>(size))) return;
  CheckFields(message);
  // What we parsed serializes and parses back to the same bytes.
  const std::string once = message.SerializeAsString();
  M again;
  FUZZ_CHECK(again.ParseFromString(once), "a parsed message reparses");
  FUZZ_CHECK(again.SerializeAsString() == once, "serialization is stable");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Invalid UTF-8 in string fields is a parse failure; no need to log each.
  static const bool quiet = (google::protobuf::SetLogHandler(nullptr), true);
  (void)quiet;
  if (size == 0) return 0;
  const uint8_t kind = data[0];
  ++data;
  --size;
  switch (kind % 12) {
    case 0: {
      lensgrid::v1::SubmitJobRequest request;
      if (request.ParseFromArray(data, static_cast<int>(size))) {
        PlanAndCheck(request.spec());
      }
      break;
    }
    case 1:
      AssembleShardResult(data, size);
      break;
    case 2:
      AssembleRunResponse(data, size);
      ReadRawRunResponses(data, size);
      break;
    case 3:
      ParseAndCheck<lensgrid::v1::RunWithCacheRequest>(data, size);
      break;
    case 4:
      ParseAndCheck<lensgrid::v1::RunWithInterventionsRequest>(data, size);
      break;
    case 5:
      ParseAndCheck<lensgrid::v1::RunShardRequest>(data, size);
      break;
    case 6:
      ParseAndCheck<lensgrid::v1::TokenizeRequest>(data, size);
      break;
    case 7:
      ParseAndCheck<lensgrid::v1::DetokenizeRequest>(data, size);
      break;
    case 8:
      ParseAndCheck<lensgrid::v1::LeaseShardResponse>(data, size);
      break;
    case 9:
      ParseAndCheck<lensgrid::v1::RegisterRequest>(data, size);
      break;
    case 10:
      ParseAndCheck<lensgrid::v1::HeartbeatRequest>(data, size);
      break;
    case 11:
      ParseAndCheck<lensgrid::v1::FailShardRequest>(data, size);
      break;
  }
  return 0;
}
