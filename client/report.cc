#include "client/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/report_assets.h"

namespace lensgrid {
namespace {

using Json = nlohmann::ordered_json;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr size_t kMaxRankedRows = 20;

// ---- text --------------------------------------------------------------------------------------

// JSON text safe inside <script>: no "<", ">" or "&" (so no "</script>" or "<!--"), and, with
// ensure_ascii, no raw U+2028/U+2029 either.
std::string ScriptJson(const Json& j) {
  std::string raw = j.dump(-1, ' ', /*ensure_ascii=*/true, Json::error_handler_t::replace);
  std::string out;
  out.reserve(raw.size());
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

// Exactly as JSON writes it (round-trips); "null" for NaN and infinities.
std::string ExactNumber(double v) {
  if (!std::isfinite(v)) return "null";
  return Json(v).dump();
}

std::string ShortNumber(double v) {
  if (!std::isfinite(v)) return "n/a";
  return absl::StrFormat("%+.4g", v);
}

// ---- tensors from nested lists -----------------------------------------------------------------

struct Grid {
  std::vector<int64_t> shape;
  std::vector<double> values;  // row-major; NaN where the JSON held no number
};

void Flatten(const Json& j, size_t depth, const std::vector<int64_t>& shape,
             std::vector<double>* out) {
  if (depth == shape.size()) {
    out->push_back(j.is_number() ? j.get<double>() : kNaN);
    return;
  }
  for (int64_t i = 0; i < shape[depth]; ++i) {
    if (j.is_array() && i < static_cast<int64_t>(j.size())) {
      Flatten(j[i], depth + 1, shape, out);
    } else {
      Flatten(Json(), depth + 1, shape, out);  // ragged or short: NaN-fill
    }
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
  Flatten(values, 0, g.shape, &g.values);
  return g;
}

// ---- axes and component names ------------------------------------------------------------------

struct Axis {
  std::string name;                 // "layer", "head", "pos", "kind", ...
  std::vector<std::string> labels;  // from "kind(attn,mlp)"; empty otherwise
  std::string attr;                 // the data- attribute name: "data-layer"
};

Axis ParseAxis(const std::string& spec) {
  Axis a;
  size_t open = spec.find('(');
  a.name = spec.substr(0, open);
  if (open != std::string::npos && spec.back() == ')') {
    std::string inner = spec.substr(open + 1, spec.size() - open - 2);
    for (size_t start = 0;;) {
      size_t comma = inner.find(',', start);
      a.labels.push_back(inner.substr(start, comma - start));
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  }
  std::string attr;
  for (char c : a.name) {
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
      attr += c;
    else if (c >= 'A' && c <= 'Z')
      attr += static_cast<char>(c - 'A' + 'a');
    else
      attr += '-';
  }
  if (attr.empty() || attr == "output" || attr == "value" || attr == "component" ||
      attr == "heatmap" || attr == "tip") {
    attr = "axis-" + attr;
  }
  a.attr = "data-" + attr;
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

// ---- colour ------------------------------------------------------------------------------------

// White -> (r,g,b) at t in [0, 1].
std::string Mix(double t, int r, int g, int b) {
  auto c = [t](int to) { return static_cast<int>(std::lround(255 + (to - 255) * t)); };
  return absl::StrFormat("#%02x%02x%02x", c(r), c(g), c(b));
}

struct Scale {
  // Blue (-max) .. white (0) .. red (+max); else white (0) .. purple (max).
  bool diverging = true;
  double max = 0;

  std::string Colour(double v) const {
    if (!std::isfinite(v)) return "#d0d0d0";
    if (max <= 0) return "#ffffff";
    double t = std::clamp(v / max, diverging ? -1.0 : 0.0, 1.0);
    if (!diverging) return Mix(t, 84, 39, 143);
    return t < 0 ? Mix(-t, 33, 102, 172) : Mix(t, 178, 24, 43);
  }
};

double MaxAbs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) {
    if (std::isfinite(x)) m = std::max(m, std::abs(x));
  }
  return m;
}

std::string Legend(const Scale& s, const std::string& id) {
  std::string lo = s.diverging ? ShortNumber(-s.max) : "0";
  std::string hi = s.diverging ? ShortNumber(s.max) : absl::StrFormat("%.4g", s.max);
  std::string stops = s.diverging
                          ? absl::StrCat("<stop offset=\"0\" stop-color=\"", s.Colour(-s.max),
                                         "\"/><stop offset=\"0.5\" "
                                         "stop-color=\"#ffffff\"/><stop offset=\"1\" "
                                         "stop-color=\"",
                                         s.Colour(s.max), "\"/>")
                          : absl::StrCat(
                                "<stop offset=\"0\" stop-color=\"#ffffff\"/><stop offset=\"1\" "
                                "stop-color=\"",
                                s.Colour(s.max), "\"/>");
  return absl::StrCat("<svg class=\"legend\" width=\"220\" height=\"34\" data-min=\"",
                      s.diverging ? ExactNumber(-s.max) : "0", "\" data-max=\"", ExactNumber(s.max),
                      "\"><defs><linearGradient id=\"", id, "\">", stops,
                      "</linearGradient></defs><rect x=\"10\" y=\"2\" width=\"200\" "
                      "height=\"12\" fill=\"url(#",
                      id,
                      ")\" stroke=\"#999\" stroke-width=\"0.5\"/><text x=\"10\" y=\"28\" "
                      "text-anchor=\"start\">",
                      EscapeHtml(lo), "</text>",
                      s.diverging ? "<text x=\"110\" y=\"28\" text-anchor=\"middle\">0</text>" : "",
                      "<text x=\"210\" y=\"28\" text-anchor=\"end\">", EscapeHtml(hi),
                      "</text></svg>");
}

// ---- heatmaps ----------------------------------------------------------------------------------

struct HeatmapSpec {
  std::string key;         // data-heatmap: "output:delta", "detector:induction"
  std::string group_attr;  // extra attribute on every cell, e.g. data-output="delta"
  std::string group_value;
  std::string quantity;  // what a value is, for the hover text
};

class PageBuilder {
 public:
  // One panel: the last two axes as rows x columns; `fixed` holds the coordinates of the leading
  // axes (a rank-3 output's panel index).
  void Panel(const HeatmapSpec& spec, const std::vector<Axis>& axes, const Grid& g,
             const Scale& scale, const std::vector<int64_t>& fixed, std::string* html) {
    size_t rank = g.shape.size();
    int64_t rows = rank >= 2 ? g.shape[rank - 2] : 1;
    int64_t cols = rank >= 1 ? g.shape[rank - 1] : 1;
    int64_t base = 0;
    for (size_t d = 0; d < fixed.size(); ++d) base = base * g.shape[d] + fixed[d];
    base *= rows * cols;
    const int cs = static_cast<int>(std::clamp<int64_t>(560 / std::max<int64_t>(cols, 1), 10, 34));
    const Axis* row_axis = rank >= 2 ? &axes[rank - 2] : nullptr;
    const Axis& col_axis = axes[rank - 1];
    const int left = row_axis ? 64 : 12, top = 40;
    const int width = left + static_cast<int>(cols) * cs + 8;
    const int height = top + static_cast<int>(rows) * cs + 8;
    absl::StrAppend(html, "<svg class=\"heatmap\" data-heatmap=\"", EscapeHtml(spec.key),
                    "\" width=\"", width, "\" height=\"", height, "\"");
    for (size_t d = 0; d < fixed.size(); ++d) {
      absl::StrAppend(html, " ", axes[d].attr, "=\"", fixed[d], "\"");
    }
    absl::StrAppend(html, ">");
    // Axis titles and ticks; columns labelled every few cells when they are narrow.
    absl::StrAppend(html, "<text class=\"axis\" x=\"", left + cols * cs / 2,
                    "\" y=\"12\" "
                    "text-anchor=\"middle\">",
                    EscapeHtml(col_axis.name), "</text>");
    if (row_axis) {
      absl::StrAppend(html, "<text class=\"axis\" x=\"12\" y=\"", top + rows * cs / 2,
                      "\" text-anchor=\"middle\" transform=\"rotate(-90 12 ", top + rows * cs / 2,
                      ")\">", EscapeHtml(row_axis->name), "</text>");
    }
    const int64_t col_step = cs >= 22 ? 1 : cs >= 14 ? 2 : 5;
    for (int64_t c = 0; c < cols; c += col_step) {
      absl::StrAppend(html, "<text x=\"", left + c * cs + cs / 2, "\" y=\"", top - 6,
                      "\" text-anchor=\"middle\">", EscapeHtml(TickLabel(col_axis, c)), "</text>");
    }
    for (int64_t r = 0; row_axis && r < rows; ++r) {
      absl::StrAppend(html, "<text x=\"", left - 5, "\" y=\"", top + r * cs + cs / 2 + 4,
                      "\" text-anchor=\"end\">", EscapeHtml(TickLabel(*row_axis, r)), "</text>");
    }
    std::vector<int64_t> coords(fixed);
    coords.resize(rank);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        if (row_axis) coords[rank - 2] = r;
        coords[rank - 1] = c;
        double v = g.values[base + r * cols + c];
        std::string component = ComponentLabel(axes, coords);
        std::string tip = absl::StrCat(component, "  ", spec.quantity, " = ",
                                       std::isfinite(v) ? ExactNumber(v) : "n/a");
        absl::StrAppend(html, "<rect class=\"cell\" x=\"", left + c * cs, "\" y=\"", top + r * cs,
                        "\" width=\"", cs, "\" height=\"", cs, "\" fill=\"", scale.Colour(v),
                        "\" data-heatmap=\"", EscapeHtml(spec.key), "\"");
        if (!spec.group_attr.empty()) {
          absl::StrAppend(html, " ", spec.group_attr, "=\"", EscapeHtml(spec.group_value), "\"");
        }
        for (size_t d = 0; d < rank; ++d) {
          absl::StrAppend(html, " ", axes[d].attr, "=\"", coords[d], "\"");
        }
        absl::StrAppend(html, " data-component=\"", EscapeHtml(component), "\" data-value=\"",
                        ExactNumber(v), "\" data-tip=\"", EscapeHtml(tip), "\"><title>",
                        EscapeHtml(tip), "</title></rect>");
      }
    }
    absl::StrAppend(html, "</svg>");
  }

  // A whole heatmap with its legend: one panel for rank <= 2, one per index of the leading axes
  // for rank 3 (and more).
  void Heatmap(const HeatmapSpec& spec, const Json& axes_json, const Grid& g, const Scale& scale,
               std::string* html) {
    size_t rank = g.shape.size();
    int64_t count = 1;
    for (int64_t s : g.shape) count *= s;
    if (rank == 0 || count == 0 || static_cast<int64_t>(g.values.size()) != count) {
      absl::StrAppend(html, "<p class=\"note\">(no values to draw)</p>");
      return;
    }
    std::vector<Axis> axes = ReadAxes(axes_json, rank);
    absl::StrAppend(html, "<div class=\"grid\">");
    std::vector<int64_t> fixed(rank > 2 ? rank - 2 : 0, 0);
    int64_t panels = 1;
    for (size_t d = 0; d < fixed.size(); ++d) panels *= g.shape[d];
    for (int64_t p = 0; p < panels; ++p) {
      int64_t rest = p;
      for (int64_t d = static_cast<int64_t>(fixed.size()) - 1; d >= 0; --d) {
        fixed[d] = rest % g.shape[d];
        rest /= g.shape[d];
      }
      absl::StrAppend(html, "<div class=\"panel\">");
      if (!fixed.empty()) {
        std::vector<std::string> parts;
        for (size_t d = 0; d < fixed.size(); ++d) {
          parts.push_back(absl::StrCat(axes[d].name, " ", TickLabel(axes[d], fixed[d])));
        }
        absl::StrAppend(html, "<h3>", EscapeHtml(absl::StrJoin(parts, ", ")), "</h3>");
      }
      Panel(spec, axes, g, scale, fixed, html);
      absl::StrAppend(html, "</div>");
    }
    absl::StrAppend(html, "</div>", Legend(scale, absl::StrCat("lg", ++legends_)));
  }

 private:
  int legends_ = 0;
};

// ---- sections ----------------------------------------------------------------------------------

std::string Str(const Json& j, const char* key) {
  if (!j.is_object() || !j.contains(key)) return "";
  const Json& v = j[key];
  return v.is_string() ? v.get<std::string>()
                       : v.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string ValueText(const Json& v) {
  if (v.is_string()) return v.get<std::string>();
  std::string s = v.dump(-1, ' ', false, Json::error_handler_t::replace);
  return s.size() > 400 ? s.substr(0, 400) + "..." : s;
}

void IdentitySection(const Json& r, std::string* html) {
  absl::StrAppend(html, "<section id=\"identity\"><h2>Job</h2><table class=\"kv\">");
  if (r.is_object()) {
    for (const auto& [key, value] : r.items()) {
      if (key == "outputs" || key == "detectors") continue;
      if (value.is_object()) {
        for (const auto& [sub, subvalue] : value.items()) {
          std::string name = absl::StrCat(key, ".", sub);
          absl::StrAppend(html, "<tr data-field=\"", EscapeHtml(name), "\"><th>", EscapeHtml(name),
                          "</th><td>", EscapeHtml(ValueText(subvalue)), "</td></tr>");
        }
      } else {
        absl::StrAppend(html, "<tr data-field=\"", EscapeHtml(key), "\"><th>", EscapeHtml(key),
                        "</th><td>", EscapeHtml(ValueText(value)), "</td></tr>");
      }
    }
  }
  absl::StrAppend(html, "</table></section>");
}

void RankedTable(const std::string& output, const Json& ranked, std::string* html) {
  if (!ranked.is_array() || ranked.empty()) return;
  double max = 0;
  for (const Json& row : ranked) {
    if (row.is_object() && row.contains("value") && row["value"].is_number()) {
      max = std::max(max, std::abs(row["value"].get<double>()));
    }
  }
  size_t n = std::min(ranked.size(), kMaxRankedRows);
  absl::StrAppend(html, "<h3>", EscapeHtml(output), ": top ", n, " of ", ranked.size(),
                  " by |value|</h3><table class=\"ranked\" data-output=\"", EscapeHtml(output),
                  "\"><tr><th>#</th><th>component</th><th>value</th><th></th></tr>");
  for (size_t i = 0; i < n; ++i) {
    const Json& row = ranked[i];
    std::string component = Str(row, "component");
    double v = row.is_object() && row.contains("value") && row["value"].is_number()
                   ? row["value"].get<double>()
                   : kNaN;
    int bar =
        max > 0 && std::isfinite(v) ? static_cast<int>(std::lround(120 * std::abs(v) / max)) : 0;
    absl::StrAppend(html, "<tr data-component=\"", EscapeHtml(component), "\" data-value=\"",
                    ExactNumber(v), "\"><td class=\"num\">", i + 1, "</td><td>",
                    EscapeHtml(component), "</td><td class=\"num\">", ShortNumber(v),
                    "</td><td><span class=\"bar\" style=\"width:", bar,
                    "px;background:", v < 0 ? "#2166ac" : "#b2182b", "\"></span></td></tr>");
  }
  absl::StrAppend(html, "</table>");
}

// Detector scores: white (0) .. purple, reaching at least 1; diverging if any score is negative.
Scale ScoreScale(const Grid& g) {
  double lo = 0;
  for (double v : g.values) {
    if (std::isfinite(v)) lo = std::min(lo, v);
  }
  return lo < 0 ? Scale{true, MaxAbs(g.values)} : Scale{false, std::max(1.0, MaxAbs(g.values))};
}

void OutputsSection(const Json& r, PageBuilder* page, std::string* html) {
  const Json outputs = r.is_object() && r.contains("outputs") ? r["outputs"] : Json::array();
  if (!outputs.is_array() || outputs.empty()) return;
  std::string delta = Str(r, "delta");
  const bool scores = Str(r, "method") == "detect-heads";
  absl::StrAppend(html, "<section id=\"outputs\"><h2>Results</h2>");
  if (scores) {
    absl::StrAppend(html,
                    "<p class=\"sub\">Head detector scores: white 0, purple high; the "
                    "scale reaches at least 1. Hover a cell for its exact value.</p>");
  } else if (!delta.empty()) {
    absl::StrAppend(html, "<p class=\"sub\">delta = ", EscapeHtml(delta),
                    ". Colour: blue negative, red positive, white zero; the "
                    "scale is symmetric "
                    "at each heatmap's largest |value|. Hover a cell for its "
                    "exact value.</p>");
  }
  std::string ranked_html;
  for (const Json& o : outputs) {
    if (!o.is_object()) continue;
    std::string name = Str(o, "name");
    const Json axes = o.contains("axes") ? o["axes"] : Json();
    const Json shape = o.contains("shape") ? o["shape"] : Json();
    std::string axes_text;
    if (axes.is_array()) {
      for (const Json& a : axes)
        absl::StrAppend(&axes_text, axes_text.empty() ? "" : " x ", ValueText(a));
    }
    for (const char* variant : {"values", "normalized"}) {
      if (!o.contains(variant)) continue;
      bool normalized = std::string(variant) == "normalized";
      Grid g = ReadGrid(o[variant], shape);
      Scale scale = scores ? ScoreScale(g) : Scale{true, MaxAbs(g.values)};
      HeatmapSpec spec{absl::StrCat("output:", name, normalized ? ":normalized" : ""),
                       normalized ? "data-output-normalized" : "data-output", name,
                       normalized ? "normalized" : name};
      absl::StrAppend(html, "<h3>", EscapeHtml(name), normalized ? " (normalized)" : "",
                      " <span class=\"note\">[", EscapeHtml(axes_text), "]</span></h3>");
      page->Heatmap(spec, axes, g, scale, html);
    }
    if (o.contains("ranked")) RankedTable(name, o["ranked"], &ranked_html);
  }
  absl::StrAppend(html, "</section>");
  if (!ranked_html.empty()) {
    absl::StrAppend(html, "<section id=\"ranked\"><h2>Ranked components</h2>", ranked_html,
                    "</section>");
  }
}

void DetectorsSection(const Json& r, PageBuilder* page, std::string* html) {
  if (!r.is_object() || !r.contains("detectors") || !r["detectors"].is_object() ||
      r["detectors"].empty()) {
    return;
  }
  absl::StrAppend(html,
                  "<section id=\"detectors\"><h2>Head detectors</h2><p class=\"sub\">"
                  "Scores per head (white 0, purple high; the scale reaches at least "
                  "1).</p>");
  for (const auto& [name, values] : r["detectors"].items()) {
    Grid g = ReadGrid(values, Json());
    Scale scale = ScoreScale(g);
    HeatmapSpec spec{absl::StrCat("detector:", name), "data-detector", name, name + " score"};
    absl::StrAppend(html, "<h3>", EscapeHtml(name), "</h3>");
    page->Heatmap(spec, Json::array({"layer", "head"}), g, scale, html);
  }
  absl::StrAppend(html, "</section>");
}

void AttentionSection(const std::vector<AttentionView>& views, std::string* html) {
  absl::StrAppend(html, "<section id=\"attention\"><h2>Attention patterns</h2>");
  std::string data = "[";
  std::vector<std::string> malformed;
  bool first = true;
  for (const AttentionView& v : views) {
    size_t n = v.tokens.size();
    if (n == 0 || v.pattern.size() != n * n) {
      malformed.push_back(
          absl::StrFormat("L%dH%d (%d tokens, %d weights)", v.layer, v.head, n, v.pattern.size()));
      continue;
    }
    size_t keep = std::min(n, kMaxAttentionTokens);
    Json tokens = Json::array();
    for (size_t i = 0; i < keep; ++i) tokens.push_back(SanitizeUtf8(v.tokens[i]));
    Json head = {{"hook", SanitizeUtf8(v.hook)},
                 {"layer", v.layer},
                 {"head", v.head},
                 {"tokens", tokens},
                 {"truncated_from", n}};
    std::string text = ScriptJson(head);
    // Drop the closing brace: the pattern follows, written by hand with a float's digits.
    text.pop_back();
    absl::StrAppend(&text, ",\"pattern\":[");
    for (size_t q = 0; q < keep; ++q) {
      for (size_t k = 0; k < keep; ++k) {
        float w = v.pattern[q * n + k];
        char buf[32];
        if (std::isfinite(w))
          std::snprintf(buf, sizeof buf, "%.9g", w);
        else
          std::snprintf(buf, sizeof buf, "null");
        absl::StrAppend(&text, (q | k) ? "," : "", buf);
      }
    }
    absl::StrAppend(&data, first ? "" : ",", text, "]}");
    first = false;
  }
  data += "]";
  if (first) {
    absl::StrAppend(html, "<p class=\"note\">No attention patterns in this report.</p>");
  } else {
    absl::StrAppend(html,
                    "<p class=\"sub\">The top heads on one prompt: each row is a query "
                    "position, each column a key; hover a cell for its weight; click a "
                    "head in "
                    "a heatmap above to open its pattern.</p><div id=\"attn-controls\">"
                    "<label>head <select id=\"attn-select\"></select></label> "
                    "<span id=\"attn-caption\" class=\"note\"></span></div>"
                    "<div id=\"attn-view\"></div>");
    for (const AttentionView& v : views) {
      if (v.tokens.size() > kMaxAttentionTokens &&
          v.pattern.size() == v.tokens.size() * v.tokens.size()) {
        absl::StrAppend(html, "<p class=\"note\">L", v.layer, "H", v.head, ": first ",
                        kMaxAttentionTokens, " of ", v.tokens.size(), " positions shown.</p>");
      }
    }
  }
  if (!malformed.empty()) {
    absl::StrAppend(html, "<p class=\"warn\">Malformed attention views left out: ",
                    EscapeHtml(absl::StrJoin(malformed, "; ")), "</p>");
  }
  absl::StrAppend(html, "<script type=\"application/json\" id=\"attn-data\">", data,
                  "</script></section>");
}

std::string DefaultTitle(const Json& r) {
  std::string method = Str(r, "method");
  std::string dataset = r.is_object() && r.contains("dataset") ? Str(r["dataset"], "name") : "";
  if (method.empty()) return "lensgrid search report";
  return absl::StrCat("lensgrid search: ", method, dataset.empty() ? "" : " on ", dataset);
}

std::string Subtitle(const Json& r) {
  std::vector<std::string> parts;
  std::string metric = Str(r, "metric"), method = Str(r, "method");
  if (!metric.empty()) parts.push_back("metric " + metric);
  if (method.rfind("ablate", 0) == 0 && !Str(r, "ablation").empty()) {
    parts.push_back(Str(r, "ablation") + " ablation");
  }
  if (r.is_object() && r.contains("dataset")) {
    std::string n = Str(r["dataset"], "n_prompts");
    if (!n.empty()) parts.push_back(n + " prompts");
  }
  if (r.is_object() && r.contains("baseline") && r["baseline"].is_number()) {
    bool patching = r.contains("clean");
    parts.push_back(absl::StrCat(patching ? "corrupted " : "clean ", metric, " ",
                                 ShortNumber(r["baseline"].get<double>())));
    if (patching && r["clean"].is_number()) {
      parts.push_back(absl::StrCat("clean ", metric, " ", ShortNumber(r["clean"].get<double>())));
    }
  }
  return absl::StrJoin(parts, " \xC2\xB7 ");
}

std::string Render(const ReportInput& in) {
  const Json& r = in.result;
  std::string title = in.title.empty() ? DefaultTitle(r) : in.title;
  std::string html;
  absl::StrAppend(&html,
                  "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                  "<meta name=\"generator\" content=\"lensgrid\"><title>",
                  EscapeHtml(title), "</title><style>", kReportCss,
                  "</style></head><body><main><h1>", EscapeHtml(title), "</h1><p class=\"sub\">",
                  EscapeHtml(Subtitle(r)), "</p>");
  PageBuilder page;
  IdentitySection(r, &html);
  OutputsSection(r, &page, &html);
  DetectorsSection(r, &page, &html);
  AttentionSection(in.attention, &html);
  absl::StrAppend(&html, "</main><div id=\"tip\" hidden></div><script>", kReportJs,
                  "</script></body></html>\n");
  return html;
}

}  // namespace

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
    return Render(in);
  } catch (const std::exception& e) {  // a bug: say so on the page rather than throw
    return absl::StrCat(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>lensgrid "
        "report</title></head><body><p>The report could not be rendered: ",
        EscapeHtml(e.what()), "</p></body></html>\n");
  }
}

}  // namespace lensgrid
