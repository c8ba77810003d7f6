#include "client/jobs_command.h"

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <ctime>
#include <iomanip>
#include <ostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/command_status.h"
#include "client/coordinator_client.h"
#include "client/progress.h"
#include "client/search_output.h"
#include "client/search_remote.h"
#include "client/worker_views.h"
#include "common/auth_flags.h"
#include "common/status_macros.h"

namespace lensgrid {
namespace {

std::string Age(int64_t unix_ms) {
  const double s = static_cast<double>(std::time(nullptr)) - static_cast<double>(unix_ms) / 1000;
  return FormatDuration(s);
}

absl::Status ListJobs(CoordinatorClient& c, const v1::ListJobsRequest& filter, std::ostream& out) {
  LG_ASSIGN_OR_RETURN(std::vector<v1::JobStatus> jobs, c.ListJobs(filter));
  std::sort(jobs.begin(), jobs.end(), [](const v1::JobStatus& a, const v1::JobStatus& b) {
    return a.created_unix_ms() < b.created_unix_ms();
  });
  out << absl::StrFormat("%-12s %-10s %-13s %-8s %-12s %s\n", "JOB", "STATE", "SHARDS", "AGE",
                         "OWNER", "LABEL");
  for (const v1::JobStatus& j : jobs) {
    out << absl::StrFormat("%-12s %-10s %-13s %-8s %-12s %s\n", j.job_id(), JobStateName(j.state()),
                           absl::StrCat(j.shards_done(), "/", j.shards_total()),
                           Age(j.created_unix_ms()), j.owner(), j.label());
    if (!j.error().empty()) out << "    error: " << j.error() << "\n";
  }
  return absl::OkStatus();
}

absl::Status ListWorkers(CoordinatorClient& c, std::ostream& out) {
  LG_ASSIGN_OR_RETURN(std::vector<v1::WorkerInfo> workers, c.ListWorkers());
  out << absl::StrFormat("%-10s %-6s %-16s %-20s %-14s %-7s %-6s %s\n", "WORKER", "ALIVE", "NAME",
                         "MODEL", "WEIGHTS", "DEVICE", "DONE", "ADDRESS");
  for (const v1::WorkerInfo& w : workers) {
    out << absl::StrFormat("%-10s %-6s %-16s %-20s %-14s %-7s %-6d %s\n", w.worker_id(),
                           w.alive() ? "yes" : "no", w.name(), w.model_id(),
                           w.weights_sha256().substr(0, 12), w.device(), w.shards_done(),
                           w.address());
  }
  return absl::OkStatus();
}

absl::Status Cancel(CoordinatorClient& c, const std::string& job, std::ostream& out) {
  LG_ASSIGN_OR_RETURN(v1::JobStatus s, c.Cancel(job));
  out << "job " << s.job_id() << ": " << JobStateName(s.state()) << " (" << s.shards_done() << "/"
      << s.shards_total() << " shards done)\n";
  return absl::OkStatus();
}

absl::Status Delete(CoordinatorClient& c, const std::string& job, std::ostream& out) {
  LG_RETURN_IF_ERROR(c.DeleteJob(job));
  out << "job " << job << ": deleted\n";
  return absl::OkStatus();
}

// "running" -> JOB_RUNNING (the names JobStateName prints).
absl::StatusOr<v1::JobState> ParseJobState(const std::string& name) {
  for (v1::JobState s :
       {v1::JOB_QUEUED, v1::JOB_RUNNING, v1::JOB_SUCCEEDED, v1::JOB_FAILED, v1::JOB_CANCELLED}) {
    if (JobStateName(s) == name) return s;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "--state \"", name, "\" is not one of queued, running, succeeded, failed, cancelled"));
}

absl::Status Result(CoordinatorClient& c, const std::string& job, const std::string& address,
                    const std::string& output, bool normalize, const ModelDirViews& model_dir_views,
                    std::ostream& out) {
  LG_ASSIGN_OR_RETURN(v1::JobStatus status, c.GetJob(job));
  if (status.state() != v1::JOB_SUCCEEDED) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", job, " is ", JobStateName(status.state()),
                     status.error().empty() ? "" : absl::StrCat(": ", status.error()),
                     status.state() == v1::JOB_RUNNING || status.state() == v1::JOB_QUEUED
                         ? absl::StrCat(" (", status.shards_done(), "/", status.shards_total(),
                                        " shards done); try again when it has succeeded")
                         : ""));
  }
  // The job's status says what it is; jobs from before it did carry the submitting client's
  // own description (client_json).
  const bool described = StatusDescribesJob(status);
  LG_ASSIGN_OR_RETURN(SearchContext ctx, described ? ContextFromJobStatus(status)
                                                   : ContextFromJson(status.client_json()));
  ctx.normalize = ctx.normalize || normalize;
  LG_ASSIGN_OR_RETURN(SearchNames names, NamesOfContext(ctx));
  LG_ASSIGN_OR_RETURN(JobResult job_result, c.GetResult(job));
  LG_ASSIGN_OR_RETURN(SearchValues result, ResultFromJob(job_result, names));
  ctx.run = {{"where", "coordinator"}, {"address", address}, {"job_id", job}};
  // The attention viewer needs the model: one of the job's workers runs it (older jobs: the
  // model dir they name, if readable here). Without it the report has the rest.
  std::vector<AttentionView> views;
  absl::Status no_views;
  if (described) {
    absl::StatusOr<WorkerViews> v =
        ViewsFromJobWorkers(c, status, HeadsToShow(result, ctx.n_heads, 4));
    if (v.ok()) {
      views = std::move(v->views);
      ctx.processed = v->processed;
    } else {
      no_views = v.status();
    }
  } else if (!model_dir_views) {
    no_views = absl::UnimplementedError(
        "the job predates JobStatus's description; `lensgrid-local result` reads the patterns "
        "from the model dir it names");
  } else {
    absl::StatusOr<std::vector<AttentionView>> v = model_dir_views(ctx, result);
    if (v.ok()) {
      views = std::move(*v);
    } else {
      no_views = v.status();
    }
  }
  if (!no_views.ok()) {
    out << "note: report.html has no attention patterns (" << no_views.message() << ")\n";
  }
  return WriteSearchOutput(result, ctx, views, output, out);
}

}  // namespace

int RunJobsCommand(int argc, char** argv, std::ostream& out, std::ostream& err,
                   const ModelDirViews& model_dir_views) {
  const std::string verb = argv[0];
  std::string address, job, output, state, owner;
  bool normalize = false;
  // `lensgrid jobs delete JOB`: a verb of its own.
  const bool del = verb == "jobs" && argc > 1 && std::string(argv[1]) == "delete";
  if (del) {
    --argc;
    ++argv;
  }
  const std::string name = del ? "jobs delete" : verb;
  CLI::App app{"Jobs on a coordinator", "lensgrid " + name};
  if (const char* env = std::getenv("LENSGRID_COORDINATOR_ADDR")) address = env;
  app.add_option("--coordinator", address, "HOST:PORT (default: $LENSGRID_COORDINATOR_ADDR)");
  ClientTransport transport;
  AddClientTransportFlags(&app, &transport);
  if (verb == "cancel" || verb == "result" || del) {
    app.add_option("job", job, "job id (see `lensgrid jobs`)")->required();
  }
  if (verb == "jobs" && !del) {
    app.add_option("--state", state,
                   "only jobs in this state: queued, running, succeeded, "
                   "failed, cancelled");
    app.add_option("--owner", owner, "only jobs of this submitter (a submitter sees its own only)");
  }
  if (verb == "result") {
    app.add_option("--output", output, "write result.json and result.safetensors here")->required();
    app.add_flag("--normalize", normalize,
                 "patching: also (patched - corrupted) / (clean - corrupted)");
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e, out, err);
  }
  if (address.empty()) {
    err << "lensgrid " << verb << ": say which coordinator: --coordinator HOST:PORT\n";
    return 2;
  }
  absl::StatusOr<std::unique_ptr<CoordinatorClient>> client =
      CoordinatorClient::Connect(address, {.transport = transport});
  if (!client.ok()) return ReportCommandStatus(verb.c_str(), client.status(), err);
  absl::Status status;
  if (del) {
    status = Delete(**client, job, out);
  } else if (verb == "jobs") {
    v1::ListJobsRequest filter;
    filter.set_owner(owner);
    if (!state.empty()) {
      absl::StatusOr<v1::JobState> s = ParseJobState(state);
      if (!s.ok()) return ReportCommandStatus(name.c_str(), s.status(), err);
      filter.set_state(*s);
    }
    status = ListJobs(**client, filter, out);
  }
  if (verb == "workers") status = ListWorkers(**client, out);
  if (verb == "cancel") status = Cancel(**client, job, out);
  if (verb == "result")
    status = Result(**client, job, address, output, normalize, model_dir_views, out);
  return ReportCommandStatus(name.c_str(), status, err);
}

}  // namespace lensgrid
