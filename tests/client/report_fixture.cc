// Writes a search report from a JSON file, for the browser test:
//   report_fixture IN.json OUT.html
// IN.json: {"result": {...result.json...}, "title": "...",
//           "attention": [{"hook": ..., "layer": L, "head": H, "tokens": [...],
//           "pattern": [...]}]}
// A token may be a list of byte values instead of a string (JSON cannot carry
// invalid UTF-8). A bare result.json (no "result" key) is taken as the result
// itself.
#include <fstream>
#include <iostream>
#include <iterator>

#include "client/report.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: report_fixture IN.json OUT.html\n";
    return 2;
  }
  std::ifstream in_file(argv[1]);
  nlohmann::ordered_json j =
      nlohmann::ordered_json::parse(in_file, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    std::cerr << "report_fixture: " << argv[1] << " is not a JSON object\n";
    return 1;
  }
  lensgrid::ReportInput input;
  if (!j.contains("result")) {
    input.result = j;
  } else {
    input.result = j["result"];
    input.title = j.value("title", "");
    for (const auto& v : j.value("attention", nlohmann::ordered_json::array())) {
      lensgrid::AttentionView view;
      view.hook = v.value("hook", "");
      view.layer = v.value("layer", 0);
      view.head = v.value("head", 0);
      // A token is a string, or a list of byte values (to pass bytes that are
      // not UTF-8).
      for (const auto& t : v.value("tokens", nlohmann::ordered_json::array())) {
        if (t.is_string()) {
          view.tokens.push_back(t.get<std::string>());
        } else {
          std::string bytes;
          for (const auto& b : t) bytes += static_cast<char>(b.get<int>());
          view.tokens.push_back(bytes);
        }
      }
      view.pattern = v.value("pattern", std::vector<float>{});
      input.attention.push_back(std::move(view));
    }
  }
  std::ofstream out(argv[2], std::ios::binary);
  out << lensgrid::RenderReportHtml(input);
  if (!out) {
    std::cerr << "report_fixture: cannot write " << argv[2] << "\n";
    return 1;
  }
  return 0;
}
