// `lensgrid search --coordinator ADDR | --local N`: the job spec of a search,
// its run through a coordinator with live progress, and its result as the
// same SearchResult an in-process search returns.
//
//   LG_ASSIGN_OR_RETURN(v1::JobSpec job, MakeSearchJobSpec(request));  // client/search_job.h
//   LG_ASSIGN_OR_RETURN(SearchResult r, RunOnCoordinator(address, job, spec, options));
#ifndef LENSGRID_CLIENT_SEARCH_REMOTE_H_
#define LENSGRID_CLIENT_SEARCH_REMOTE_H_

#include <functional>
#include <iosfwd>
#include <string>

#include "absl/status/statusor.h"
#include "client/coordinator_client.h"
#include "client/search_output.h"
#include "lensgrid/v1/coordinator.pb.h"
#include "worker/model/analysis/search.h"

namespace lensgrid {

// The coordinator's merged tensors as a SearchResult of `spec`'s outputs.
// INTERNAL naming the tensor when one is missing or mis-shaped.
absl::StatusOr<SearchResult> ResultFromJob(const JobResult& job, const SearchSpec& spec);

struct RemoteSearchOptions {
  bool tty = false;                  // draw a progress bar
  std::ostream* progress = nullptr;  // where progress goes (stderr)
  // Polled every 200 ms while the job runs: a non-OK status cancels the job
  // and is returned (e.g. the local workers died). Optional.
  std::function<absl::Status()> health;
  std::string* job_id = nullptr;  // receives the job id, if given
  // Receives the job's final status (its prepared spec, prompt count, first prompt), if given.
  v1::JobStatus* final_status = nullptr;
};

// Submits, follows the job to its end (reconnecting across coordinator
// restarts), and fetches the result. A failed or cancelled job is an error
// carrying the coordinator's code and message.
absl::StatusOr<SearchResult> RunOnCoordinator(const std::string& address,
                                              const v1::JobSpec& job_spec, const SearchSpec& spec,
                                              const RemoteSearchOptions& options);

}  // namespace lensgrid

#endif  // LENSGRID_CLIENT_SEARCH_REMOTE_H_
