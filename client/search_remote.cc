#include "client/search_remote.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <iostream>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/progress.h"
#include "client/wire_values.h"
#include "common/search_proto.h"
#include "common/status_macros.h"

namespace lensgrid {
namespace {

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

absl::StatusOr<std::vector<double>> Take(const JobResult& job, const std::string& name,
                                         int64_t expected) {
  const WireTensor* t = job.Find(name);
  if (t == nullptr) {
    return absl::InternalError(absl::StrCat("the job's result has no tensor \"", name, "\""));
  }
  const int64_t n = t->NumElements();
  if (n != expected) {
    return absl::InternalError(
        absl::StrCat("the job's tensor \"", name, "\" has ", n, " values, expected ", expected));
  }
  return WireToDoubles(*t);
}

}  // namespace

absl::StatusOr<SearchValues> ResultFromJob(const JobResult& job, const SearchNames& names) {
  SearchValues result;
  result.names = names;
  const WireTensor* baseline = job.Find("baseline");
  if (baseline == nullptr || baseline->shape.size() != 1) {
    return absl::InternalError("the job's result has no 1-D tensor \"baseline\"");
  }
  const int64_t n = baseline->shape[0];
  LG_ASSIGN_OR_RETURN(result.baseline, Take(job, "baseline", n));
  if (NeedsCorrupted(names.method)) {
    LG_ASSIGN_OR_RETURN(result.reference, Take(job, "reference", n));
  }
  for (const v1::ResultGrid& g : job.header.grids()) {
    GridValues o;
    o.name = g.name();
    o.axes.assign(g.axes().begin(), g.axes().end());
    o.shape.assign(g.shape().begin(), g.shape().end());
    int64_t c = 1;
    for (int64_t d : o.shape) {
      if (d < 0 || (d > 0 && c > (int64_t{1} << 40) / d)) {
        return absl::InternalError(absl::StrCat("the job's grid \"", o.name, "\" has a bad shape"));
      }
      c *= d;
    }
    LG_ASSIGN_OR_RETURN(o.per_prompt, Take(job, o.name + ".per_prompt", n * c));
    LG_ASSIGN_OR_RETURN(o.mean, Take(job, o.name, c));
    result.outputs.push_back(std::move(o));
  }
  if (result.outputs.empty()) return absl::InternalError("the job's result has no grids");
  return result;
}

namespace {

// `call` again while the coordinator is unreachable (UNAVAILABLE: e.g. restarting), with backoff,
// for up to `reconnect_for`: only for calls that are safe to repeat (GetResult; SubmitJob with a
// request id, which gives the same job).
template <typename T>
absl::StatusOr<T> WhileUnavailable(const std::function<absl::StatusOr<T>()>& call,
                                   absl::Duration reconnect_for,
                                   const std::function<void(const absl::Status&)>& note) {
  const absl::Time give_up = absl::Now() + reconnect_for;
  absl::Duration backoff = absl::Milliseconds(100);
  for (;;) {
    absl::StatusOr<T> r = call();
    if (r.ok() || r.status().code() != absl::StatusCode::kUnavailable || absl::Now() > give_up) {
      return r;
    }
    note(r.status());
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Seconds(2));
  }
}

}  // namespace

absl::StatusOr<SearchValues> RunOnCoordinator(const std::string& address,
                                              const v1::JobSpec& job_spec, const SearchNames& names,
                                              const RemoteSearchOptions& options) {
  std::ostream& progress = options.progress != nullptr ? *options.progress : std::cerr;
  std::mutex write_mu;
  ProgressPrinter printer(options.tty, [&](const std::string& s) {
    if (options.quiet) return;
    std::lock_guard<std::mutex> lock(write_mu);
    progress << s << std::flush;
  });
  CoordinatorClient::Options client_options;
  client_options.transport = options.transport;
  LG_ASSIGN_OR_RETURN(std::unique_ptr<CoordinatorClient> client,
                      CoordinatorClient::Connect(address, client_options));
  auto reconnecting = [&](const absl::Status& why) {
    printer.Note(absl::StrCat("lost the coordinator (", why.message(), "); reconnecting"));
  };
  const absl::Duration no_retry =
      options.request_id.empty() ? absl::ZeroDuration() : client_options.reconnect_for;
  LG_ASSIGN_OR_RETURN(
      v1::SubmitJobResponse submitted,
      WhileUnavailable<v1::SubmitJobResponse>(
          [&] { return client->Submit(job_spec, options.request_id); }, no_retry, reconnecting));
  const std::string job_id = submitted.job_id();
  if (options.job_id != nullptr) *options.job_id = job_id;
  printer.Note(absl::StrCat(
      "job ", job_id, " at ", address,
      submitted.shards_total() > 0 ? absl::StrCat(": ", submitted.shards_total(), " shards") : ""));
  // A job no live worker serves says so itself (a WAITING_FOR_WORKER event).
  // The health check runs beside the watch; a failure cancels the job.
  std::atomic<bool> watching{true};
  absl::Status health_error;
  std::mutex health_mu;
  std::thread monitor;
  if (options.health) {
    monitor = std::thread([&] {
      while (watching.load()) {
        absl::Status h = options.health();
        if (!h.ok()) {
          {
            std::lock_guard<std::mutex> lock(health_mu);
            health_error = h;
          }
          (void)client->Cancel(job_id);
          return;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      }
    });
  }
  absl::StatusOr<v1::JobStatus> final_status = client->Watch(
      job_id, [&](const v1::JobEvent& e) { printer.OnEvent(e, NowMs()); }, 0, reconnecting);
  watching.store(false);
  if (monitor.joinable()) monitor.join();
  printer.Finish();
  {
    std::lock_guard<std::mutex> lock(health_mu);
    if (!health_error.ok()) return health_error;
  }
  LG_RETURN_IF_ERROR(final_status.status());
  if (options.final_status != nullptr) *options.final_status = *final_status;
  switch (final_status->state()) {
    case v1::JOB_SUCCEEDED:
      break;
    case v1::JOB_FAILED:
      return absl::Status(final_status->error_code() > 0 && final_status->error_code() <= 16
                              ? static_cast<absl::StatusCode>(final_status->error_code())
                              : absl::StatusCode::kAborted,
                          absl::StrCat("job ", job_id, " failed: ", final_status->error()));
    case v1::JOB_CANCELLED:
      return absl::CancelledError(absl::StrCat("job ", job_id, " was cancelled"));
    default:
      return absl::InternalError(
          absl::StrCat("job ", job_id, " ended in state ", JobStateName(final_status->state())));
  }
  LG_ASSIGN_OR_RETURN(JobResult job,
                      WhileUnavailable<JobResult>([&] { return client->GetResult(job_id); },
                                                  client_options.reconnect_for, reconnecting));
  return ResultFromJob(job, names);
}

}  // namespace lensgrid
