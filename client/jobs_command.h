// Commands against a coordinator's jobs:
//
//   lensgrid jobs    --coordinator ADDR               list jobs (newest last)
//   lensgrid workers --coordinator ADDR               list workers
//   lensgrid cancel  JOB --coordinator ADDR           cancel a job
//   lensgrid result  JOB --coordinator ADDR --output DIR [--normalize]
//                                                     write a finished job's output,
//                                                     as `lensgrid search` does (from
//                                                     the job's status; the attention
//                                                     patterns from one of its workers)
// ADDR defaults to $LENSGRID_COORDINATOR_ADDR.
#ifndef LENSGRID_CLIENT_JOBS_COMMAND_H_
#define LENSGRID_CLIENT_JOBS_COMMAND_H_

#include <functional>
#include <iosfwd>
#include <vector>

#include "absl/status/statusor.h"
#include "client/report.h"
#include "client/search_context.h"
#include "client/search_values.h"

namespace lensgrid {

// The attention patterns of a job from before JobStatus described it, from the model dir its
// context names (LibTorch: client/local/report_views.h's ViewsFromModelDir).
using ModelDirViews = std::function<absl::StatusOr<std::vector<AttentionView>>(
    const SearchContext& ctx, const SearchValues& values)>;

// argv[0] is the verb: "jobs", "workers", "cancel" or "result". Without `model_dir_views` (the
// LibTorch-free `lensgrid`), `result` of such an old job writes its report without patterns.
int RunJobsCommand(int argc, char** argv, std::ostream& out, std::ostream& err,
                   const ModelDirViews& model_dir_views = nullptr);

}  // namespace lensgrid

#endif  // LENSGRID_CLIENT_JOBS_COMMAND_H_
