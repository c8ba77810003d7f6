#include "client/coordinator_client.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/serving.h"
#include "common/status_macros.h"

namespace lensgrid {

const WireTensor* JobResult::Find(const std::string& name) const {
  for (const WireTensor& t : tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

std::string JobStateName(v1::JobState state) {
  switch (state) {
    case v1::JOB_QUEUED:
      return "queued";
    case v1::JOB_RUNNING:
      return "running";
    case v1::JOB_SUCCEEDED:
      return "succeeded";
    case v1::JOB_FAILED:
      return "failed";
    case v1::JOB_CANCELLED:
      return "cancelled";
    default:
      return "unknown";
  }
}

absl::StatusOr<std::unique_ptr<CoordinatorClient>> CoordinatorClient::Connect(
    const std::string& address, Options options) {
  if (address.empty() || address.find(':') == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("coordinator address \"", address, "\" is not HOST:PORT"));
  }
  grpc::ChannelArguments args;
  AddClientKeepalive(&args);  // WatchJob streams stay open through NATs and proxies
  args.SetMaxReceiveMessageSize(16 << 20);
  args.SetMaxSendMessageSize(256 << 20);  // a job spec holds its prompts
  LG_ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel,
                      OpenChannel(address, options.transport, args));
  return std::make_unique<CoordinatorClient>(std::move(channel), options);
}

CoordinatorClient::CoordinatorClient(std::shared_ptr<grpc::Channel> channel, Options options)
    : stub_(v1::Coordinator::NewStub(std::move(channel))), options_(options) {}

void CoordinatorClient::Prepare(grpc::ClientContext* ctx) const {
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + options_.timeout));
}

absl::StatusOr<v1::SubmitJobResponse> CoordinatorClient::Submit(const v1::JobSpec& spec,
                                                                const std::string& request_id) {
  grpc::ClientContext ctx;
  Prepare(&ctx);
  v1::SubmitJobRequest request;
  *request.mutable_spec() = spec;
  request.set_request_id(request_id);
  v1::SubmitJobResponse response;
  LG_RETURN_IF_ERROR(FromGrpcStatus(stub_->SubmitJob(&ctx, request, &response)));
  return response;
}

absl::StatusOr<v1::JobStatus> CoordinatorClient::GetJob(const std::string& job_id) {
  grpc::ClientContext ctx;
  Prepare(&ctx);
  v1::GetJobRequest request;
  request.set_job_id(job_id);
  v1::JobStatus status;
  LG_RETURN_IF_ERROR(FromGrpcStatus(stub_->GetJob(&ctx, request, &status)));
  return status;
}

absl::StatusOr<v1::JobStatus> CoordinatorClient::Cancel(const std::string& job_id) {
  grpc::ClientContext ctx;
  Prepare(&ctx);
  v1::CancelJobRequest request;
  request.set_job_id(job_id);
  v1::JobStatus status;
  LG_RETURN_IF_ERROR(FromGrpcStatus(stub_->CancelJob(&ctx, request, &status)));
  return status;
}

absl::Status CoordinatorClient::DeleteJob(const std::string& job_id) {
  grpc::ClientContext ctx;
  Prepare(&ctx);
  v1::DeleteJobRequest request;
  request.set_job_id(job_id);
  v1::DeleteJobResponse response;
  return FromGrpcStatus(stub_->DeleteJob(&ctx, request, &response));
}

// Listings are paged (coordinator.proto): every page, until the token is empty.
absl::StatusOr<std::vector<v1::JobStatus>> CoordinatorClient::ListJobs(
    const v1::ListJobsRequest& filter) {
  std::vector<v1::JobStatus> jobs;
  v1::ListJobsRequest request = filter;
  request.clear_page_token();
  do {
    grpc::ClientContext ctx;
    Prepare(&ctx);
    v1::ListJobsResponse response;
    LG_RETURN_IF_ERROR(FromGrpcStatus(stub_->ListJobs(&ctx, request, &response)));
    jobs.insert(jobs.end(), response.jobs().begin(), response.jobs().end());
    if (response.next_page_token() == request.page_token()) break;  // no progress
    request.set_page_token(response.next_page_token());
  } while (!request.page_token().empty());
  return jobs;
}

absl::StatusOr<std::vector<v1::WorkerInfo>> CoordinatorClient::ListWorkers() {
  std::vector<v1::WorkerInfo> workers;
  v1::ListWorkersRequest request;
  do {
    grpc::ClientContext ctx;
    Prepare(&ctx);
    v1::ListWorkersResponse response;
    LG_RETURN_IF_ERROR(FromGrpcStatus(stub_->ListWorkers(&ctx, request, &response)));
    workers.insert(workers.end(), response.workers().begin(), response.workers().end());
    if (response.next_page_token() == request.page_token()) break;  // no progress
    request.set_page_token(response.next_page_token());
  } while (!request.page_token().empty());
  return workers;
}

absl::StatusOr<JobResult> CoordinatorClient::GetResult(const std::string& job_id) {
  grpc::ClientContext ctx;
  Prepare(&ctx);
  v1::GetResultRequest request;
  request.set_job_id(job_id);
  std::unique_ptr<grpc::ClientReader<v1::GetResultResponse>> reader =
      stub_->GetResult(&ctx, request);
  JobResult result;
  TensorAssembler assembler;
  v1::GetResultResponse part;
  bool have_header = false;
  absl::Status bad;
  while (reader->Read(&part)) {
    if (part.has_header()) {
      result.header = std::move(*part.mutable_header());
      have_header = true;
    } else if (part.has_chunk() && bad.ok()) {
      bad = assembler.Add(std::move(*part.mutable_chunk()));
    }
  }
  LG_RETURN_IF_ERROR(FromGrpcStatus(reader->Finish()));
  LG_RETURN_IF_ERROR(bad);
  if (!have_header) return absl::InternalError("GetResult sent no header");
  LG_ASSIGN_OR_RETURN(result.tensors, assembler.Finish());
  return result;
}

absl::StatusOr<v1::JobStatus> CoordinatorClient::Watch(
    const std::string& job_id, const std::function<void(const v1::JobEvent&)>& on_event,
    int64_t after_seq, const std::function<void(const absl::Status&)>& on_reconnect) {
  absl::Time unreachable_since = absl::InfiniteFuture();
  absl::Duration backoff = absl::Milliseconds(100);
  while (true) {
    grpc::ClientContext ctx;
    v1::WatchJobRequest request;
    request.set_job_id(job_id);
    request.set_after_seq(after_seq);
    std::unique_ptr<grpc::ClientReader<v1::JobEvent>> reader = stub_->WatchJob(&ctx, request);
    v1::JobEvent event;
    bool progressed = false;
    while (reader->Read(&event)) {
      if (event.seq() <= after_seq) continue;  // never twice
      after_seq = event.seq();
      progressed = true;
      on_event(event);
    }
    absl::Status status = FromGrpcStatus(reader->Finish());
    if (status.ok()) {  // the stream ends when the job is final
      absl::StatusOr<v1::JobStatus> final_status = GetJob(job_id);
      if (final_status.ok() || final_status.status().code() != absl::StatusCode::kUnavailable) {
        return final_status;
      }
      // The coordinator went away between the two calls: reconnect as below
      // (a cluster test's kill -9 right after a job ended found this).
      status = final_status.status();
    }
    if (status.code() != absl::StatusCode::kUnavailable &&
        status.code() != absl::StatusCode::kDeadlineExceeded &&
        status.code() != absl::StatusCode::kInternal) {
      return status;
    }
    const absl::Time now = absl::Now();
    if (progressed || unreachable_since == absl::InfiniteFuture()) {
      unreachable_since = now;
      backoff = absl::Milliseconds(100);
    }
    if (now - unreachable_since > options_.reconnect_for) {
      return absl::Status(status.code(), absl::StrCat("lost the coordinator for more than ",
                                                      absl::FormatDuration(options_.reconnect_for),
                                                      ": ", status.message()));
    }
    if (on_reconnect) on_reconnect(status);
    std::this_thread::sleep_for(absl::ToChronoNanoseconds(backoff));
    backoff = std::min(backoff * 2, absl::Seconds(2));
  }
}

}  // namespace lensgrid
