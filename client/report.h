// The search report: one self-contained HTML page (no network) rendered from a search's
// result.json and a few attention patterns.
//
// The page is data plus one renderer, the way circuitsvis draws from data: C++ turns the result
// into one JSON object (ReportData), placed in <script type="application/json" id="report-data">
// of a fixed skeleton; client/report/report.js (with report.css, both embedded at build time)
// draws everything from it. The data, all of it escaped by ScriptJson:
//
//   title, subtitle     strings ("lensgrid search: METHOD on DATASET", "metric ... · N prompts")
//   identity            [[field, text]]: every top-level scalar or object of the result other
//                       than its outputs (method, metric, ablation, model.*, dataset.*, job.*, ...)
//   scores, delta       method is detect-heads; the delta convention (the results' caption)
//   outputs, detectors  heatmaps: one per output (and its "normalized" twin), one per detector:
//     {key ("output:NAME", "output:NAME:normalized", "detector:NAME"), title, axes_text,
//      cell_attrs ({"output": NAME}: data-* attributes of every cell), quantity (hover text),
//      axes [{name, attr (its data-* name), ticks}], shape, values (row-major; null = no number),
//      components (each cell's name, as the search's ComponentName), scale {diverging, max}}
//     Outputs are diverging (blue-white-red) symmetric at their max |value|; detect-heads'
//     scores and detectors are sequential (white-purple) reaching at least 1.
//   ranked              [{output, total, rows: [{component, value}]}], the first 20 of each
//   attention           {views: [{hook, layer, head, tokens, pattern ([q][k] flat, each weight
//                       as its float's shortest digits), positions (before the cut)}],
//                        malformed: ["L0H1 (2 tokens, 1 weights)"]}
//
// The renderer draws each heatmap cell as an SVG <rect class="cell"> carrying data-heatmap,
// data-output (or data-output-normalized, data-detector), one data-AXIS per axis (data-layer,
// data-head, data-pos, data-kind, ...), data-component and data-value (exact), with a <title>
// and data-tip for hover. Attention cells carry data-q, data-k, data-q-token, data-k-token and
// data-weight. "#attn=N" opens view N; clicking a head's heatmap cell opens that head's view.
//
// Pure and LibTorch-free: no I/O, no exceptions out. Invalid UTF-8 becomes U+FFFD.
//
//   ReportInput in;
//   in.result = nlohmann::ordered_json::parse(result_json_text);
//   in.attention.push_back({"blocks.1.attn.hook_pattern", 1, 2, tokens, pattern});
//   std::ofstream(dir + "/report.html") << RenderReportHtml(in);
#ifndef LENSGRID_CLIENT_REPORT_H_
#define LENSGRID_CLIENT_REPORT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace lensgrid {

// One head's attention pattern on one prompt.
struct AttentionView {
  std::string hook;  // e.g. "blocks.1.attn.hook_pattern"
  int layer = 0, head = 0;
  std::vector<std::string> tokens;  // the prompt's token strings, as the tokenizer decodes them
  std::vector<float> pattern;       // [q, k] row-major, tokens.size()^2 weights
};

struct ReportInput {
  nlohmann::ordered_json result;  // the result.json content
  std::vector<AttentionView> attention;
  std::string title;  // Default (empty): "lensgrid search: METHOD on DATASET"
};

// Views whose pattern is not tokens.size()^2 are listed as malformed, not drawn; a view is cut
// to its first kMaxAttentionTokens positions (exact for a causal pattern's queries).
inline constexpr size_t kMaxAttentionTokens = 256;

// A heatmap larger than this is left out ("no values to draw"), so a hostile shape cannot
// exhaust memory.
inline constexpr int64_t kMaxHeatmapCells = int64_t{1} << 22;

// The whole page. Never fails: a result missing fields renders what it has.
std::string RenderReportHtml(const ReportInput& in);

// The page's data (above). Never fails.
nlohmann::ordered_json ReportData(const ReportInput& in);

// `data` as JSON text safe inside <script type="application/json">: "<", ">" and "&" are
// written as \u003c, \u003e, \u0026 (so neither "</script>" nor "<!--" can occur) and every
// non-ASCII character as \uXXXX; JSON.parse gives back `data`.
std::string ScriptJson(const nlohmann::ordered_json& data);

// Helpers, exposed for tests.
// `text` with invalid UTF-8 sequences replaced by U+FFFD.
std::string SanitizeUtf8(const std::string& text);
// `text` (sanitized) with & < > " ' escaped, for HTML text and attribute values; C0 controls
// other than tab, LF and CR become U+FFFD.
std::string EscapeHtml(const std::string& text);

}  // namespace lensgrid

#endif  // LENSGRID_CLIENT_REPORT_H_
