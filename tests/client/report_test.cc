#include "client/report.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace lensgrid {
namespace {

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

// What `lensgrid search --method ablate-heads` writes, cut to 2 layers x 3
// heads.
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
  EXPECT_EQ(SanitizeUtf8("\xC0\xAF"),
            "\xEF\xBF\xBD\xEF\xBF\xBD");  // overlong '/'
  EXPECT_EQ(SanitizeUtf8("\xED\xA0\x80"),
            "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
  EXPECT_EQ(SanitizeUtf8("x\xE2\x82"),
            "x\xEF\xBF\xBD\xEF\xBF\xBD");  // cut short
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

TEST(RenderReportHtmlTest, SelfContainedPage) {
  std::string html = RenderReportHtml({HeadAblationResult(), {}, ""});
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_THAT(html, HasSubstr("<title>lensgrid search: ablate-heads on ioi</title>"));
  EXPECT_THAT(html, HasSubstr("</html>"));
  // Nothing fetched: no external scripts, styles, images or imports.
  EXPECT_THAT(html, Not(HasSubstr(" src=")));
  EXPECT_THAT(html, Not(HasSubstr("<link")));
  EXPECT_THAT(html, Not(HasSubstr("@import")));
  EXPECT_THAT(html, Not(HasSubstr("href=\"http")));
}

TEST(RenderReportHtmlTest, HeatmapCellsCarryCoordinatesAndExactValues) {
  std::string html = RenderReportHtml({HeadAblationResult(), {}, ""});
  EXPECT_EQ(Count(html, "<rect class=\"cell\""), 6u);
  EXPECT_THAT(html, HasSubstr("data-heatmap=\"output:delta\" "
                              "data-output=\"delta\" data-layer=\"1\" "
                              "data-head=\"0\" data-component=\"L1H0\" "
                              "data-value=\"0.022206585854291916\""));
  EXPECT_THAT(html, HasSubstr("<title>L0H2  delta = 0.125</title>"));
  // Diverging and symmetric at max |v| = 1: +1 full red, -0.5 half blue, 0
  // white.
  EXPECT_THAT(html, HasSubstr("fill=\"#b2182b\" data-heatmap=\"output:delta\" "
                              "data-output=\"delta\" "
                              "data-layer=\"1\" data-head=\"1\""));
  EXPECT_THAT(html, HasSubstr("fill=\"#90b3d6\" data-heatmap=\"output:delta\" "
                              "data-output=\"delta\" "
                              "data-layer=\"0\" data-head=\"0\""));
  EXPECT_THAT(html, HasSubstr("fill=\"#ffffff\" data-heatmap=\"output:delta\" "
                              "data-output=\"delta\" "
                              "data-layer=\"0\" data-head=\"1\""));
  EXPECT_THAT(html, HasSubstr("class=\"legend\" width=\"220\" height=\"34\" data-min=\"-1.0\" "
                              "data-max=\"1.0\""));
}

TEST(RenderReportHtmlTest, IdentityRankedAndSubtitle) {
  Json r = HeadAblationResult();
  r["label"] = "nightly <ioi>";
  r["job"] = {{"id", "job-42"}, {"spec", {{"shards", 8}}}};
  std::string html = RenderReportHtml({r, {}, ""});
  EXPECT_THAT(html, HasSubstr("<tr data-field=\"model.weights_sha256\"><th>model.weights_sha256"
                              "</th><td>ab12</td></tr>"));
  EXPECT_THAT(html, HasSubstr("<tr data-field=\"dataset.seed\"><th>dataset.seed</th><td>7</td>"));
  EXPECT_THAT(html, HasSubstr("<td>nightly &lt;ioi&gt;</td>"));
  EXPECT_THAT(html, HasSubstr("<tr data-field=\"job.id\"><th>job.id</th><td>job-42</td>"));
  EXPECT_THAT(html, HasSubstr("<td>{&quot;shards&quot;:8}</td>"));
  EXPECT_THAT(html, HasSubstr("metric logit-diff \xC2\xB7 mean ablation "
                              "\xC2\xB7 4 prompts \xC2\xB7 "
                              "clean logit-diff +2.5"));
  EXPECT_THAT(html, HasSubstr("<tr data-component=\"L1H1\" data-value=\"1.0\"><td class=\"num\">1"
                              "</td><td>L1H1</td><td class=\"num\">+1</td>"));
  EXPECT_THAT(html, HasSubstr("<tr data-component=\"L0H0\" data-value=\"-0.5\">"));
}

TEST(RenderReportHtmlTest, OtherAxesRankThreeNormalizedAndDetectors) {
  Json r = Json::parse(R"json({
    "method": "patch-heads-by-pos", "metric": "logit-diff", "baseline": 0.5, "clean": 1.5,
    "outputs": [
      {"name": "delta", "axes": ["layer", "pos", "head"], "shape": [2, 3, 2],
       "values": [[[1, 2], [3, 4], [5, 6]], [[-1, -2], [-3, -4], [-5, -6]]],
       "normalized": [[[1, 2], [3, 4], [5, 6]], [[-1, -2], [-3, -4], [-5, -6]]]},
      {"name": "layers", "axes": ["kind(attn,mlp)", "layer"], "shape": [2, 2],
       "values": [[0.5, 0.25], [-0.5, null]]}],
    "detectors": {"induction": [[0.1, 0.9], [0.7, 0.0]], "previous-token": [[0.2, 0.3], [0.4, 0.5]]}
  })json");
  std::string html = RenderReportHtml({r, {}, ""});
  EXPECT_EQ(Count(html, "<svg class=\"heatmap\" data-heatmap=\"output:delta\""),
            2u);  // per layer
  EXPECT_EQ(Count(html, "data-heatmap=\"output:delta:normalized\""), 2u + 12u);
  EXPECT_THAT(html, HasSubstr("data-output=\"delta\" data-layer=\"1\" data-pos=\"2\" "
                              "data-head=\"0\" "
                              "data-component=\"L1 pos 2H0\" data-value=\"-5.0\""));
  EXPECT_THAT(html, HasSubstr("data-kind=\"1\" data-layer=\"0\" data-component=\"mlp L0\" "
                              "data-value=\"-0.5\""));
  EXPECT_THAT(html, HasSubstr("data-component=\"mlp L1\" data-value=\"null\""));
  EXPECT_THAT(html, HasSubstr(">attn</text>"));  // the kind axis' tick labels
  EXPECT_EQ(Count(html, "data-heatmap=\"detector:induction\""), 1u + 4u);
  EXPECT_THAT(html, HasSubstr("data-detector=\"induction\" data-layer=\"0\" data-head=\"1\" "
                              "data-component=\"L0H1\" data-value=\"0.9\""));
  EXPECT_THAT(html, HasSubstr("data-heatmap=\"detector:previous-token\""));
  EXPECT_THAT(html, HasSubstr("corrupted logit-diff +0.5 \xC2\xB7 clean logit-diff +1.5"));
}

TEST(RenderReportHtmlTest, DetectHeadsOutputsAreScoresOnASequentialScale) {
  Json r = Json::parse(R"json({"method": "detect-heads", "outputs": [
    {"name": "induction", "axes": ["layer", "head"], "shape": [1, 2], "values": [[0.5, 0.0]]}]})json");
  std::string html = RenderReportHtml({r, {}, ""});
  EXPECT_THAT(html, HasSubstr("Head detector scores"));
  EXPECT_THAT(html,
              HasSubstr("fill=\"#aa93c7\" data-heatmap=\"output:induction\""));  // 0.5 of 1
  EXPECT_THAT(html, HasSubstr("data-min=\"0\" data-max=\"1.0\""));
}

TEST(RenderReportHtmlTest, AttentionDataIsEscapedInsideTheScript) {
  AttentionView v{"blocks.1.attn.hook_pattern",
                  1,
                  2,
                  {"<|endoftext|>", "</script><b>", " \"&'", "\n", "\xFF"},
                  std::vector<float>(25, 0.2f)};
  v.pattern[0] = 1.0f / 3.0f;
  AttentionView bad{"blocks.0.attn.hook_pattern", 0, 1, {"a", "b"}, {1.0f}};
  std::string html = RenderReportHtml({HeadAblationResult(), {v, bad}, "t"});
  EXPECT_EQ(Count(html, "</script>"),
            2u);  // the data block's and the code's own
  EXPECT_THAT(html, HasSubstr("\"tokens\":[\"\\u003c|endoftext|\\u003e\",\"\\u003c/script\\u003e"
                              "\\u003cb\\u003e\",\" \\\"\\u0026'\",\"\\n\",\"\\ufffd\"]"));
  EXPECT_THAT(html, HasSubstr("\"pattern\":[0.333333343,0.200000003,"));
  EXPECT_THAT(html, HasSubstr("\"layer\":1,\"head\":2"));
  EXPECT_THAT(html, HasSubstr("Malformed attention views left out: L0H1 (2 tokens, 1 weights)"));
  EXPECT_THAT(html, HasSubstr("<select id=\"attn-select\">"));
}

TEST(RenderReportHtmlTest, NoAttentionSaysSo) {
  std::string html = RenderReportHtml({HeadAblationResult(), {}, ""});
  EXPECT_THAT(html, HasSubstr("No attention patterns in this report."));
  EXPECT_THAT(html, HasSubstr("<script type=\"application/json\" id=\"attn-data\">[]</script>"));
}

TEST(RenderReportHtmlTest, HostileTextIsEscaped) {
  Json r = HeadAblationResult();
  r["method"] = "<script>alert(1)</script>";
  r["outputs"][0]["name"] = "a\"b<c>";
  std::string html = RenderReportHtml({r, {}, "x</title><img onerror=1>"});
  EXPECT_THAT(html, Not(HasSubstr("<script>alert")));
  EXPECT_THAT(html, Not(HasSubstr("<img")));
  EXPECT_THAT(html, HasSubstr("<title>x&lt;/title&gt;&lt;img onerror=1&gt;</title>"));
  EXPECT_THAT(html, HasSubstr("data-output=\"a&quot;b&lt;c&gt;\""));
}

TEST(RenderReportHtmlTest, MalformedResultsStillRender) {
  for (const char* text : {"42", "{}", "{\"outputs\": 3}", "{\"outputs\": [{\"values\": \"x\"}]}",
                           "{\"outputs\": [{\"name\": 1, \"axes\": 2, \"shape\": [-1], "
                           "\"values\": [[1],[2,3]],"
                           " \"ranked\": [1, {\"value\": \"x\"}]}], \"detectors\": {\"d\": 5}}",
                           "{\"outputs\": [{\"shape\": [2, 2], \"values\": [[1]]}]}"}) {
    std::string html = RenderReportHtml({Json::parse(text), {}, ""});
    EXPECT_THAT(html, HasSubstr("</html>")) << text;
    EXPECT_THAT(html, Not(HasSubstr("could not be rendered"))) << text;
  }
}

}  // namespace
}  // namespace lensgrid
