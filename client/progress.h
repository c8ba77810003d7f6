// Progress of a coordinator job as the CLI shows it: a bar redrawn in place on
// a terminal, plain lines (at most one a second for shard completions)
// otherwise. Pure formatting plus a small throttle; no I/O of its own.
//
//   ProgressPrinter printer(/*tty=*/isatty(2), [](const std::string& s) { std::cerr << s; });
//   for (each event) printer.OnEvent(event, now_ms);
//   printer.Finish();
#ifndef LENSGRID_CLIENT_PROGRESS_H_
#define LENSGRID_CLIENT_PROGRESS_H_

#include <cstdint>
#include <functional>
#include <string>

#include "lensgrid/v1/coordinator.pb.h"

namespace lensgrid {

// "[##########..........]  12/48 shards  3.1/s  ETA 12s"
std::string FormatProgressBar(int64_t done, int64_t total, double per_s, double eta_s,
                              int width = 30);
// "12s", "3m05s", "1h02m"; "?" when unknown (negative or not finite).
std::string FormatDuration(double seconds);
// One line for an event other than a plain shard completion
// ("shard 7 retried (worker w2: ...)"), "" for those that need none.
std::string DescribeEvent(const v1::JobEvent& event);

class ProgressPrinter {
 public:
  ProgressPrinter(bool tty, std::function<void(const std::string&)> write)
      : tty_(tty), write_(std::move(write)) {}
  void OnEvent(const v1::JobEvent& event, int64_t now_ms);
  void Note(const std::string& line);  // a line of its own, bar kept below
  void Finish();                       // ends the bar's line

 private:
  void DrawBar();
  bool tty_;
  std::function<void(const std::string&)> write_;
  v1::JobEvent last_;
  bool have_bar_ = false;
  int64_t last_line_ms_ = -1;
};

}  // namespace lensgrid

#endif  // LENSGRID_CLIENT_PROGRESS_H_
