#include "client/report.h"

#include <cctype>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <tuple>

#include "client/report/report_assets.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace lensgrid {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using Json = nlohmann::ordered_json;

size_t Count(const std::string& haystack, const std::string& needle) {
  size_t n = 0;
  for (size_t at = haystack.find(needle); at != std::string::npos;
       at = haystack.find(needle, at + needle.size())) {
    ++n;
  }
  return n;
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// The text of the page's data element, or "" if the page has none.
std::string DataText(const std::string& html) {
  const std::string open = "<script type=\"application/json\" id=\"report-data\">";
  const size_t start = html.find(open);
  if (start == std::string::npos) return "";
  const size_t end = html.find("</script>", start);
  return html.substr(start + open.size(), end - start - open.size());
}

// The page less its renderer (whose comments may name elements): the skeleton and the data.
std::string WithoutRenderer(std::string html) {
  const size_t at = html.find(kReportJs);
  if (at != std::string::npos) html.erase(at, std::string(kReportJs).size());
  return html;
}

// What `lensgrid search --method ablate-heads` writes, cut to 2 layers x 3 heads.
Json HeadAblationResult() {
  return Json::parse(R"json({
    "method": "ablate-heads", "metric": "logit-diff", "ablation": "mean",
    "delta": "metric(intervened) - metric(clean)",
    "model": {"dir": "/m", "weights_sha256": "ab12", "processed": true, "n_layers": 2, "n_heads": 3},
    "dataset": {"name": "ioi", "n_prompts": 4, "seed": 7, "positions": 19},
    "baseline": 2.5,
    "outputs": [{"name": "delta", "axes": ["layer", "head"], "shape": [2, 3],
                 "values": [[-0.5, 0.0, 0.125], [0.022206585854291916, 1.0, -0.25]],
                 "ranked": [{"component": "L1H1", "value": 1.0},
                            {"component": "L0H0", "value": -0.5}]}]
  })json");
}

TEST(SanitizeUtf8Test, KeepsValidTextAndReplacesEachBadByte) {
  EXPECT_EQ(SanitizeUtf8("plain \xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"),
            "plain \xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80");
  EXPECT_EQ(SanitizeUtf8("a\xFF"
                         "b"),
            "a\xEF\xBF\xBD"
            "b");
  EXPECT_EQ(SanitizeUtf8("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");  // overlong '/'
  EXPECT_EQ(SanitizeUtf8("\xED\xA0\x80"),
            "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");                  // surrogate
  EXPECT_EQ(SanitizeUtf8("x\xE2\x82"), "x\xEF\xBF\xBD\xEF\xBF\xBD");  // cut short
  EXPECT_EQ(SanitizeUtf8("\xF4\x90\x80\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST(EscapeHtmlTest, EscapesMarkupQuotesAndControls) {
  EXPECT_EQ(EscapeHtml("<a href=\"x\">Tom & Jerry's</a>"),
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; Jerry&#39;s&lt;/a&gt;");
  EXPECT_EQ(EscapeHtml(std::string("a\0b\nc\td", 7)),
            "a\xEF\xBF\xBD"
            "b\nc\td");
  EXPECT_EQ(EscapeHtml("\xFE<"), "\xEF\xBF\xBD&lt;");
}

// ---- the page: a fixed skeleton, the data, the renderer ----------------------------------------

TEST(RenderReportHtmlTest, SkeletonHoldsTheDataAndTheRenderer) {
  const ReportInput in{HeadAblationResult(), {}, ""};
  const std::string html = RenderReportHtml(in);
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_THAT(html, HasSubstr("<title>lensgrid search: ablate-heads on ioi</title>"));
  EXPECT_THAT(html, HasSubstr("<main id=\"report\">"));
  EXPECT_THAT(html, HasSubstr(std::string("<style>") + kReportCss + "</style>"));
  EXPECT_THAT(html, HasSubstr(std::string("<script>") + kReportJs + "</script>"));
  EXPECT_EQ(Json::parse(DataText(html)), ReportData(in));
  EXPECT_EQ(DataText(html), ScriptJson(ReportData(in)));
  // The data and the renderer's own script, nothing else; and no markup built from the data.
  const std::string page = WithoutRenderer(html);
  EXPECT_EQ(Count(Lower(page), "<script"), 2u);
  EXPECT_EQ(Count(page, "<rect"), 0u);
  EXPECT_EQ(Count(page, "<table"), 0u);
  // Nothing fetched: no external scripts, styles, images or imports.
  EXPECT_THAT(html, Not(HasSubstr(" src=")));
  EXPECT_THAT(html, Not(HasSubstr("<link")));
  EXPECT_THAT(html, Not(HasSubstr("@import")));
  EXPECT_THAT(html, Not(HasSubstr("href=")));
  EXPECT_THAT(html, Not(HasSubstr("url(http")));
  EXPECT_THAT(html, Not(HasSubstr("fetch(")));
  EXPECT_THAT(html, Not(HasSubstr("XMLHttpRequest")));
  EXPECT_THAT(html, HasSubstr("</html>"));
}

// The generated header holds the source tree's files byte for byte (client/report/*.{js,css}),
// and neither can end its element early.
TEST(RenderReportHtmlTest, RendererIsTheSourceTreesFiles) {
  const char* src = std::getenv("LENSGRID_SOURCE_DIR");
  const std::string root = src != nullptr ? src : ".";
  for (auto [file, embedded, element] :
       {std::tuple<const char*, const char*, const char*>{"report.js", kReportJs, "</script"},
        {"report.css", kReportCss, "</style"}}) {
    std::ifstream in(root + "/client/report/" + file, std::ios::binary);
    ASSERT_TRUE(in) << file;
    std::stringstream text;
    text << in.rdbuf();
    EXPECT_EQ(text.str(), embedded) << file;
    EXPECT_THAT(Lower(embedded), Not(HasSubstr(element))) << file;
  }
}

// ---- the data ----------------------------------------------------------------------------------

TEST(ReportDataTest, HeatmapHasCoordinatesNamesExactValuesAndItsScale) {
  const Json data = ReportData({HeadAblationResult(), {}, ""});
  ASSERT_EQ(data["outputs"].size(), 1u);
  const Json& hm = data["outputs"][0];
  EXPECT_EQ(hm["key"], "output:delta");
  EXPECT_EQ(hm["title"], "delta");
  EXPECT_EQ(hm["axes_text"], "layer x head");
  EXPECT_EQ(hm["cell_attrs"], Json({{"output", "delta"}}));
  EXPECT_EQ(hm["quantity"], "delta");
  EXPECT_EQ(hm["shape"], Json({2, 3}));
  EXPECT_EQ(hm["axes"][0], Json::parse(R"({"name": "layer", "attr": "layer",
                                           "ticks": ["L0", "L1"]})"));
  EXPECT_EQ(hm["axes"][1]["ticks"], Json({"H0", "H1", "H2"}));
  EXPECT_EQ(hm["values"], Json({-0.5, 0.0, 0.125, 0.022206585854291916, 1.0, -0.25}));
  EXPECT_EQ(hm["components"], Json({"L0H0", "L0H1", "L0H2", "L1H0", "L1H1", "L1H2"}));
  // Diverging, symmetric at max |value|.
  EXPECT_EQ(hm["scale"], Json({{"diverging", true}, {"max", 1.0}}));
  // Values survive the page's text exactly.
  EXPECT_THAT(ScriptJson(data), HasSubstr("0.022206585854291916"));
}

TEST(ReportDataTest, IdentityRankedTitleAndSubtitle) {
  Json r = HeadAblationResult();
  r["label"] = "nightly <ioi>";
  r["job"] = {{"id", "job-42"}, {"spec", {{"shards", 8}}}};
  const Json data = ReportData({r, {}, ""});
  EXPECT_EQ(data["title"], "lensgrid search: ablate-heads on ioi");
  EXPECT_EQ(data["subtitle"],
            "metric logit-diff \xC2\xB7 mean ablation \xC2\xB7 4 prompts \xC2\xB7 "
            "clean logit-diff +2.5");
  EXPECT_EQ(data["delta"], "metric(intervened) - metric(clean)");
  EXPECT_EQ(data["scores"], false);
  const Json& id = data["identity"];
  EXPECT_EQ(id[0], Json({"method", "ablate-heads"}));
  EXPECT_THAT(id, testing::Contains(Json({"model.weights_sha256", "ab12"})));
  EXPECT_THAT(id, testing::Contains(Json({"model.processed", "true"})));
  EXPECT_THAT(id, testing::Contains(Json({"dataset.seed", "7"})));
  EXPECT_THAT(id, testing::Contains(Json({"label", "nightly <ioi>"})));
  EXPECT_THAT(id, testing::Contains(Json({"job.id", "job-42"})));
  EXPECT_THAT(id, testing::Contains(Json({"job.spec", "{\"shards\":8}"})));
  for (const Json& row : id) EXPECT_NE(row[0], "outputs");
  EXPECT_EQ(data["ranked"], Json::parse(R"([{"output": "delta", "total": 2, "rows": [
      {"component": "L1H1", "value": 1.0}, {"component": "L0H0", "value": -0.5}]}])"));
  EXPECT_EQ(ReportData({r, {}, "my title"})["title"], "my title");
}

TEST(ReportDataTest, RankedIsCutToTwentyOfAll) {
  Json r = HeadAblationResult();
  Json& ranked = r["outputs"][0]["ranked"];
  for (int i = 0; i < 30; ++i) ranked.push_back({{"component", "x"}, {"value", 0.01}});
  ranked.push_back({{"value", "not a number"}});
  const Json data = ReportData({r, {}, ""});
  EXPECT_EQ(data["ranked"][0]["total"], 33);
  EXPECT_EQ(data["ranked"][0]["rows"].size(), 20u);
}

TEST(ReportDataTest, OtherAxesRankThreeNormalizedAndDetectors) {
  const Json r = Json::parse(R"json({
    "method": "patch-heads-by-pos", "metric": "logit-diff", "baseline": 0.5, "clean": 1.5,
    "outputs": [
      {"name": "delta", "axes": ["layer", "pos", "head"], "shape": [2, 3, 2],
       "values": [[[1, 2], [3, 4], [5, 6]], [[-1, -2], [-3, -4], [-5, -6]]],
       "normalized": [[[1, 2], [3, 4], [5, 6]], [[-1, -2], [-3, -4], [-5, -6]]]},
      {"name": "layers", "axes": ["kind(attn,mlp)", "layer"], "shape": [2, 2],
       "values": [[0.5, 0.25], [-0.5, null]]}],
    "detectors": {"induction": [[0.1, 0.9], [0.7, 0.0]], "previous-token": [[0.2, 0.3], [0.4, 0.5]]}
  })json");
  const Json data = ReportData({r, {}, ""});
  ASSERT_EQ(data["outputs"].size(), 3u);
  const Json& delta = data["outputs"][0];
  EXPECT_EQ(delta["shape"], Json({2, 3, 2}));
  EXPECT_EQ(delta["components"][10], "L1 pos 2H0");
  EXPECT_EQ(delta["values"][10], -5.0);
  EXPECT_EQ(delta["axes"][1]["ticks"], Json({"0", "1", "2"}));
  EXPECT_EQ(delta["scale"]["max"], 6.0);
  const Json& normalized = data["outputs"][1];
  EXPECT_EQ(normalized["key"], "output:delta:normalized");
  EXPECT_EQ(normalized["title"], "delta (normalized)");
  EXPECT_EQ(normalized["cell_attrs"], Json({{"output-normalized", "delta"}}));
  EXPECT_EQ(normalized["quantity"], "normalized");
  const Json& layers = data["outputs"][2];
  EXPECT_EQ(layers["axes"][0], Json::parse(R"({"name": "kind", "attr": "kind",
                                               "ticks": ["attn", "mlp"]})"));
  EXPECT_EQ(layers["components"], Json({"attn L0", "attn L1", "mlp L0", "mlp L1"}));
  EXPECT_EQ(layers["values"], Json({0.5, 0.25, -0.5, nullptr}));
  ASSERT_EQ(data["detectors"].size(), 2u);
  const Json& induction = data["detectors"][0];
  EXPECT_EQ(induction["key"], "detector:induction");
  EXPECT_EQ(induction["cell_attrs"], Json({{"detector", "induction"}}));
  EXPECT_EQ(induction["quantity"], "induction score");
  EXPECT_EQ(induction["components"][1], "L0H1");
  EXPECT_EQ(induction["values"][1], 0.9);
  EXPECT_EQ(induction["scale"], Json({{"diverging", false}, {"max", 1.0}}));  // at least 1
  EXPECT_EQ(data["detectors"][1]["key"], "detector:previous-token");
  EXPECT_EQ(data["subtitle"],
            "metric logit-diff \xC2\xB7 corrupted logit-diff +0.5 \xC2\xB7 "
            "clean logit-diff +1.5");
}

TEST(ReportDataTest, AxisNamesNeverTakeACellsOwnAttributes) {
  const Json r = Json::parse(R"json({"outputs": [{"name": "x",
      "axes": ["value", "Detector", "a b\"<"], "shape": [1, 1, 1], "values": [[[1]]]}]})json");
  const Json axes = ReportData({r, {}, ""})["outputs"][0]["axes"];
  EXPECT_EQ(axes[0]["attr"], "axis-value");
  EXPECT_EQ(axes[1]["attr"], "axis-detector");
  EXPECT_EQ(axes[2]["attr"], "a-b--");
}

TEST(ReportDataTest, DetectHeadsOutputsAreScoresOnASequentialScale) {
  const Json r = Json::parse(R"json({"method": "detect-heads", "outputs": [
    {"name": "induction", "axes": ["layer", "head"], "shape": [1, 2], "values": [[0.5, 0.0]]}]})json");
  const Json data = ReportData({r, {}, ""});
  EXPECT_EQ(data["scores"], true);
  EXPECT_EQ(data["outputs"][0]["scale"], Json({{"diverging", false}, {"max", 1.0}}));
}

TEST(ReportDataTest, AttentionViewsShortestFloatsCutAndMalformed) {
  AttentionView v{"blocks.1.attn.hook_pattern", 1, 2, {"a", "b"}, {1.0f / 3.0f, 0.2f, 0.5f, 1.0f}};
  AttentionView bad{"blocks.0.attn.hook_pattern", 0, 1, {"a", "b"}, {1.0f}};
  AttentionView long_view{"blocks.0.attn.hook_pattern", 0, 0, {}, {}};
  const size_t n = kMaxAttentionTokens + 3;
  long_view.tokens.assign(n, "t");
  long_view.pattern.assign(n * n, 0.25f);
  const Json att = ReportData({HeadAblationResult(), {v, bad, long_view}, ""})["attention"];
  ASSERT_EQ(att["views"].size(), 2u);
  EXPECT_EQ(att["views"][0]["hook"], "blocks.1.attn.hook_pattern");
  EXPECT_EQ(att["views"][0]["layer"], 1);
  EXPECT_EQ(att["views"][0]["head"], 2);
  EXPECT_EQ(att["views"][0]["tokens"], Json({"a", "b"}));
  EXPECT_EQ(att["views"][0]["positions"], 2);
  // Each weight as its float's shortest digits, which read back as the same float.
  EXPECT_THAT(ScriptJson(att), HasSubstr("\"pattern\":[0.33333334,0.2,0.5,1.0]"));
  EXPECT_EQ(static_cast<float>(att["views"][0]["pattern"][0].get<double>()), 1.0f / 3.0f);
  EXPECT_EQ(att["views"][1]["tokens"].size(), kMaxAttentionTokens);
  EXPECT_EQ(att["views"][1]["pattern"].size(), kMaxAttentionTokens * kMaxAttentionTokens);
  EXPECT_EQ(att["views"][1]["positions"], n);
  EXPECT_THAT(att["malformed"], ElementsAre("L0H1 (2 tokens, 1 weights)"));
  EXPECT_EQ(ReportData({HeadAblationResult(), {}, ""})["attention"],
            Json::parse(R"({"views": [], "malformed": []})"));
}

// ---- hostile text ------------------------------------------------------------------------------

TEST(RenderReportHtmlTest, HostileStringsStayDataAndCannotLeaveTheirElement) {
  const std::string hostile_tokens[] = {
      "<|endoftext|>",
      "</script><script>alert(1)</script>",
      "</SCRIPT >",
      "<!--",
      "<script>",
      " \"quoted\" 'single' & amp",
      "\n\t\r",
      "\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80",
      "\xE2\x80\xA8\xE2\x80\xA9",  // U+2028, U+2029: line breaks to old JavaScript
      "\\u003c/script>",
      "]]>",
      "\xFF"};
  AttentionView v{"blocks.0.attn.hook_pattern</script>", 0, 0, {}, {}};
  for (const std::string& t : hostile_tokens) v.tokens.push_back(t);
  const size_t n = v.tokens.size();
  v.pattern.assign(n * n, 1.0f / n);
  Json r = HeadAblationResult();
  r["label"] = "</script><img src=x onerror=alert(1)>";
  r["method"] = "<script>alert(1)</script>";
  r["outputs"][0]["name"] = "a\"b</script>";
  r["outputs"][0]["ranked"][0]["component"] = "</script>";
  r["detectors"] = Json::parse(R"({"</script>": [[0.5]]})");
  const ReportInput in{r, {v}, "x</title><script>alert(1)</script>"};
  const std::string html = WithoutRenderer(RenderReportHtml(in));

  // Only the skeleton's two scripts open and close; no data can end its element.
  EXPECT_EQ(Count(Lower(html), "<script"), 2u);
  EXPECT_EQ(Count(Lower(html), "</script"), 2u);
  EXPECT_EQ(Count(html, "<title>"), 1u);
  EXPECT_EQ(Count(Lower(html), "</title"), 1u);
  EXPECT_THAT(html, HasSubstr("<title>x&lt;/title&gt;&lt;script&gt;alert(1)&lt;/script&gt;"));
  EXPECT_THAT(html, Not(HasSubstr("<img")));
  const std::string text = DataText(html);
  EXPECT_EQ(text.find_first_of("<>&"), std::string::npos);
  for (char c : text) EXPECT_LT(static_cast<unsigned char>(c), 0x80);  // ASCII, U+2028 escaped
  EXPECT_THAT(text, Not(HasSubstr("<!--")));

  // And it reads back as the very strings (invalid UTF-8 as U+FFFD).
  const Json back = Json::parse(text);
  EXPECT_EQ(back, ReportData(in));
  const Json& tokens = back["attention"]["views"][0]["tokens"];
  ASSERT_EQ(tokens.size(), n);
  for (size_t i = 0; i + 1 < n; ++i) EXPECT_EQ(tokens[i], hostile_tokens[i]) << i;
  EXPECT_EQ(tokens[n - 1], "\xEF\xBF\xBD");
  EXPECT_EQ(back["attention"]["views"][0]["hook"], "blocks.0.attn.hook_pattern</script>");
  EXPECT_EQ(back["title"], "x</title><script>alert(1)</script>");
  EXPECT_EQ(back["outputs"][0]["cell_attrs"]["output"], "a\"b</script>");
  EXPECT_EQ(back["ranked"][0]["rows"][0]["component"], "</script>");
  EXPECT_EQ(back["detectors"][0]["key"], "detector:</script>");
  EXPECT_THAT(back["identity"],
              testing::Contains(Json({"label", "</script><img src=x onerror=alert(1)>"})));
}

TEST(RenderReportHtmlTest, InvalidUtf8InTheResultBecomesReplacementCharacters) {
  Json r = HeadAblationResult();
  r["label"] = "bad \xFF byte";
  r["outputs"][0]["name"] = "n\xC0";
  const std::string html = RenderReportHtml({r, {}, ""});
  const Json back = Json::parse(DataText(html));
  EXPECT_THAT(back["identity"], testing::Contains(Json({"label", "bad \xEF\xBF\xBD byte"})));
  EXPECT_EQ(back["outputs"][0]["title"], "n\xEF\xBF\xBD");
}

TEST(RenderReportHtmlTest, MalformedResultsStillRender) {
  for (const char* text : {"42", "{}", "{\"outputs\": 3}", "{\"outputs\": [{\"values\": \"x\"}]}",
                           "{\"outputs\": [{\"name\": 1, \"axes\": 2, \"shape\": [-1], "
                           "\"values\": [[1],[2,3]],"
                           " \"ranked\": [1, {\"value\": \"x\"}]}], \"detectors\": {\"d\": 5}}",
                           "{\"outputs\": [{\"shape\": [2, 2], \"values\": [[1]]}]}",
                           "{\"outputs\": [{\"shape\": [100000, 100000, 100000], \"values\": []}]}",
                           "{\"outputs\": [{\"shape\": [1,1,1,1,1,1,1,1,1,1,1,1], "
                           "\"values\": []}]}"}) {
    const std::string html = RenderReportHtml({Json::parse(text), {}, ""});
    EXPECT_THAT(html, HasSubstr("</html>")) << text;
    EXPECT_THAT(html, Not(HasSubstr("could not be rendered"))) << text;
    const Json data = Json::parse(DataText(html));
    for (const Json& hm : data["outputs"]) {
      EXPECT_LE(hm["values"].size(), static_cast<size_t>(kMaxHeatmapCells)) << text;
    }
  }
  // A short list is filled with nulls to its shape.
  const Json data =
      ReportData({Json::parse("{\"outputs\": [{\"shape\": [2, 2], \"values\": [[1]]}]}"), {}, ""});
  EXPECT_EQ(data["outputs"][0]["values"], Json({1, nullptr, nullptr, nullptr}));
  EXPECT_EQ(
      ReportData({Json::parse("{\"outputs\": [{\"shape\": [100000, 100000], \"values\": []}]}"),
                  {},
                  ""})["outputs"][0]["shape"],
      Json::array());
}

}  // namespace
}  // namespace lensgrid
