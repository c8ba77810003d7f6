// `lensgrid search --coordinator ADDR | --local N`: the job spec of a search,
// its run through a coordinator with live progress, and its result as the
// the same SearchValues an in-process search's output is written from. No LibTorch.
//
//   LG_ASSIGN_OR_RETURN(v1::JobSpec job, MakeSearchJobSpec(request));  // client/search_job.h
//   LG_ASSIGN_OR_RETURN(SearchValues r, RunOnCoordinator(address, job, names, options));
#ifndef LENSGRID_CLIENT_SEARCH_REMOTE_H_
#define LENSGRID_CLIENT_SEARCH_REMOTE_H_

#include <functional>
#include <iosfwd>
#include <string>

#include "absl/status/statusor.h"
#include "client/coordinator_client.h"
#include "client/search_values.h"
#include "lensgrid/v1/coordinator.pb.h"

namespace lensgrid {

// The coordinator's merged tensors (F32, F16 or BF16) as the SearchValues of a `names` search.
// INTERNAL naming the tensor when one is missing, mis-shaped or of another dtype.
absl::StatusOr<SearchValues> ResultFromJob(const JobResult& job, const SearchNames& names);

struct RemoteSearchOptions {
  bool tty = false;                  // draw a progress bar
  std::ostream* progress = nullptr;  // where progress goes (stderr)
  bool quiet = false;                // no progress at all (a caller that reports its own)
  // Polled every 200 ms while the job runs: a non-OK status cancels the job
  // and is returned (e.g. the local workers died). Optional.
  std::function<absl::Status()> health;
  std::string* job_id = nullptr;  // receives the job id, if given
  // SubmitJobRequest.request_id: a second run with the same one (a retried
  // batch pod) follows the job the first one started. Empty: none.
  std::string request_id;
  // Receives the job's final status (its prepared spec, prompt count, first prompt), if given.
  v1::JobStatus* final_status = nullptr;
  ClientTransport transport;  // TLS and token for the coordinator (common/auth.h)
};

// Submits, follows the job to its end (reconnecting across coordinator
// restarts: the watch and the result always, the submission when it has a
// request id), and fetches the result. A failed or cancelled job is an error
// carrying the coordinator's code and message.
absl::StatusOr<SearchValues> RunOnCoordinator(const std::string& address,
                                              const v1::JobSpec& job_spec, const SearchNames& names,
                                              const RemoteSearchOptions& options);

}  // namespace lensgrid

#endif  // LENSGRID_CLIENT_SEARCH_REMOTE_H_
