// One worker-wide budget for the bytes that replies hold while they are
// computed and streamed: a reply's tensors stay in memory until the client
// has read the last chunk, so clients that stop reading must not be able to
// pin more than the budget between them.
//
//   ReplyBudget budget(/*max_bytes=*/int64_t{4} << 30);
//   LG_ASSIGN_OR_RETURN(ReplyBudget::Hold hold, budget.Reserve(bytes, "RunWithCache"));
//   result.hold = std::move(hold);   // released when the reply is done
//
// A reservation over what is left is RESOURCE_EXHAUSTED, never a wait: the
// client retries, elsewhere or later.
#ifndef LENSGRID_WORKER_REPLY_BUDGET_H_
#define LENSGRID_WORKER_REPLY_BUDGET_H_

#include <cstdint>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace lensgrid {

class ReplyBudget {
 public:
  // Releases its bytes when the last copy goes.
  using Hold = std::shared_ptr<const void>;

  explicit ReplyBudget(int64_t max_bytes) : max_bytes_(max_bytes) {}
  ReplyBudget(const ReplyBudget&) = delete;
  ReplyBudget& operator=(const ReplyBudget&) = delete;

  // REQUIRES: the budget outlives every Hold it gave out.
  absl::StatusOr<Hold> Reserve(int64_t bytes, absl::string_view what);
  int64_t held_bytes() const;
  int64_t max_bytes() const { return max_bytes_; }

 private:
  void Release(int64_t bytes);
  const int64_t max_bytes_;
  mutable absl::Mutex mu_;
  int64_t held_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_REPLY_BUDGET_H_
