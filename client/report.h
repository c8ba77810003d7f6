// The search report: one self-contained HTML page (inline CSS, SVG and a little JS; no network)
// rendered from a search's result.json and a few attention patterns.
//
// The page holds, in order: the job's identity (every top-level scalar or object of the result
// other than its outputs: method, metric, ablation, delta convention, model, dataset, job spec,
// label, ...); one heatmap per output (its axes as rows and columns; a rank-3 output is drawn as
// one panel per index of its first axis) on a diverging blue-white-red scale symmetric at the
// output's max |value| (detect-heads' scores on a sequential one), with a legend; the detector
// heatmaps (result["detectors"], each a [layer][head] list); the ranked components of each output;
// and an attention-pattern viewer (query x key, token strings on both axes, a head selector)
// built by the page's script from the AttentionViews.
//
// Every heatmap cell is an SVG <rect class="cell"> carrying data-heatmap ("output:NAME",
// "output:NAME:normalized", "detector:NAME"), data-output or data-detector, one data-AXIS per
// axis (data-layer, data-head, data-pos, data-kind, ...), data-component and data-value (the
// exact number, as JSON writes it), plus a <title> and data-tip for hover. Attention cells carry
// data-q, data-k, data-q-token, data-k-token and data-weight. The URL fragment "#attn=N" opens
// view N; clicking a head's heatmap cell opens that head's view.
//
// Pure and LibTorch-free: no I/O, no exceptions out. Text from the result and the tokens is
// escaped; invalid UTF-8 becomes U+FFFD.
//
//   ReportInput in;
//   in.result = nlohmann::ordered_json::parse(result_json_text);
//   in.attention.push_back({"blocks.1.attn.hook_pattern", 1, 2, tokens, pattern});
//   std::ofstream(dir + "/report.html") << RenderReportHtml(in);
#ifndef LENSGRID_CLIENT_REPORT_H_
#define LENSGRID_CLIENT_REPORT_H_

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

// The whole page. Never fails: a result missing fields renders what it has.
std::string RenderReportHtml(const ReportInput& in);

// Helpers, exposed for tests.
// `text` with invalid UTF-8 sequences replaced by U+FFFD.
std::string SanitizeUtf8(const std::string& text);
// `text` (sanitized) with & < > " ' escaped, for HTML text and attribute values; C0 controls
// other than tab, LF and CR become U+FFFD.
std::string EscapeHtml(const std::string& text);

}  // namespace lensgrid

#endif  // LENSGRID_CLIENT_REPORT_H_
