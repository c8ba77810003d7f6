#include "client/report.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/substitute.h"
#include "client/report/report_assets.h"  // generated from client/report/report.{css,js}

namespace lensgrid {
namespace {

using Json = nlohmann::ordered_json;
constexpr size_t kMaxRankedRows = 20;

// The page, fixed: $0 the title (escaped), $1 report.css, $2 the data (ScriptJson), $3 report.js.
constexpr char kSkeleton[] = R"html(<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="generator" content="lensgrid">
<title>$0</title>
<style>$1</style>
</head><body>
<main id="report"><noscript><p>This report is drawn by its script.</p></noscript></main>
<div id="tip" hidden></div>
<script type="application/json" id="report-data">$2</script>
<script>$3</script>
</body></html>
)html";

// ---- numbers and text --------------------------------------------------------------------------

// A JSON number, exactly; null for NaN and infinities.
Json Number(double v) { return std::isfinite(v) ? Json(v) : Json(); }

// A float's shortest digits that read back as the same float (JSON holds doubles; the double
// nearest "0.33333334" prints as that, not as 0.3333333432674408).
Json FloatNumber(float w) {
  if (!std::isfinite(w)) return Json();
  char buf[32];
  const auto printed = std::to_chars(buf, buf + sizeof buf, w);
  double d = w;
  std::from_chars(buf, printed.ptr, d);
  return Json(d);
}

std::string ShortNumber(double v) {
  if (!std::isfinite(v)) return "n/a";
  return absl::StrFormat("%+.4g", v);
}

std::string Str(const Json& j, const char* key) {
  if (!j.is_object() || !j.contains(key)) return "";
  const Json& v = j[key];
  return v.is_string() ? v.get<std::string>()
                       : v.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string ValueText(const Json& v) {
  if (v.is_string()) return SanitizeUtf8(v.get<std::string>());
  std::string s = v.dump(-1, ' ', false, Json::error_handler_t::replace);
  return s.size() > 400 ? s.substr(0, 400) + "..." : s;
}

// ---- grids from nested lists -------------------------------------------------------------------

struct Grid {
  std::vector<int64_t> shape;  // empty when there is nothing to draw
  std::vector<double> values;  // row-major; NaN where the JSON held no number
};

void Flatten(const Json& j, size_t depth, const std::vector<int64_t>& shape,
             std::vector<double>* out) {
  if (depth == shape.size()) {
    out->push_back(j.is_number() ? j.get<double>() : std::numeric_limits<double>::quiet_NaN());
    return;
  }
  static const Json kMissing;
  for (int64_t i = 0; i < shape[depth]; ++i) {  // ragged or short: NaN-filled
    const bool present = j.is_array() && i < static_cast<int64_t>(j.size());
    Flatten(present ? j[static_cast<size_t>(i)] : kMissing, depth + 1, shape, out);
  }
}

// The shape from "shape" when it is a list of sizes, else from the first path down the nesting.
Grid ReadGrid(const Json& values, const Json& shape_hint) {
  Grid g;
  if (shape_hint.is_array()) {
    for (const Json& s : shape_hint) {
      if (!s.is_number_integer() || s.get<int64_t>() < 0) {
        g.shape.clear();
        break;
      }
      g.shape.push_back(s.get<int64_t>());
    }
  }
  if (g.shape.empty()) {
    for (const Json* p = &values; p->is_array(); p = &(*p)[0]) {
      g.shape.push_back(static_cast<int64_t>(p->size()));
      if (p->empty()) break;
    }
  }
  constexpr size_t kMaxRank = 8;  // deeper nesting is not a search's output
  int64_t count = g.shape.size() <= kMaxRank ? 1 : 0;
  for (int64_t s : g.shape) {
    if (count == 0) break;
    if (s == 0 || s > kMaxHeatmapCells / count) {
      count = 0;
      break;
    }
    count *= s;
  }
  if (g.shape.empty() || count == 0) return Grid{};
  Flatten(values, 0, g.shape, &g.values);
  return g;
}

double MaxAbs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) {
    if (std::isfinite(x)) m = std::max(m, std::abs(x));
  }
  return m;
}

Json DivergingScale(const Grid& g) { return {{"diverging", true}, {"max", MaxAbs(g.values)}}; }

// Scores: sequential, reaching at least 1; diverging if any score is negative.
Json ScoreScale(const Grid& g) {
  for (double v : g.values) {
    if (std::isfinite(v) && v < 0) return DivergingScale(g);
  }
  return {{"diverging", false}, {"max", std::max(1.0, MaxAbs(g.values))}};
}

// ---- axes and component names ------------------------------------------------------------------

struct Axis {
  std::string name;                 // "layer", "head", "pos", "kind", ...
  std::vector<std::string> labels;  // from "kind(attn,mlp)"; empty otherwise
  std::string attr;                 // its cells' data-* attribute, without "data-"
};

Axis ParseAxis(const std::string& spec) {
  Axis a;
  const size_t open = spec.find('(');
  a.name = SanitizeUtf8(spec.substr(0, open));
  if (open != std::string::npos && spec.back() == ')') {
    const std::string inner = spec.substr(open + 1, spec.size() - open - 2);
    for (size_t start = 0;;) {
      const size_t comma = inner.find(',', start);
      a.labels.push_back(SanitizeUtf8(inner.substr(start, comma - start)));
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  }
  for (char c : a.name) {
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
      a.attr += c;
    else if (c >= 'A' && c <= 'Z')
      a.attr += static_cast<char>(c - 'A' + 'a');
    else
      a.attr += '-';
  }
  // Not one of the attributes every cell has already.
  for (const char* taken :
       {"", "output", "output-normalized", "detector", "value", "component", "heatmap", "tip"}) {
    if (a.attr == taken) a.attr = "axis-" + a.attr;
  }
  return a;
}

std::vector<Axis> ReadAxes(const Json& axes, size_t rank) {
  std::vector<Axis> out;
  for (size_t d = 0; d < rank; ++d) {
    out.push_back(ParseAxis(axes.is_array() && d < axes.size() && axes[d].is_string()
                                ? axes[d].get<std::string>()
                                : absl::StrCat("dim", d)));
  }
  return out;
}

// An index along an axis as a row/column label.
std::string TickLabel(const Axis& a, int64_t i) {
  if (i < static_cast<int64_t>(a.labels.size())) return a.labels[i];
  if (a.name == "layer") return absl::StrCat("L", i);
  if (a.name == "head") return absl::StrCat("H", i);
  return absl::StrCat(i);
}

// The same names as the search's ComponentName (worker/model/analysis/search_result.cc):
// "L1H2", "attn L1", "L0 pos 5", "L0 pos 5H1".
std::string ComponentLabel(const std::vector<Axis>& axes, const std::vector<int64_t>& coords) {
  std::string name;
  for (size_t d = 0; d < coords.size(); ++d) {
    const Axis& a = axes[d];
    if (a.name == "layer") {
      absl::StrAppend(&name, name.empty() ? "" : " ", "L", coords[d]);
    } else if (a.name == "head") {
      absl::StrAppend(&name, "H", coords[d]);
    } else if (a.name == "pos") {
      absl::StrAppend(&name, " pos ", coords[d]);
    } else {
      absl::StrAppend(&name, name.empty() ? "" : " ", TickLabel(a, coords[d]));
    }
  }
  return name;
}

// ---- sections ----------------------------------------------------------------------------------

struct HeatmapSpec {
  std::string key;    // "output:delta", "detector:induction"
  std::string title;  // "delta (normalized)"
  Json cell_attrs;    // {"output": "delta"}
  std::string quantity;
};

Json Heatmap(const HeatmapSpec& spec, const Json& axes_json, const Grid& g, Json scale) {
  std::string axes_text;
  if (axes_json.is_array()) {
    for (const Json& a : axes_json)
      absl::StrAppend(&axes_text, axes_text.empty() ? "" : " x ", ValueText(a));
  }
  Json axes = Json::array(), values = Json::array(), components = Json::array();
  const std::vector<Axis> parsed = ReadAxes(axes_json, g.shape.size());
  for (size_t d = 0; d < parsed.size(); ++d) {
    Json ticks = Json::array();
    for (int64_t i = 0; i < g.shape[d]; ++i) ticks.push_back(TickLabel(parsed[d], i));
    axes.push_back({{"name", parsed[d].name}, {"attr", parsed[d].attr}, {"ticks", ticks}});
  }
  std::vector<int64_t> coords(g.shape.size(), 0);
  for (double v : g.values) {
    values.push_back(Number(v));
    components.push_back(ComponentLabel(parsed, coords));
    for (size_t d = coords.size(); d-- > 0;) {  // the next coordinates, row-major
      if (++coords[d] < g.shape[d]) break;
      coords[d] = 0;
    }
  }
  return {{"key", SanitizeUtf8(spec.key)},
          {"title", SanitizeUtf8(spec.title)},
          {"axes_text", axes_text},
          {"cell_attrs", spec.cell_attrs},
          {"quantity", SanitizeUtf8(spec.quantity)},
          {"axes", axes},
          {"shape", g.shape},
          {"values", values},
          {"components", components},
          {"scale", scale}};
}

Json Identity(const Json& r) {
  Json rows = Json::array();
  if (!r.is_object()) return rows;
  for (const auto& [key, value] : r.items()) {
    if (key == "outputs" || key == "detectors" || key == "circuit") continue;
    if (value.is_object()) {
      for (const auto& [sub, subvalue] : value.items()) {
        rows.push_back({SanitizeUtf8(absl::StrCat(key, ".", sub)), ValueText(subvalue)});
      }
    } else {
      rows.push_back({SanitizeUtf8(key), ValueText(value)});
    }
  }
  return rows;
}

Json Ranked(const std::string& output, const Json& ranked) {
  Json rows = Json::array();
  for (size_t i = 0; i < ranked.size() && i < kMaxRankedRows; ++i) {
    const Json& row = ranked[i];
    const bool has_value = row.is_object() && row.contains("value") && row["value"].is_number();
    rows.push_back({{"component", SanitizeUtf8(Str(row, "component"))},
                    {"value", has_value ? Number(row["value"].get<double>()) : Json()}});
  }
  return {{"output", output}, {"total", ranked.size()}, {"rows", rows}};
}

// The outputs' heatmaps (and their normalized twins) and ranked tables, into `data`.
void Outputs(const Json& r, Json* data) {
  const bool scores = Str(r, "method") == "detect-heads";
  (*data)["scores"] = scores;
  (*data)["delta"] = SanitizeUtf8(Str(r, "delta"));
  Json heatmaps = Json::array(), ranked = Json::array();
  const Json outputs = r.is_object() && r.contains("outputs") ? r["outputs"] : Json::array();
  for (const Json& o : outputs.is_array() ? outputs : Json::array()) {
    if (!o.is_object()) continue;
    const std::string name = SanitizeUtf8(Str(o, "name"));
    const Json axes = o.contains("axes") ? o["axes"] : Json();
    const Json shape = o.contains("shape") ? o["shape"] : Json();
    // One score per edge: the circuit view draws them, not a heatmap.
    const bool edges = axes == Json::array({"edge"});
    for (const bool normalized : {false, true}) {
      if (edges) break;
      const char* variant = normalized ? "normalized" : "values";
      if (!o.contains(variant)) continue;
      const Grid g = ReadGrid(o[variant], shape);
      const HeatmapSpec spec{absl::StrCat("output:", name, normalized ? ":normalized" : ""),
                             absl::StrCat(name, normalized ? " (normalized)" : ""),
                             {{normalized ? "output-normalized" : "output", name}},
                             normalized ? "normalized" : name};
      heatmaps.push_back(Heatmap(spec, axes, g, scores ? ScoreScale(g) : DivergingScale(g)));
    }
    if (o.contains("ranked") && o["ranked"].is_array() && !o["ranked"].empty()) {
      ranked.push_back(Ranked(name, o["ranked"]));
    }
  }
  (*data)["outputs"] = heatmaps;
  (*data)["ranked"] = ranked;
}

// result.json's "circuit" (client/circuit_output.h) for the circuit view: the same keys, with
// strings made valid UTF-8 and numbers finite (null otherwise); null when there is none.
Json Circuit(const Json& r) {
  if (!r.is_object() || !r.contains("circuit") || !r["circuit"].is_object()) return Json();
  const Json& c = r["circuit"];
  auto num = [](const Json& o, const char* key) {
    return o.is_object() && o.contains(key) && o[key].is_number() ? Number(o[key].get<double>())
                                                                  : Json();
  };
  auto list = [&c](const char* key) {
    return c.contains(key) && c[key].is_array() ? c[key] : Json::array();
  };
  Json out;
  const Json graph = c.contains("graph") ? c["graph"] : Json::object();
  out["graph"] = {{"n_layers", num(graph, "n_layers")},
                  {"n_heads", num(graph, "n_heads")},
                  {"attn_only", graph.is_object() && graph.value("attn_only", false)}};
  Json nodes = Json::array();
  for (const Json& n : list("nodes")) {
    if (!n.is_object()) continue;
    Json node = {{"name", SanitizeUtf8(Str(n, "name"))},
                 {"kind", SanitizeUtf8(Str(n, "kind"))},
                 {"layer", num(n, "layer")}};
    if (n.contains("head")) node["head"] = num(n, "head");
    nodes.push_back(std::move(node));
  }
  out["nodes"] = std::move(nodes);
  Json edges = Json::array();
  for (const Json& e : list("edges")) {
    if (!e.is_object()) continue;
    edges.push_back(
        {{"name", SanitizeUtf8(Str(e, "name"))},
         {"sender", SanitizeUtf8(Str(e, "sender"))},
         {"receiver", SanitizeUtf8(Str(e, "receiver"))},
         {"channel", SanitizeUtf8(Str(e, "channel"))},
         {"score", num(e, "score")},
         {"kept", e.contains("kept") && e["kept"].is_boolean() && e["kept"].get<bool>()}});
  }
  out["edges"] = std::move(edges);
  out["threshold"] = num(c, "threshold");
  out["selection"] = SanitizeUtf8(Str(c, "selection"));
  out["kept"] = num(c, "kept");
  if (c.contains("faithfulness") && c["faithfulness"].is_object()) {
    const Json& f = c["faithfulness"];
    out["faithfulness"] = {{"circuit", num(f, "circuit")},
                           {"full", num(f, "full")},
                           {"corrupted", num(f, "corrupted")},
                           {"fraction", num(f, "fraction")},
                           {"normalized", num(f, "normalized")}};
  }
  return out;
}

Json Detectors(const Json& r) {
  Json heatmaps = Json::array();
  if (!r.is_object() || !r.contains("detectors") || !r["detectors"].is_object()) return heatmaps;
  const Json axes = Json::array({"layer", "head"});
  for (const auto& [key, values] : r["detectors"].items()) {
    const std::string name = SanitizeUtf8(key);
    const Grid g = ReadGrid(values, Json());
    heatmaps.push_back(Heatmap(
        {absl::StrCat("detector:", name), name, {{"detector", name}}, absl::StrCat(name, " score")},
        axes, g, ScoreScale(g)));
  }
  return heatmaps;
}

Json Attention(const std::vector<AttentionView>& views) {
  Json drawn = Json::array(), malformed = Json::array();
  for (const AttentionView& v : views) {
    const size_t n = v.tokens.size();
    if (n == 0 || v.pattern.size() != n * n) {
      malformed.push_back(
          absl::StrFormat("L%dH%d (%d tokens, %d weights)", v.layer, v.head, n, v.pattern.size()));
      continue;
    }
    const size_t keep = std::min(n, kMaxAttentionTokens);
    Json tokens = Json::array(), pattern = Json::array();
    for (size_t i = 0; i < keep; ++i) tokens.push_back(SanitizeUtf8(v.tokens[i]));
    for (size_t q = 0; q < keep; ++q) {
      for (size_t k = 0; k < keep; ++k) pattern.push_back(FloatNumber(v.pattern[q * n + k]));
    }
    drawn.push_back({{"hook", SanitizeUtf8(v.hook)},
                     {"layer", v.layer},
                     {"head", v.head},
                     {"tokens", tokens},
                     {"pattern", pattern},
                     {"positions", n}});
  }
  return {{"views", drawn}, {"malformed", malformed}};
}

std::string DefaultTitle(const Json& r) {
  const std::string method = Str(r, "method");
  const std::string dataset =
      r.is_object() && r.contains("dataset") ? Str(r["dataset"], "name") : "";
  if (method.empty()) return "lensgrid search report";
  return absl::StrCat("lensgrid search: ", method, dataset.empty() ? "" : " on ", dataset);
}

std::string Subtitle(const Json& r) {
  std::vector<std::string> parts;
  const std::string metric = Str(r, "metric"), method = Str(r, "method");
  if (!metric.empty()) parts.push_back("metric " + metric);
  if (method.rfind("ablate", 0) == 0 && !Str(r, "ablation").empty()) {
    parts.push_back(Str(r, "ablation") + " ablation");
  }
  if (r.is_object() && r.contains("dataset")) {
    const std::string n = Str(r["dataset"], "n_prompts");
    if (!n.empty()) parts.push_back(n + " prompts");
  }
  if (r.is_object() && r.contains("baseline") && r["baseline"].is_number()) {
    const bool patching = r.contains("clean");
    parts.push_back(absl::StrCat(patching ? "corrupted " : "clean ", metric, " ",
                                 ShortNumber(r["baseline"].get<double>())));
    if (patching && r["clean"].is_number()) {
      parts.push_back(absl::StrCat("clean ", metric, " ", ShortNumber(r["clean"].get<double>())));
    }
  }
  return absl::StrJoin(parts, " \xC2\xB7 ");
}

}  // namespace

Json ReportData(const ReportInput& in) {
  const Json& r = in.result;
  Json data;
  data["title"] = SanitizeUtf8(in.title.empty() ? DefaultTitle(r) : in.title);
  data["subtitle"] = SanitizeUtf8(Subtitle(r));
  data["identity"] = Identity(r);
  Outputs(r, &data);
  data["detectors"] = Detectors(r);
  if (Json circuit = Circuit(r); !circuit.is_null()) data["circuit"] = std::move(circuit);
  data["attention"] = Attention(in.attention);
  return data;
}

std::string ScriptJson(const Json& data) {
  const std::string raw = data.dump(-1, ' ', /*ensure_ascii=*/true, Json::error_handler_t::replace);
  std::string out;
  out.reserve(raw.size() + raw.size() / 16);
  for (char c : raw) {
    if (c == '<')
      out += "\\u003c";
    else if (c == '>')
      out += "\\u003e";
    else if (c == '&')
      out += "\\u0026";
    else
      out += c;
  }
  return out;
}

std::string SanitizeUtf8(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  for (size_t i = 0; i < n;) {
    unsigned char c = s[i];
    size_t len = c < 0x80           ? 1
                 : (c >> 5) == 0x6  ? 2
                 : (c >> 4) == 0xE  ? 3
                 : (c >> 3) == 0x1E ? 4
                                    : 0;
    bool ok = len > 0 && i + len <= n;
    uint32_t cp = len == 1 ? c : len == 2 ? c & 0x1F : len == 3 ? c & 0x0F : c & 0x07;
    for (size_t k = 1; ok && k < len; ++k) {
      ok = (s[i + k] & 0xC0) == 0x80;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    // No overlong forms, no surrogates, nothing past U+10FFFF.
    if (ok) {
      ok = !(len == 2 && cp < 0x80) && !(len == 3 && cp < 0x800) && !(len == 4 && cp < 0x10000) &&
           !(cp >= 0xD800 && cp <= 0xDFFF) && cp <= 0x10FFFF;
    }
    if (ok) {
      out.append(text, i, len);
      i += len;
    } else {
      out += "\xEF\xBF\xBD";  // U+FFFD for the first byte; go on from the next
      ++i;
    }
  }
  return out;
}

std::string EscapeHtml(const std::string& text) {
  std::string clean = SanitizeUtf8(text);
  std::string out;
  out.reserve(clean.size() + clean.size() / 8);
  for (char c : clean) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        // C0 controls other than tab, LF and CR are not allowed in HTML text.
        if ((static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n' && c != '\r') ||
            c == '\x7f') {
          out += "\xEF\xBF\xBD";
        } else {
          out += c;
        }
    }
  }
  return out;
}

std::string RenderReportHtml(const ReportInput& in) {
  try {
    const Json data = ReportData(in);
    return absl::Substitute(kSkeleton, EscapeHtml(data["title"].get<std::string>()), kReportCss,
                            ScriptJson(data), kReportJs);
  } catch (const std::exception& e) {  // a bug: say so on the page rather than throw
    return absl::StrCat(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>lensgrid "
        "report</title></head><body><p>The report could not be rendered: ",
        EscapeHtml(e.what()), "</p></body></html>\n");
  }
}

}  // namespace lensgrid
