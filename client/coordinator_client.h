// C++ client of the coordinator (lensgrid.v1.Coordinator), the client side:
// submit a job, follow its events across reconnects, fetch its result.
//
//   LG_ASSIGN_OR_RETURN(auto c, CoordinatorClient::Connect("127.0.0.1:7000"));
//   LG_ASSIGN_OR_RETURN(v1::SubmitJobResponse job, c->Submit(spec));
//   LG_ASSIGN_OR_RETURN(v1::JobStatus final_status,
//                       c->Watch(job.job_id(), [](const v1::JobEvent& e) { ... }));
//   LG_ASSIGN_OR_RETURN(JobResult result, c->GetResult(job.job_id()));
//
// Errors are the coordinator's status as absl::Status. No LibTorch here.
#ifndef LENSGRID_CLIENT_COORDINATOR_CLIENT_H_
#define LENSGRID_CLIENT_COORDINATOR_CLIENT_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/auth.h"
#include "common/tensor_chunks.h"
#include "lensgrid/v1/coordinator.grpc.pb.h"

namespace lensgrid {

struct JobResult {
  v1::ResultHeader header;
  std::vector<WireTensor> tensors;
  const WireTensor* Find(const std::string& name) const;
};

class CoordinatorClient {
 public:
  struct Options {
    absl::Duration timeout = absl::Seconds(30);  // unary calls and GetResult
    // Watch: how long to keep reconnecting while the coordinator is
    // unreachable (it may be restarting). Default: 2 minutes
    absl::Duration reconnect_for = absl::Minutes(2);
    ClientTransport transport;  // TLS and token (common/auth.h); default: plaintext, no token
  };
  static absl::StatusOr<std::unique_ptr<CoordinatorClient>> Connect(const std::string& address,
                                                                    Options options);
  static absl::StatusOr<std::unique_ptr<CoordinatorClient>> Connect(const std::string& address) {
    return Connect(address, Options());
  }
  CoordinatorClient(std::shared_ptr<grpc::Channel> channel, Options options);
  // How this client connects (for clients of the coordinator's workers).
  const ClientTransport& transport() const { return options_.transport; }

  // request_id: SubmitJobRequest.request_id (AIP-155); a retry with the same
  // one returns the job the first attempt started. Empty: none.
  absl::StatusOr<v1::SubmitJobResponse> Submit(const v1::JobSpec& spec,
                                               const std::string& request_id = "");
  absl::StatusOr<v1::JobStatus> GetJob(const std::string& job_id);
  absl::StatusOr<v1::JobStatus> Cancel(const std::string& job_id);
  // Every page; `filter`'s state and owner (its paging fields are set here).
  absl::StatusOr<std::vector<v1::JobStatus>> ListJobs(const v1::ListJobsRequest& filter = {});
  absl::Status DeleteJob(const std::string& job_id);
  absl::StatusOr<std::vector<v1::WorkerInfo>> ListWorkers();
  absl::StatusOr<JobResult> GetResult(const std::string& job_id);

  // Streams the job's events with seq > after_seq to `on_event` until the job
  // is final, reconnecting from the last event seen when the stream breaks
  // (`on_reconnect` is told why). Returns the job's final status.
  absl::StatusOr<v1::JobStatus> Watch(
      const std::string& job_id, const std::function<void(const v1::JobEvent&)>& on_event,
      int64_t after_seq = 0,
      const std::function<void(const absl::Status&)>& on_reconnect = nullptr);

 private:
  void Prepare(grpc::ClientContext* ctx) const;

  std::unique_ptr<v1::Coordinator::Stub> stub_;
  Options options_;
};

// "queued", "running", "succeeded", "failed", "cancelled".
std::string JobStateName(v1::JobState state);

}  // namespace lensgrid

#endif  // LENSGRID_CLIENT_COORDINATOR_CLIENT_H_
