#include "client/progress.h"

#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace lensgrid {

std::string FormatDuration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const int64_t t = static_cast<int64_t>(std::llround(s));
  if (t < 60) return absl::StrCat(t, "s");
  if (t < 3600) return absl::StrFormat("%dm%02ds", t / 60, t % 60);
  return absl::StrFormat("%dh%02dm", t / 3600, (t % 3600) / 60);
}

std::string FormatProgressBar(int64_t done, int64_t total, double per_s, double eta_s, int width) {
  const double frac = total > 0 ? static_cast<double>(done) / static_cast<double>(total) : 0;
  const int filled = static_cast<int>(std::floor(frac * width + 1e-9));
  std::string bar = "[" + std::string(filled, '#') + std::string(width - filled, '.') + "]";
  std::string line =
      absl::StrFormat("%s %*d/%d shards", bar, std::to_string(total).size(), done, total);
  if (per_s > 0) absl::StrAppend(&line, absl::StrFormat("  %.1f/s", per_s));
  if (done < total) absl::StrAppend(&line, "  ETA ", per_s > 0 ? FormatDuration(eta_s) : "?");
  return line;
}

std::string DescribeEvent(const v1::JobEvent& e) {
  const std::string msg = e.message().empty() ? "" : absl::StrCat(": ", e.message());
  switch (e.kind()) {
    case v1::JobEvent::SUBMITTED:
      // A job to prepare has no shards yet; the message says what happens first.
      return e.shards_total() > 0 ? absl::StrCat("job submitted, ", e.shards_total(), " shards")
                                  : absl::StrCat("job submitted", msg);
    case v1::JobEvent::DATASET_READY:
      return absl::StrCat("job prepared", msg);
    case v1::JobEvent::WAITING_FOR_WORKER:
      return absl::StrCat("waiting for a worker", msg);
    case v1::JobEvent::SHARD_RETRIED:
      return absl::StrCat("shard ", e.shard_id(), " re-queued", msg);
    case v1::JobEvent::WORKER_JOINED:
      return absl::StrCat("worker ", e.worker_id(), " joined", msg);
    case v1::JobEvent::WORKER_LOST:
      return absl::StrCat("worker ", e.worker_id(), " lost", msg);
    case v1::JobEvent::JOB_SUCCEEDED:
      return "job succeeded";
    case v1::JobEvent::JOB_FAILED:
      return absl::StrCat("job failed", msg);
    case v1::JobEvent::JOB_CANCELLED:
      return absl::StrCat("job cancelled", msg);
    case v1::JobEvent::STORE_FAILED:
      return absl::StrCat("job paused: the coordinator cannot store it", msg);
    case v1::JobEvent::STORE_RECOVERED:
      return absl::StrCat("job resumed: the coordinator stores it again", msg);
    default:  // SHARD_DONE shows in the bar
      return "";
  }
}

void ProgressPrinter::DrawBar() {
  write_(absl::StrCat("\r",
                      FormatProgressBar(last_.shards_done(), last_.shards_total(),
                                        last_.shards_per_s(), last_.eta_s()),
                      "\x1b[K"));
  have_bar_ = true;
}

void ProgressPrinter::Note(const std::string& line) {
  if (tty_ && have_bar_) {
    write_(absl::StrCat("\r\x1b[K", line, "\n"));
    DrawBar();
  } else {
    write_(line + "\n");
  }
}

void ProgressPrinter::OnEvent(const v1::JobEvent& e, int64_t now_ms) {
  if (e.shards_total() > 0) last_ = e;
  const std::string text = DescribeEvent(e);
  if (!text.empty()) {
    Note(text);
  }
  if (e.kind() != v1::JobEvent::SHARD_DONE) return;
  if (tty_) {
    DrawBar();
    return;
  }
  const bool last = e.shards_done() == e.shards_total();
  if (last || last_line_ms_ < 0 || now_ms - last_line_ms_ >= 1000) {
    last_line_ms_ = now_ms;
    write_(FormatProgressBar(e.shards_done(), e.shards_total(), e.shards_per_s(), e.eta_s()) +
           "\n");
  }
}

void ProgressPrinter::Finish() {
  if (tty_ && have_bar_) write_("\n");
  have_bar_ = false;
}

}  // namespace lensgrid
