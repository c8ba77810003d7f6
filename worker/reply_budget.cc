#include "worker/reply_budget.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/error_details.h"

namespace lensgrid {

absl::StatusOr<ReplyBudget::Hold> ReplyBudget::Reserve(int64_t bytes, absl::string_view what) {
  bytes = std::max<int64_t>(bytes, 0);
  {
    absl::MutexLock lock(&mu_);
    if (bytes > max_bytes_ - held_) {
      absl::Status s = absl::ResourceExhaustedError(
          absl::StrCat(what, ": the reply needs ", bytes, " bytes, but replies in flight ",
                       "already hold ", held_, " of this worker's --max-reply-memory (", max_bytes_,
                       "); retry later, on another worker, or ask for less"));
      s = WithErrorInfo(std::move(s), "REPLY_BUDGET_EXCEEDED",
                        {{"requested_bytes", absl::StrCat(bytes)},
                         {"held_bytes", absl::StrCat(held_)},
                         {"budget_bytes", absl::StrCat(max_bytes_)}});
      return WithQuotaViolation(std::move(s), "--max-reply-memory",
                                "replies in flight on this worker");
    }
    held_ += bytes;
  }
  return Hold(static_cast<const void*>(this), [this, bytes](const void*) { Release(bytes); });
}

int64_t ReplyBudget::held_bytes() const {
  absl::MutexLock lock(&mu_);
  return held_;
}

void ReplyBudget::Release(int64_t bytes) {
  absl::MutexLock lock(&mu_);
  held_ -= bytes;
}

}  // namespace lensgrid
