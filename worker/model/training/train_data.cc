#include "worker/model/training/train_data.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "worker/model/analysis/ioi_templates.h"

namespace lensgrid {
namespace {

using Rng = std::mt19937_64;

int64_t Uniform(Rng& rng, int64_t lo, int64_t hi) {  // [lo, hi]
  return lo + static_cast<int64_t>(rng() % static_cast<uint64_t>(hi - lo + 1));
}

double Unit(Rng& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

// Training templates: Wang et al. (2022)'s (the `ioi` search dataset's,
// analysis/ioi_templates.h) and more of the same shape.
const std::vector<std::string>& TrainTemplates() {
  static const auto* t = [] {
    auto* all = new std::vector<std::string>(IoiTemplates());
    for (const char* more :
         {"When [B] and [A] went to the [PLACE], [B] gave a [OBJECT] to [A]",
          "When [B] and [A] were at the [PLACE], [B] handed a [OBJECT] to [A]",
          "After [B] and [A] left the [PLACE], [B] threw a [OBJECT] to [A]",
          "Today [B] and [A] visited the [PLACE], and [B] bought a [OBJECT] for [A]",
          "At the [PLACE], [B] and [A] found a [OBJECT]. [B] gave it to [A]"})
      all->push_back(more);
    return all;
  }();
  return *t;
}

// `base`, then `more`.
std::vector<std::string>* Extended(const std::vector<std::string>& base,
                                   std::initializer_list<const char*> more) {
  auto* all = new std::vector<std::string>(base);
  for (const char* m : more) all->push_back(m);
  return all;
}

// Phrasings that never appear in training rows.
const std::vector<std::string>& HeldOutTemplates() {
  static const auto* t = new std::vector<std::string>{
      "Yesterday [B] and [A] walked to the [PLACE], and [B] gave a [OBJECT] to [A]",
      "As [B] and [A] left the [PLACE], [B] passed a [OBJECT] to [A]",
      "Later, [B] and [A] met at the [PLACE]. [B] showed a [OBJECT] to [A]",
      "Once [B] and [A] arrived at the [PLACE], [B] sent a [OBJECT] to [A]",
      "In the morning [B] and [A] went to the [PLACE]. [B] brought a [OBJECT] to [A]",
  };
  return *t;
}

// The `ioi` search dataset's names first, so a truncated vocabulary keeps them.
const std::vector<std::string>& TrainNameCandidates() {
  static const auto* n = Extended(IoiNames(), {" William", " Louis", " Carol", " Ann", " Lee"});
  return *n;
}

const std::vector<std::string>& HeldOutNameCandidates() {
  static const auto* n = new std::vector<std::string>{
      " Bill",  " Joe", " Jim",   " Bob",  " Tim",   " Frank", " Jeff",
      " Harry", " Jon", " Scott", " Phil", " Susan", " Karen", " Nancy"};
  return *n;
}

const std::vector<std::string>& PlaceCandidates() {
  static const auto* p =
      Extended(IoiPlaces(), {" church", " hotel", " market", " library", " beach", " bank"});
  return *p;
}

const std::vector<std::string>& ObjectCandidates() {
  static const auto* o =
      Extended(IoiObjects(), {" letter", " gift", " card", " phone", " bag", " key", " picture"});
  return *o;
}

std::vector<std::string> SingleTokenWords(const Tokenizer& tok,
                                          const std::vector<std::string>& words) {
  std::vector<std::string> out;
  for (const auto& w : words) {
    if (tok.ToSingleToken(w).ok()) out.push_back(w);
  }
  return out;
}

template <typename T>
const T& Pick(Rng& rng, const std::vector<T>& v) {
  return v[Uniform(rng, 0, static_cast<int64_t>(v.size()) - 1)];
}

}  // namespace

absl::StatusOr<TrainData> TrainData::Create(const TrainDataOptions& options, int64_t d_vocab,
                                            const Tokenizer* tokenizer) {
  const TrainDataOptions& o = options;
  if (o.seq_len < 2 * o.max_span + o.max_gap + 2 || o.min_span < 2 || o.max_span < o.min_span ||
      o.max_gap < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("repeated spans of ", o.min_span, "..", o.max_span, " tokens with gaps up to ",
                     o.max_gap, " do not fit rows of ", o.seq_len, " tokens"));
  }
  if (o.chain_alphabet < 2 || o.chain_alphabet >= d_vocab) {
    return absl::InvalidArgumentError(
        absl::StrCat("chain alphabet ", o.chain_alphabet, " must be in [2, ", d_vocab, ")"));
  }
  if (o.repeats_fraction < 0 || o.chain_fraction < 0 || o.ioi_fraction < 0 ||
      o.triggers_fraction < 0 || o.max_triggers < 1 ||
      o.repeats_fraction + o.chain_fraction + o.ioi_fraction + o.triggers_fraction <= 0) {
    return absl::InvalidArgumentError("row fractions must be >= 0 with a positive sum");
  }
  TrainData data;
  data.options_ = options;
  data.d_vocab_ = d_vocab;
  Rng rng(options.seed ^ 0x5eedc4a1ull);
  std::vector<int64_t> ids(d_vocab - 1);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  data.alphabet_.assign(ids.begin(), ids.begin() + o.chain_alphabet);
  data.perm_.resize(o.chain_alphabet);
  std::iota(data.perm_.begin(), data.perm_.end(), 0);
  std::shuffle(data.perm_.begin(), data.perm_.end(), rng);
  if (tokenizer == nullptr || o.ioi_fraction <= 0) return data;
  if (tokenizer->vocab_size() != d_vocab || tokenizer->eot_token() != d_vocab - 1) {
    return absl::InvalidArgumentError(absl::StrCat("the tokenizer has ", tokenizer->vocab_size(),
                                                   " ids and must end in <|endoftext|>; ",
                                                   "the model has ", d_vocab));
  }
  data.tokenizer_ = tokenizer;
  data.templates_[0] = TrainTemplates();
  data.templates_[1] = HeldOutTemplates();
  data.names_[0] = SingleTokenWords(*tokenizer, TrainNameCandidates());
  data.names_[1] = SingleTokenWords(*tokenizer, HeldOutNameCandidates());
  data.places_ = SingleTokenWords(*tokenizer, PlaceCandidates());
  data.objects_ = SingleTokenWords(*tokenizer, ObjectCandidates());
  if (data.names_[0].size() < 5 || data.names_[1].size() < 2 || data.places_.empty() ||
      data.objects_.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the vocabulary is too small for IOI sentences: ", data.names_[0].size(),
                     " + ", data.names_[1].size(), " single-token names, ", data.places_.size(),
                     " places, ", data.objects_.size(), " objects (keep more merges)"));
  }
  return data;
}

std::vector<int64_t> TrainData::ChainRow(Rng& rng) const {
  const int64_t n = static_cast<int64_t>(alphabet_.size());
  std::vector<int64_t> idx(options_.seq_len);  // alphabet indices, idx[0] unused (BOS)
  for (int64_t t = 1; t < options_.seq_len; ++t) {
    idx[t] =
        (t < 3 || Unit(rng) < options_.chain_noise) ? Uniform(rng, 0, n - 1) : perm_[idx[t - 2]];
  }
  std::vector<int64_t> row(options_.seq_len);
  row[0] = eot();
  for (int64_t t = 1; t < options_.seq_len; ++t) row[t] = alphabet_[idx[t]];
  return row;
}

std::vector<int64_t> TrainData::RepeatsRow(Rng& rng) const {
  std::vector<int64_t> row = ChainRow(rng);
  const TrainDataOptions& o = options_;
  int64_t at = Uniform(rng, 1, 8);
  while (true) {
    const int64_t len = Uniform(rng, o.min_span, o.max_span);
    int64_t gap = Uniform(rng, 0, o.max_gap);
    if (at + 2 * len + gap > o.seq_len) break;
    std::vector<int64_t> span(len);
    for (int64_t& t : span) t = Uniform(rng, 0, d_vocab_ - 2);
    std::copy(span.begin(), span.end(), row.begin() + at);
    at += len;
    const int64_t copies = Uniform(rng, 1, std::max<int64_t>(1, o.max_copies));
    for (int64_t c = 0; c < copies && at + gap + len <= o.seq_len; ++c) {
      std::copy(span.begin(), span.end(), row.begin() + at + gap);
      at += gap + len;
      gap = Uniform(rng, 0, o.max_gap);
    }
    at += Uniform(rng, 0, 8);
  }
  return row;
}

std::vector<int64_t> TrainData::HalfRepeatRow(Rng& rng) const {
  const int64_t half = (options_.seq_len - 1) / 2;
  std::vector<int64_t> row = ChainRow(rng);  // fills an odd last position
  for (int64_t i = 0; i < half; ++i) row[1 + i] = row[1 + half + i] = Uniform(rng, 0, d_vocab_ - 2);
  return row;
}

std::vector<int64_t> TrainData::TriggersRow(Rng& rng) const {
  std::vector<int64_t> row = ChainRow(rng);
  const int64_t n = Uniform(rng, 1, options_.max_triggers);
  std::vector<int64_t> trigger(n), output(n);
  for (int64_t i = 0; i < n; ++i) {
    trigger[i] = Uniform(rng, 0, d_vocab_ - 2);
    output[i] = Uniform(rng, 0, d_vocab_ - 2);
  }
  for (int64_t t = 1; t + 1 < options_.seq_len; ++t) {
    if (Unit(rng) >= options_.trigger_rate) continue;
    const int64_t k = Uniform(rng, 0, n - 1);
    row[t] = trigger[k];
    row[t + 1] = output[k];
    ++t;
  }
  return row;
}

IoiExample TrainData::IoiSentence(Rng& rng, bool held_out) const {
  const auto& names = names_[held_out ? 1 : 0];
  std::string t = Pick(rng, templates_[held_out ? 1 : 0]);
  if (rng() % 2 == 1) t = absl::StrReplaceAll(t, {{"[B] and [A]", "[A] and [B]"}});  // ABBA
  t = t.substr(0, t.rfind(" [A]"));
  IoiExample ex;
  ex.io = Pick(rng, names);
  do ex.s = Pick(rng, names);
  while (ex.s == ex.io);
  ex.text = FillIoiTemplate(t, ex.io, ex.s, ex.s, Pick(rng, places_), Pick(rng, objects_));
  return ex;
}

std::vector<int64_t> TrainData::IoiRow(Rng& rng, bool held_out) const {
  std::vector<int64_t> row;
  while (static_cast<int64_t>(row.size()) < options_.seq_len) {
    IoiExample ex = IoiSentence(rng, held_out);
    row.push_back(eot());
    tokenizer_->EncodeTo(ex.text + ex.io + ".", &row);
  }
  row.resize(options_.seq_len);
  return row;
}

std::vector<Prompt> TrainData::IoiPrompts(int64_t n, uint64_t seed, bool held_out) const {
  std::vector<Prompt> out;
  if (!has_ioi()) return out;
  Rng rng(seed);
  for (int64_t i = 0; i < n; ++i) {
    IoiExample ex = IoiSentence(rng, held_out);
    Prompt p;
    p.text = ex.text;
    p.tokens = {eot()};
    tokenizer_->EncodeTo(ex.text, &p.tokens);
    p.answers = {tokenizer_->ToSingleToken(ex.io).value()};
    p.wrongs = {tokenizer_->ToSingleToken(ex.s).value()};
    p.origin = absl::StrCat(held_out ? "held-out ioi #" : "ioi #", i);
    out.push_back(std::move(p));
  }
  return out;
}

std::vector<int64_t> TrainData::Rows(int64_t batch, int64_t index, uint64_t stream) const {
  const TrainDataOptions& o = options_;
  const double ioi = has_ioi() ? o.ioi_fraction : 0.0;
  const double total = o.repeats_fraction + o.chain_fraction + ioi + o.triggers_fraction;
  std::vector<int64_t> out;
  out.reserve(batch * o.seq_len);
  for (int64_t r = 0; r < batch; ++r) {
    // One generator per row: any row can be regenerated alone.
    std::seed_seq seq{o.seed, stream, static_cast<uint64_t>(index), static_cast<uint64_t>(r)};
    Rng rng(seq);
    const double u = Unit(rng) * total;
    std::vector<int64_t> row;
    if (u < o.repeats_fraction) {
      row = stream == 0 && index < o.half_repeat_batches ? HalfRepeatRow(rng) : RepeatsRow(rng);
    } else if (u < o.repeats_fraction + o.chain_fraction) {
      row = ChainRow(rng);
    } else if (u < o.repeats_fraction + o.chain_fraction + o.triggers_fraction) {
      row = TriggersRow(rng);
    } else {
      row = IoiRow(rng, /*held_out=*/stream != 0);
    }
    out.insert(out.end(), row.begin(), row.end());
  }
  return out;
}

std::vector<int64_t> TrainData::Batch(int64_t batch, int64_t index) const {
  return Rows(batch, index, 0);
}

std::vector<int64_t> TrainData::HeldOutBatch(int64_t batch, int64_t index) const {
  return Rows(batch, index, 1);
}

}  // namespace lensgrid
