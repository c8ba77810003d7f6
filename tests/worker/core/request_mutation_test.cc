// Requests a careless or hostile client can send, made from valid ones by
// mutating them field by field (protobuf reflection: any field of any nested
// message set to a value chosen to break things: 0, -1, INT64_MIN, NaN,
// unknown enum numbers, hook names of other layers, mangled tensor bytes,
// elements added, removed or swapped, messages cleared or made empty, oneof
// members switched), against the worker's real core on the tiny model, with
// the server's default limits. Properties, for every request:
//   - the core returns (nothing escapes it, nothing aborts the process);
//   - an error is never INTERNAL or UNKNOWN: the request was the problem, so
//     a check must have named what was wrong (INTERNAL here means a check is
//     missing and LibTorch or the standard library refused the request
//     instead), and its message is not empty.
// A fixed seed: the same requests on every run. A failure prints the request.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"
#include "google/protobuf/message.h"
#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"
#include "service/planner.h"
#include "tests/worker/model/test_util.h"
#include "worker/core/worker_core.h"

namespace lensgrid {
namespace {

namespace pb = google::protobuf;
using FD = pb::FieldDescriptor;

// ---- Mutation: one field somewhere in a message's tree, by reflection.
class Mutator {
 public:
  explicit Mutator(uint64_t seed) : rng_(seed) {}

  // Often also gives every tensor data that matches its (mutated) shape and
  // dtype, so that odd shapes, ranks and dtypes reach the checks past "the
  // data holds N bytes".
  void MutateAndSometimesFit(pb::Message* root) {
    Mutate(root);
    if (Below(2) == 0) FitTensors(root, 0);
  }

  void Mutate(pb::Message* root) {
    std::vector<std::pair<pb::Message*, const FD*>> sites;
    Sites(root, 0, &sites);
    if (sites.empty()) return;
    auto [m, f] = sites[Below(sites.size())];
    if (f->is_repeated()) {
      MutateRepeated(m, f);
    } else if (f->cpp_type() == FD::CPPTYPE_MESSAGE) {
      const pb::Reflection* r = m->GetReflection();
      if (r->HasField(*m, f) && Below(2) == 0) {
        r->ClearField(m, f);
      } else {
        r->MutableMessage(m, f);  // present (empty when it was absent)
      }
    } else {
      SetScalar(m, f, -1);
    }
  }

 private:
  size_t Below(size_t n) { return static_cast<size_t>(rng_() % n); }

  template <typename T>
  T Pick(const std::vector<T>& v) {
    return v[Below(v.size())];
  }

  // Every field of every present message (absent ones too: setting one is a
  // mutation), to a bounded depth.
  void Sites(pb::Message* m, int depth, std::vector<std::pair<pb::Message*, const FD*>>* out) {
    const pb::Descriptor* d = m->GetDescriptor();
    const pb::Reflection* r = m->GetReflection();
    for (int i = 0; i < d->field_count(); ++i) {
      const FD* f = d->field(i);
      if (f->options().deprecated()) continue;
      out->push_back({m, f});
      if (f->cpp_type() != FD::CPPTYPE_MESSAGE || depth >= 8) continue;
      if (f->is_repeated()) {
        for (int j = 0; j < r->FieldSize(*m, f); ++j) {
          Sites(r->MutableRepeatedMessage(m, f, j), depth + 1, out);
        }
      } else if (r->HasField(*m, f)) {
        Sites(r->MutableMessage(m, f), depth + 1, out);
      }
    }
  }

  void FitTensors(pb::Message* m, int depth) {
    const pb::Descriptor* d = m->GetDescriptor();
    const pb::Reflection* r = m->GetReflection();
    if (d->full_name() == "lensgrid.v1.Tensor") {
      FitTensor(static_cast<v1::Tensor*>(m));
      return;
    }
    for (int i = 0; i < d->field_count() && depth < 8; ++i) {
      const FD* f = d->field(i);
      if (f->cpp_type() != FD::CPPTYPE_MESSAGE) continue;
      if (f->is_repeated()) {
        for (int j = 0; j < r->FieldSize(*m, f); ++j) {
          FitTensors(r->MutableRepeatedMessage(m, f, j), depth + 1);
        }
      } else if (r->HasField(*m, f)) {
        FitTensors(r->MutableMessage(m, f), depth + 1);
      }
    }
  }

  // Data for the tensor's shape and dtype: token-like ids (some past the
  // vocabulary) for integers, 0/1 for BOOL, small floats (some inf) else.
  void FitTensor(v1::Tensor* t) {
    int64_t n = 1;
    for (int64_t dim : t->shape()) {
      if (dim < 0 || dim > (1 << 16) || (dim > 0 && n > (1 << 16) / dim)) return;
      n *= dim;
    }
    std::string data;
    for (int64_t i = 0; i < n; ++i) {
      const uint64_t bits = rng_();
      switch (t->dtype()) {
        case v1::I64: {
          const int64_t v = static_cast<int64_t>(bits % 320);
          data.append(reinterpret_cast<const char*>(&v), 8);
          break;
        }
        case v1::I32: {
          const int32_t v = static_cast<int32_t>(bits % 320);
          data.append(reinterpret_cast<const char*>(&v), 4);
          break;
        }
        case v1::BOOL:
          data.push_back(static_cast<char>(bits % 2));
          break;
        case v1::F32: {
          const float v = bits % 50 == 0 ? std::numeric_limits<float>::infinity()
                                         : static_cast<float>(bits % 2001) / 1000.0f - 1.0f;
          data.append(reinterpret_cast<const char*>(&v), 4);
          break;
        }
        case v1::F16:
        case v1::BF16: {
          const uint16_t v = t->dtype() == v1::F16 ? 0x3c00 : 0x3f80;  // 1.0
          data.append(reinterpret_cast<const char*>(&v), 2);
          break;
        }
        default:
          return;
      }
    }
    t->set_data(data);
  }

  void MutateRepeated(pb::Message* m, const FD* f) {
    const pb::Reflection* r = m->GetReflection();
    const int n = r->FieldSize(*m, f);
    switch (Below(6)) {
      case 0:
        if (n > 0) r->RemoveLast(m, f);
        return;
      case 1:
        if (n > 1) r->SwapElements(m, f, static_cast<int>(Below(n)), static_cast<int>(Below(n)));
        return;
      case 2:
        if (Below(4) == 0) r->ClearField(m, f);
        return;
      case 3:  // a copy of an element (a duplicate name, a second program)
        if (n > 0) {
          const int from = static_cast<int>(Below(n));
          if (f->cpp_type() == FD::CPPTYPE_MESSAGE) {
            pb::Message* copy = r->AddMessage(m, f);
            copy->CopyFrom(r->GetRepeatedMessage(*m, f, from));
          } else {
            SetScalar(m, f, -2);
            r->SwapElements(m, f, n, from);  // the nasty one in place of `from`
          }
          return;
        }
        [[fallthrough]];
      case 4:
        if (f->cpp_type() == FD::CPPTYPE_MESSAGE) {
          r->AddMessage(m, f);
        } else {
          SetScalar(m, f, -2);
        }
        return;
      default:
        if (n > 0 && f->cpp_type() != FD::CPPTYPE_MESSAGE) {
          SetScalar(m, f, static_cast<int>(Below(n)));
        }
        return;
    }
  }

  int64_t NastyInt(int64_t now) {
    static const std::vector<int64_t> kValues = {0,
                                                 1,
                                                 -1,
                                                 2,
                                                 3,
                                                 4,
                                                 5,
                                                 7,
                                                 8,
                                                 16,
                                                 63,
                                                 64,
                                                 100,
                                                 306,
                                                 307,
                                                 1000,
                                                 16384,
                                                 16385,
                                                 int64_t{1} << 20,
                                                 int64_t{1} << 31,
                                                 (int64_t{1} << 31) - 1,
                                                 int64_t{1} << 40,
                                                 -2,
                                                 -5,
                                                 -100,
                                                 -(int64_t{1} << 31),
                                                 std::numeric_limits<int64_t>::max(),
                                                 std::numeric_limits<int64_t>::min(),
                                                 std::numeric_limits<int64_t>::min() + 1};
    switch (Below(4)) {
      case 0:
        return now + 1;
      case 1:
        return now - 1;
      default:
        return Pick(kValues);
    }
  }

  double NastyDouble() {
    static const std::vector<double> kValues = {0.0,
                                                -0.0,
                                                1.0,
                                                -1.0,
                                                0.5,
                                                2.0,
                                                1e-30,
                                                1e30,
                                                1e308,
                                                -1e308,
                                                std::numeric_limits<double>::infinity(),
                                                -std::numeric_limits<double>::infinity(),
                                                std::numeric_limits<double>::quiet_NaN()};
    return Pick(kValues);
  }

  std::string NastyString(const std::string& now) {
    static const std::vector<std::string> kValues = {
        "",
        "a",
        "x",
        "act",
        "w",
        "pattern0",
        "z1",
        "resid_pre1",
        "blocks.0.attn.hook_z",
        "blocks.1.attn.hook_pattern",
        "blocks.1.hook_resid_post",
        "blocks.2.hook_resid_pre",
        "blocks.99.hook_resid_pre",
        "blocks.-1.hook_resid_pre",
        "hook_embed",
        "ln_final.hook_normalized",
        "blocks.0.ln1.hook_scale",
        "blocks.0.hook_attn_out",
        "blocks.0.attn.hook_q",
        "W_U",
        "b_U",
        "W_E",
        "W_Q",
        "blocks.0.attn.W_O",
        "blocks.1.mlp.W_in",
        "blocks.1.attn.b_O",
        "logits",
        "L0H1.q",
        "L1H3",
        "mlp0",
        ".*",
        "(",
        "(a|a)*$",
        "hook_z$",
        "bphd,hdm->bpm",
        "ij,jk->ik",
        "i->",
        "ii->i",
        "...d,d->...",
        "->",
        "bpd",
        "\xff\xfe\x80",
        std::string(1, '\0'),
        "saved",
        "ioi",
        "induction",
        "greater-than",
        "{\"prompt\": \"a b\", \"answer\": \" c\", \"wrong\": \" d\"}\n",
        "{\"tokens\": [1, 2, 99999], \"answer\": 5, \"wrong\": 6}\n"};
    switch (Below(6)) {
      case 0:
        return now.substr(0, now.size() / 2);
      case 1:
        return now + now;
      case 2:
        return std::string(Pick<size_t>({100, 5000, 70000}), 'q');
      default:
        return Pick(kValues);
    }
  }

  std::string NastyBytes(const std::string& now) {
    const size_t n = Pick<size_t>({0, 1, 2, 3, 4, 7, 8, 12, 16, 40, 64, 1000, now.size() + 1,
                                   now.size() ? now.size() - 1 : 0, now.size() * 2, now.size()});
    std::string out(n, '\0');
    const int pattern = static_cast<int>(Below(5));
    for (size_t i = 0; i < n; ++i) {
      switch (pattern) {
        case 0:
          out[i] = static_cast<char>(rng_());
          break;
        case 1:
          out[i] = '\xff';  // -1 ids, NaN floats
          break;
        case 2: {  // quiet NaN F32s
          static const char kNan[4] = {0, 0, '\xc0', '\x7f'};
          out[i] = kNan[i % 4];
          break;
        }
        case 3:  // the same bytes, one flipped
          out[i] = i < now.size() ? now[i] : '\x7f';
          if (i == n / 2) out[i] = static_cast<char>(out[i] ^ 0x40);
          break;
        default:
          out[i] = i < now.size() ? now[i] : '\x01';
          break;
      }
    }
    return out;
  }

  // Reflection's three writers of one type: a new element, an element, a
  // singular field.
  template <typename T>
  struct Writers {
    void (pb::Reflection::*add)(pb::Message*, const FD*, T) const;
    void (pb::Reflection::*set_element)(pb::Message*, const FD*, int, T) const;
    void (pb::Reflection::*set)(pb::Message*, const FD*, T) const;
  };

  // Writes v into field f of m: a new element (index -2), element `index` of
  // a repeated field, or the singular field (-1).
  template <typename T>
  static void Write(pb::Message* m, const FD* f, int index, T v, const Writers<T>& w) {
    const pb::Reflection* r = m->GetReflection();
    if (index == -2) {
      (r->*w.add)(m, f, std::move(v));
    } else if (f->is_repeated()) {
      (r->*w.set_element)(m, f, index, std::move(v));
    } else {
      (r->*w.set)(m, f, std::move(v));
    }
  }

  // Sets field f of m (element `index` of a repeated field; -2: a new element;
  // -1: singular) to a nasty value of its type.
  void SetScalar(pb::Message* m, const FD* f, int index) {
    using R = pb::Reflection;
    const R* r = m->GetReflection();
    const bool add = index == -2, rep = f->is_repeated();
    auto now_int = [&]() -> int64_t {
      if (add) return 0;
      switch (f->cpp_type()) {
        case FD::CPPTYPE_INT32:
          return rep ? r->GetRepeatedInt32(*m, f, index) : r->GetInt32(*m, f);
        case FD::CPPTYPE_INT64:
          return rep ? r->GetRepeatedInt64(*m, f, index) : r->GetInt64(*m, f);
        case FD::CPPTYPE_UINT32:
          return rep ? r->GetRepeatedUInt32(*m, f, index) : r->GetUInt32(*m, f);
        case FD::CPPTYPE_UINT64:
          return static_cast<int64_t>(rep ? r->GetRepeatedUInt64(*m, f, index)
                                          : r->GetUInt64(*m, f));
        default:
          return 0;
      }
    };
    switch (f->cpp_type()) {
      case FD::CPPTYPE_INT32:
        return Write<int32_t>(m, f, index, static_cast<int32_t>(NastyInt(now_int())),
                              {&R::AddInt32, &R::SetRepeatedInt32, &R::SetInt32});
      case FD::CPPTYPE_INT64:
        return Write<int64_t>(m, f, index, NastyInt(now_int()),
                              {&R::AddInt64, &R::SetRepeatedInt64, &R::SetInt64});
      case FD::CPPTYPE_UINT32:
        return Write<uint32_t>(m, f, index, static_cast<uint32_t>(NastyInt(now_int())),
                               {&R::AddUInt32, &R::SetRepeatedUInt32, &R::SetUInt32});
      case FD::CPPTYPE_UINT64:
        return Write<uint64_t>(m, f, index, static_cast<uint64_t>(NastyInt(now_int())),
                               {&R::AddUInt64, &R::SetRepeatedUInt64, &R::SetUInt64});
      case FD::CPPTYPE_DOUBLE:
        return Write<double>(m, f, index, NastyDouble(),
                             {&R::AddDouble, &R::SetRepeatedDouble, &R::SetDouble});
      case FD::CPPTYPE_FLOAT:
        return Write<float>(m, f, index, static_cast<float>(NastyDouble()),
                            {&R::AddFloat, &R::SetRepeatedFloat, &R::SetFloat});
      case FD::CPPTYPE_BOOL:
        return Write<bool>(m, f, index,
                           add || !(rep ? r->GetRepeatedBool(*m, f, index) : r->GetBool(*m, f)),
                           {&R::AddBool, &R::SetRepeatedBool, &R::SetBool});
      case FD::CPPTYPE_ENUM: {
        // Proto3 enums are open: numbers no value names arrive too.
        const pb::EnumDescriptor* e = f->enum_type();
        const int v = Below(4) == 0 ? Pick<int>({-1, 99, 1 << 20})
                                    : e->value(static_cast<int>(Below(e->value_count())))->number();
        return Write<int>(m, f, index, v,
                          {&R::AddEnumValue, &R::SetRepeatedEnumValue, &R::SetEnumValue});
      }
      case FD::CPPTYPE_STRING: {
        const std::string now = add   ? std::string()
                                : rep ? r->GetRepeatedString(*m, f, index)
                                      : r->GetString(*m, f);
        return Write<std::string>(
            m, f, index,
            f->type() == FD::TYPE_BYTES && Below(3) != 0 ? NastyBytes(now) : NastyString(now),
            {&R::AddString, &R::SetRepeatedString, &R::SetString});
      }
      case FD::CPPTYPE_MESSAGE:
        return;
    }
  }

  std::mt19937_64 rng_;
};

// ---- Seeds: valid requests of every kind the core serves.
v1::Tensor I64(std::vector<int64_t> shape, const std::vector<int64_t>& values) {
  v1::Tensor t;
  t.set_dtype(v1::I64);
  for (int64_t d : shape) t.add_shape(d);
  t.set_data(std::string(reinterpret_cast<const char*>(values.data()), values.size() * 8));
  return t;
}

v1::Tensor F32(std::vector<int64_t> shape, float value) {
  v1::Tensor t;
  t.set_dtype(v1::F32);
  int64_t n = 1;
  for (int64_t d : shape) t.add_shape(d), n *= d;
  std::vector<float> values(n, value);
  t.set_data(std::string(reinterpret_cast<const char*>(values.data()), values.size() * 4));
  return t;
}

template <typename T>
T Parse(const std::string& text) {
  T m;
  EXPECT_TRUE(pb::TextFormat::ParseFromString(text, &m)) << text;
  return m;
}

std::vector<v1::RunWithCacheRequest> CacheSeeds() {
  auto a = Parse<v1::RunWithCacheRequest>(R"pb(
    input { texts: "When Mary and John went" texts: "The cat" padding_side: PADDING_LEFT }
    options { return_type: RETURN_BOTH per_token_loss: true }
    cache {
      names: "pattern0"
      names: "blocks.1.hook_resid_post"
      regexes: "hook_z$"
      positions { start: -2 }
      dtype: F16
    }
  )pb");
  auto b = Parse<v1::RunWithCacheRequest>(R"pb(
    options { stop_at_layer: 1 logits_dtype: BF16 }
    cache {
      remove_batch_dim: true
      positions { start: 1 stop: 4 }
    }
  )pb");
  *b.mutable_input()->mutable_tokens() = I64({1, 5}, {1, 17, 40, 200, 306});
  auto c = Parse<v1::RunWithCacheRequest>(R"pb(
    options { return_type: RETURN_LOSS }
    cache { names: "blocks.1.hook_resid_pre" }
  )pb");
  *c.mutable_input()->mutable_tokens() = I64({2, 3}, {1, 2, 3, 4, 5, 6});
  *c.mutable_input()->mutable_attention_mask() = I64({2, 3}, {1, 1, 1, 0, 1, 1});
  return {a, b, c};
}

std::vector<v1::RunWithInterventionsRequest> InterventionSeeds() {
  auto a = Parse<v1::RunWithInterventionsRequest>(R"pb(
    interventions { hook: "blocks.0.attn.hook_z" head: 1 positions: -1 op: ZERO }
    interventions { hook: "blocks.1.hook_resid_pre" op: MEAN }
    interventions { hook: "blocks.1.attn.hook_z" head: 2 op: SCALE scale: 0.5 }
    interventions { hook: "blocks.0.hook_resid_post" positions: 0 positions: 2 op: PATCH }
    metric { kind: METRIC_LOGIT_DIFF answer_tokens: 40 wrong_tokens: 90 per_prompt: true }
    cache { names: "pattern1" }
  )pb");
  *a.mutable_input()->mutable_tokens() = I64({2, 4}, {1, 17, 40, 200, 1, 18, 41, 201});
  *a.mutable_patch_input()->mutable_tokens() = I64({2, 4}, {1, 19, 43, 205, 1, 20, 44, 206});
  auto b = Parse<v1::RunWithInterventionsRequest>(R"pb(
    input { texts: "A B C A B" }
    interventions { hook: "blocks.0.hook_resid_post" op: SET }
    interventions { hook: "blocks.0.hook_attn_out" op: ADD }
    gradients {
      hooks: "blocks.1.hook_resid_pre"
      hooks: "blocks.0.attn.hook_z"
      positions { start: -1 }
      dtype: F16
    }
    metric { kind: METRIC_PROB answer_tokens: 5 }
  )pb");
  *b.mutable_interventions(0)->mutable_value() = F32({}, 0.25f);
  *b.mutable_interventions(1)->mutable_value() = F32({1, 1, 64}, 1.0f);
  // Programs: read an activation and a weight, einsum, index, write, save.
  auto c = Parse<v1::RunWithInterventionsRequest>(R"pb(
    programs {
      hook: "blocks.0.attn.hook_z"
      nodes {
        id: "act"
        activation {}
      }
      nodes { id: "w" weight: "blocks.0.attn.W_O" }
      nodes {
        id: "out"
        einsum { equation: "bphd,hdm->bpm" inputs: "act" inputs: "w" }
      }
      nodes {
        id: "last"
        index {
          input: "act"
          region { all: true }
          region { at: -1 }
          region { ellipsis: true }
        }
      }
      nodes { id: "zero" constant: 0 }
      nodes {
        id: "edit"
        write {
          target: "act"
          value: "zero"
          region { all: true }
          region { slice { start: 1 step: 1 } }
          region { at: 2 }
          region { ellipsis: true }
        }
      }
      nodes {
        id: "n"
        reduce { op: REDUCE_NORM input: "out" axes: -1 keepdim: true }
      }
      nodes {
        id: "s"
        softmax { input: "last" axis: -1 log: true }
      }
      nodes {
        id: "r"
        reshape { input: "out" shape: -1 }
      }
      nodes {
        id: "p"
        permute { input: "last" axes: 1 axes: 0 axes: 2 }
      }
      nodes {
        id: "e"
        elementwise { op: DIV inputs: "n" inputs: "n" }
      }
      output: "edit"
      saves { name: "head_out" node: "out" }
      saves { name: "norm" node: "e" }
    }
    programs {
      hook: "blocks.1.hook_resid_pre"
      nodes {
        id: "act"
        activation {}
      }
      nodes {
        id: "d"
        hook { name: "blocks.0.hook_resid_post" }
      }
      nodes { id: "prev" saved: "head_out" }
      nodes {
        id: "v"
        index {
          input: "d"
          region { at: 0 }
          region { at: -1 }
        }
      }
      nodes {
        id: "proj"
        project { mode: OUT input: "act" direction: "v" }
      }
      nodes {
        id: "m"
        matmul { a: "act" b: "v" }
      }
      nodes {
        id: "c"
        elementwise { op: GT inputs: "act" inputs: "proj" }
      }
      nodes {
        id: "w"
        where { condition: "c" if_true: "act" if_false: "proj" }
      }
      output: "w"
      saves { name: "dot" node: "m" }
    }
  )pb");
  *c.mutable_input()->mutable_tokens() = I64({1, 6}, {1, 5, 6, 7, 5, 6});
  return {a, b, c};
}

std::vector<v1::RunShardRequest> ShardSeeds(const std::string& sha) {
  std::vector<v1::RunShardRequest> out;
  struct Case {
    v1::SearchMethod method;
    v1::Ablation ablation;
    v1::SearchMetric metric;
  };
  for (const Case& c : {Case{v1::METHOD_ABLATE_HEADS, v1::ABLATION_MEAN, v1::METRIC_LOGIT_DIFF},
                        Case{v1::METHOD_PATCH_HEADS_BY_POS, v1::ABLATION_ZERO, v1::METRIC_KL},
                        Case{v1::METHOD_DETECT_HEADS, v1::ABLATION_ZERO, v1::METRIC_LOSS},
                        Case{v1::METHOD_ATTRIBUTE_HEADS, v1::ABLATION_ZERO, v1::METRIC_PROB},
                        Case{v1::METHOD_EAP, v1::ABLATION_ZERO, v1::METRIC_LOGIT_DIFF},
                        Case{v1::METHOD_PATH_PATCH, v1::ABLATION_ZERO, v1::METRIC_LOGIT_DIFF},
                        Case{v1::METHOD_ABLATE_LAYERS, v1::ABLATION_RESAMPLE, v1::METRIC_LOG_PROB},
                        Case{v1::METHOD_PATCH_PATTERN, v1::ABLATION_ZERO, v1::METRIC_PROB_DIFF},
                        Case{v1::METHOD_DLA, v1::ABLATION_ZERO, v1::METRIC_LOGIT_DIFF},
                        Case{v1::METHOD_ATTRIBUTE_HEADS_BY_POS, v1::ABLATION_ZERO, v1::METRIC_KL},
                        Case{v1::METHOD_EAP_IG, v1::ABLATION_ZERO, v1::METRIC_LOGIT_DIFF},
                        Case{v1::METHOD_CIRCUIT_FAITHFULNESS, v1::ABLATION_ZERO, v1::METRIC_KL},
                        Case{v1::METHOD_ACDC_STEP, v1::ABLATION_ZERO, v1::METRIC_KL}}) {
    v1::JobSpec s;
    s.set_model_id("tiny");
    s.set_weights_sha256(sha);
    s.set_method(c.method);
    s.set_ablation(c.ablation);
    s.set_metric(c.metric);
    s.set_n_layers(2);
    s.set_n_heads(4);
    s.set_attn_only(true);
    s.set_prompts_per_shard(2);
    s.set_components_per_shard(3);
    // The tiny model's graph (attention only, 2 x 4 heads) has 81 edges.
    const std::string every_edge = std::string(10, '\xff') + '\x01';
    if (c.method == v1::METHOD_PATH_PATCH) s.mutable_circuit()->add_receivers("logits");
    if (c.method == v1::METHOD_EAP_IG) s.mutable_circuit()->set_ig_steps(3);
    if (c.method == v1::METHOD_CIRCUIT_FAITHFULNESS)
      s.mutable_circuit()->set_kept_edges(every_edge);
    if (c.method == v1::METHOD_ACDC_STEP) {
      s.mutable_circuit()->add_receivers("logits");
      s.mutable_circuit()->set_kept_edges(every_edge);
    }
    for (int i = 0; i < 4; ++i) {
      v1::InlinePrompt* p = s.add_prompts();
      for (int t = 0; t < 5 + i % 2; ++t) {
        p->add_tokens((17 * i + 5 * t + 1) % 300);
        p->add_corrupted_tokens((13 * i + 7 * t + 2) % 300);
      }
      p->add_answers(40 + i);
      p->add_wrongs(90 + i);
    }
    auto plan = service::PlanJob(s);
    EXPECT_TRUE(plan.ok()) << plan.status();
    if (!plan.ok()) continue;
    v1::RunShardRequest r;
    r.set_weights_sha256(sha);
    *r.mutable_shard() = service::MakeShardSpec(*plan, plan->shards.front());
    out.push_back(r);
  }
  return out;
}

class Sink : public GenerateSink {
 public:
  void Hold(std::shared_ptr<const void>) override {}
  void Send(v1::GenerateResponse) override {}
};

// ---- The run.
struct Outcome {
  std::map<absl::StatusCode, int> codes;
  std::vector<std::string> failures;  // the first few, with their requests
};

template <typename Request>
void Hammer(const std::string& kind, const std::vector<Request>& seeds,
            const std::function<absl::Status(const Request&)>& call, int per_seed, uint64_t seed,
            Outcome* out) {
  Mutator mutator(seed);
  std::mt19937_64 rng(seed + 1);
  for (const Request& valid : seeds) {
    // The seed itself must be served: otherwise the mutants only test its error.
    const absl::Status base = call(valid);
    EXPECT_TRUE(base.ok()) << kind << " seed: " << base << "\n" << valid.DebugString();
    // Served mutants, to mutate further: a walk deeper into requests that are
    // valid but odd than mutations of the seed alone reach.
    std::vector<Request> served;
    for (int i = 0; i < per_seed; ++i) {
      Request request = served.empty() || rng() % 2 == 0 ? valid : served[rng() % served.size()];
      const int mutations = 1 + static_cast<int>(rng() % 3);
      for (int k = 0; k < mutations; ++k) mutator.MutateAndSometimesFit(&request);
      const absl::Status status = call(request);
      out->codes[status.code()] += 1;
      if (status.ok() && request.ByteSizeLong() < (1 << 16)) {
        if (served.size() < 64) {
          served.push_back(request);
        } else {
          served[rng() % served.size()] = request;
        }
      }
      const bool bad = status.code() == absl::StatusCode::kInternal ||
                       status.code() == absl::StatusCode::kUnknown ||
                       (!status.ok() && status.message().empty());
      if (bad && out->failures.size() < 12) {
        std::string text = request.ShortDebugString();
        if (text.size() > 3000) text = text.substr(0, 3000) + "...";
        out->failures.push_back(kind + ": " + status.ToString().substr(0, 600) +
                                "\n  request: " + text);
      }
    }
  }
}

TEST(RequestMutationTest, NoRequestMakesTheCoreFailInternallyOrCrash) {
  WorkerOptions o;
  o.model_dir = ::lensgrid::testing::SourceDir() + "/models/lensgrid-tiny";
  auto loaded = WorkerCore::Load(o);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const WorkerCore& core = **loaded;
  const std::string sha = core.Info().weights_sha256();
  const auto never = [] { return false; };
  Outcome out;
  // LENSGRID_MUTATION_RUNS / LENSGRID_MUTATION_SEED: a longer or another run
  // (a campaign beside the suite's fixed one).
  const char* runs_env = std::getenv("LENSGRID_MUTATION_RUNS");
  const char* seed_env = std::getenv("LENSGRID_MUTATION_SEED");
  const int kPerSeed = runs_env != nullptr ? std::atoi(runs_env) : 600;
  const uint64_t s0 = seed_env != nullptr ? std::strtoull(seed_env, nullptr, 10) * 100 : 0;

  Hammer<v1::RunWithCacheRequest>(
      "RunWithCache", CacheSeeds(),
      [&](const auto& r) { return core.RunWithCache(r, never).status(); }, kPerSeed, s0 + 1, &out);
  Hammer<v1::RunWithInterventionsRequest>(
      "RunWithInterventions", InterventionSeeds(),
      [&](const auto& r) { return core.RunWithInterventions(r, never).status(); }, kPerSeed, s0 + 2,
      &out);
  Hammer<v1::RunShardRequest>(
      "RunShard", ShardSeeds(sha), [&](const auto& r) { return core.RunShard(r, never).status(); },
      kPerSeed / 4, s0 + 3, &out);
  Hammer<v1::GetWeightsRequest>(
      "GetWeights",
      {Parse<v1::GetWeightsRequest>(R"pb(names: "W_U" names: "blocks.0.attn.W_O" dtype: F16)pb")},
      [&](const auto& r) { return core.GetWeights(r, never).status(); }, kPerSeed, s0 + 4, &out);
  Hammer<v1::GenerateRequest>(
      "Generate", {Parse<v1::GenerateRequest>(R"pb(
        input { texts: "A B C" texts: "D" }
        max_new_tokens: 3
        temperature: 0.7
        top_k: 5
        top_p: 0.9
        seed: 1
        stop_at_eos: true)pb")},
      [&](const auto& r) {
        Sink sink;
        return core.Generate(r, never, &sink);
      },
      kPerSeed, s0 + 5, &out);
  Hammer<v1::TokenizeRequest>(
      "Tokenize",
      {Parse<v1::TokenizeRequest>(R"pb(texts: "Hello there" texts: "" prepend_bos: false)pb")},
      [&](const auto& r) { return core.Tokenize(r, never).status(); }, kPerSeed / 3, s0 + 6, &out);
  Hammer<v1::DetokenizeRequest>(
      "Detokenize", {Parse<v1::DetokenizeRequest>(R"pb(ids: 1 ids: 17 ids: 306)pb")},
      [&](const auto& r) { return core.Detokenize(r).status(); }, kPerSeed / 3, s0 + 7, &out);
  Hammer<v1::PrepareJob>(
      "PrepareJob",
      {Parse<v1::PrepareJob>(
           R"pb(dataset { name: "induction" n_prompts: 4 seed: 3 seq_len: 5 })pb"),
       Parse<v1::PrepareJob>(
           R"pb(dataset {
                  name: "mine.jsonl"
                  jsonl: "{\"prompt\": \"A B C\", \"answer\": 5, \"wrong\": 6}\n"
                })pb")},
      [&](const auto& r) { return core.PrepareJob(r).status(); }, kPerSeed / 3, s0 + 8, &out);

  std::string summary;
  for (const auto& [code, n] : out.codes) {
    summary += absl::StatusCodeToString(code) + " " + std::to_string(n) + ", ";
  }
  std::printf("mutated requests by status: %s\n", summary.c_str());
  // Mutants must reach past the first check: many are still served.
  EXPECT_GT(out.codes[absl::StatusCode::kOk], 100);
  for (const std::string& f : out.failures) ADD_FAILURE() << f;
}

}  // namespace
}  // namespace lensgrid
