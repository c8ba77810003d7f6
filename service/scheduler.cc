#include "service/scheduler.h"

#include <algorithm>
#include <cstdio>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/echo.h"
#include "common/log.h"
#include "common/random_id.h"
#include "common/search_proto.h"
#include "common/sha256.h"
#include "common/status_macros.h"

// Reads the deprecated name fields on purpose: what older clients send.
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

namespace lensgrid::service {

namespace {

bool JobFailsOn(absl::StatusCode code) {
  return code == absl::StatusCode::kInvalidArgument ||
         code == absl::StatusCode::kFailedPrecondition;
}

// The method a spec names (enum, else the deprecated name), for listings.
std::string MethodLabel(const v1::JobSpec& spec) {
  absl::StatusOr<Method> m = MethodFromProto(spec.method());
  return m.ok() ? MethodName(*m) : spec.method_name();
}

// "model gpt2" or "model gpt2 with weights 1a2b3c4d5e6f..."
std::string ModelLabel(const std::string& model_id, const std::string& sha256) {
  return sha256.empty() ? absl::StrCat("model ", Echo(model_id))
                        : absl::StrCat("model ", Echo(model_id), " with weights ",
                                       Echo(sha256.substr(0, 12)), "...");
}

// When a stored final job finished: as stored, else (stores from before the
// column) its last event's time, else its creation.
int64_t FinishedMsOf(const StoredJob& stored) {
  if (stored.state < v1::JOB_SUCCEEDED) return 0;
  if (stored.finished_ms > 0) return stored.finished_ms;
  if (!stored.events.empty() && stored.events.back().unix_ms() > 0) {
    return stored.events.back().unix_ms();
  }
  return stored.created_ms;
}

v1::JobEvent::Kind FinalKind(v1::JobState state) {
  return state == v1::JOB_SUCCEEDED ? v1::JobEvent::JOB_SUCCEEDED
         : state == v1::JOB_FAILED  ? v1::JobEvent::JOB_FAILED
                                    : v1::JobEvent::JOB_CANCELLED;
}

}  // namespace

Scheduler::Scheduler(const Clock* clock, SchedulerOptions options, Journal* journal)
    : clock_(clock), options_(std::move(options)), journal_(journal) {}

void Scheduler::Log(absl::Status status) {
  // The journal failing (disk full) must not kill the server; say so loudly.
  if (!status.ok()) LogEvent(LogLevel::kError, absl::StrCat("state store: ", status.ToString()));
}

namespace {

// One log line per job lifecycle event and shard failure (per-shard progress,
// SHARD_DONE, is in the job's events and the metrics, not the log).
void LogJobEvent(const v1::JobEvent& e, const std::string& job_id, const std::string& owner,
                 const std::string& lease_id) {
  LogLevel level = LogLevel::kInfo;
  switch (e.kind()) {
    case v1::JobEvent::SHARD_DONE:
    case v1::JobEvent::WORKER_JOINED:  // logged once per worker, not per job
    case v1::JobEvent::WORKER_LOST:
      return;
    case v1::JobEvent::SHARD_RETRIED:
    case v1::JobEvent::WAITING_FOR_WORKER:
    case v1::JobEvent::STORE_FAILED:
      level = LogLevel::kWarning;
      break;
    case v1::JobEvent::JOB_FAILED:
      level = LogLevel::kError;
      break;
    default:
      break;
  }
  std::string message = absl::StrCat("job ", job_id, ": ", v1::JobEvent::Kind_Name(e.kind()));
  if (!e.message().empty()) absl::StrAppend(&message, ": ", e.message());
  LogEvent(level, message,
           {{"event", v1::JobEvent::Kind_Name(e.kind())},
            {"job", job_id},
            {"owner", owner},
            {"shard", e.shard_id() >= 0 ? absl::StrCat(e.shard_id()) : ""},
            {"lease", lease_id},
            {"worker", e.worker_id()},
            {"shards_done", absl::StrCat(e.shards_done(), "/", e.shards_total())}});
}

}  // namespace

std::unique_ptr<Scheduler::Job> Scheduler::BuildJob(const std::string& id, const v1::JobSpec& spec,
                                                    JobPlan plan, int64_t created_ms) const {
  auto job = std::make_unique<Job>();
  job->id = id;
  // The plan's prompts are the one copy of them kept in memory.
  job->spec = SpecWithoutPrompts(spec);
  job->plan = std::move(plan);
  job->created_ms = created_ms;
  job->max_attempts = spec.max_attempts() > 0 ? spec.max_attempts() : options_.max_attempts;
  job->shards.resize(job->plan.shards.size());
  job->results.resize(job->plan.shards.size());
  for (size_t i = 0; i < job->shards.size(); ++i) job->shards[i].range = job->plan.shards[i];
  IndexRanges(job.get());
  return job;
}

void Scheduler::IndexRanges(Job* job) const {
  job->ranges.clear();
  job->range_of.clear();
  job->held.clear();
  job->orphaned.clear();
  job->next_fresh = 0;
  if (!options_.prompt_affinity) return;
  std::map<std::pair<int64_t, int64_t>, int32_t> index;
  std::vector<int32_t> range_of(job->shards.size());
  std::vector<PromptRange> ranges;
  for (size_t i = 0; i < job->shards.size(); ++i) {
    const ShardRange& r = job->shards[i].range;
    auto [it, added] = index.emplace(std::make_pair(r.prompt_begin, r.prompt_end),
                                     static_cast<int32_t>(ranges.size()));
    if (added) ranges.emplace_back();
    ranges[it->second].shards.push_back(static_cast<int64_t>(i));
    range_of[i] = it->second;
  }
  if (ranges.size() == job->shards.size()) return;  // one shard per range: nothing shared
  job->ranges = std::move(ranges);
  job->range_of = std::move(range_of);
}

absl::StatusOr<std::unique_ptr<Scheduler::Job>> Scheduler::BuildJobToPrepare(
    const std::string& id, const v1::JobSpec& spec, int64_t created_ms) const {
  LG_RETURN_IF_ERROR(CheckSpecToPrepare(spec, options_.planner));
  JobPlan plan;
  LG_ASSIGN_OR_RETURN(plan.method, MethodFromProto(spec.method()).ok()
                                       ? MethodFromProto(spec.method())
                                       : ParseMethod(spec.method_name()));
  plan.prompts = std::make_shared<const Prompts>(spec.prompts());
  auto job = BuildJob(id, spec, std::move(plan), created_ms);
  job->prepared = false;
  Enqueue(job.get(), -1);
  return job;
}

bool Scheduler::Serves(const v1::WorkerInfo& w, const Job& job) {
  if (!w.alive() || w.model_id() != job.spec.model_id()) return false;
  if (!job.spec.weights_sha256().empty() && w.weights_sha256() != job.spec.weights_sha256()) {
    return false;
  }
  return job.prepared || w.model().n_layers() > 0;
}

std::string Scheduler::ServedModels() const {
  std::map<std::string, int> ids;
  for (const auto& [id, w] : workers_) {
    if (w.info.alive()) ++ids[w.info.model_id()];
  }
  if (ids.empty()) return "no worker is registered";
  std::string out;
  for (const auto& [model, n] : ids) {
    absl::StrAppend(&out, out.empty() ? "" : ", ", Echo(model), " (", n,
                    n == 1 ? " worker)" : " workers)");
  }
  return out;
}

void Scheduler::CheckServed(int64_t now) {
  for (Job* job : std::vector<Job*>(active_)) {
    bool served = false;
    for (const auto& [id, w] : workers_) {
      if (Serves(w.info, *job)) {
        served = true;
        break;
      }
    }
    if (served) {
      job->waiting_since_ms = 0;
      continue;
    }
    const std::string what = ModelLabel(job->spec.model_id(), job->spec.weights_sha256());
    if (job->waiting_since_ms == 0) {
      job->waiting_since_ms = now;
      Emit(job, v1::JobEvent::WAITING_FOR_WORKER, -1, "",
           absl::StrCat("no live worker serves ", what,
                        job->prepared ? "" : " (and can prepare it)", "; the job waits",
                        options_.model_wait_ms > 0
                            ? absl::StrCat(" up to ", options_.model_wait_ms, " ms")
                            : "",
                        ". Live workers: ", ServedModels()));
    } else if (options_.model_wait_ms > 0 &&
               now - job->waiting_since_ms >= options_.model_wait_ms) {
      Finish(job, v1::JOB_FAILED,
             absl::FailedPreconditionError(absl::StrCat(
                 "no live worker served ", what, " for ", now - job->waiting_since_ms,
                 " ms (the coordinator's --model-wait-ms); live workers: ", ServedModels())));
    }
  }
}

namespace {

absl::Status CheckRequestId(const std::string& request_id) {
  if (request_id.size() > Scheduler::kMaxRequestIdBytes) {
    return absl::InvalidArgumentError(absl::StrCat("request_id ", Echo(request_id), " is ",
                                                   request_id.size(), " bytes, over the ",
                                                   Scheduler::kMaxRequestIdBytes, "-byte limit"));
  }
  for (char c : request_id) {
    if (c < 0x20 || c > 0x7e) {
      return absl::InvalidArgumentError(
          absl::StrCat("request_id ", Echo(request_id),
                       " must be printable ASCII (letters, digits, punctuation, space)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> Scheduler::Submit(const Caller& caller, const v1::JobSpec& submitted,
                                              const std::string& request_id) {
  const v1::JobSpec spec = WithSpecDefaults(submitted);
  std::string request_sha256;
  const std::pair<std::string, std::string> key{caller.name, request_id};
  if (!request_id.empty()) {
    LG_RETURN_IF_ERROR(CheckRequestId(request_id));
    request_sha256 = Sha256Hex(spec.SerializeAsString());
    absl::MutexLock lock(&mu_);
    // A repeat of a request being submitted now waits for its answer.
    auto free = [this, &key]()
                    ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return submitting_.count(key) == 0; };
    mu_.Await(absl::Condition(&free));
    if (auto it = requests_.find(key); it != requests_.end()) {
      auto job = jobs_.find(it->second);
      if (job != jobs_.end() && job->second->request_sha256 == request_sha256) return it->second;
      return absl::AlreadyExistsError(
          absl::StrCat("request_id ", Echo(request_id), " was used for job ", it->second,
                       " with a different spec: a new job needs a new request_id"));
    }
    submitting_.insert(key);
  }
  absl::StatusOr<std::string> id = SubmitNew(caller, spec, request_id, request_sha256);
  if (!request_id.empty()) {
    absl::MutexLock lock(&mu_);
    submitting_.erase(key);
  }
  return id;
}

absl::StatusOr<std::string> Scheduler::SubmitNew(const Caller& caller, const v1::JobSpec& spec,
                                                 const std::string& request_id,
                                                 const std::string& request_sha256) {
  // Plan and store before taking the lock that every other call needs: a big
  // (or hostile) spec costs its own caller's time only. The planner checks
  // every size before allocating.
  const bool to_prepare = NeedsPreparing(spec);
  JobPlan plan;
  if (to_prepare) {
    LG_RETURN_IF_ERROR(CheckSpecToPrepare(spec, options_.planner));
  } else {
    LG_ASSIGN_OR_RETURN(plan, PlanJob(spec, options_.planner));
    if (plan.shards.empty()) return absl::InvalidArgumentError("the job plans to no shards");
  }
  const int64_t now = clock_->NowMs();
  std::string id;
  {
    absl::MutexLock lock(&mu_);
    bool any_alive = false, model_served = false;
    for (const auto& [wid, w] : workers_) {
      any_alive |= w.info.alive();
      model_served |= w.info.alive() && w.info.model_id() == spec.model_id();
    }
    if (any_alive && !model_served) {
      return absl::NotFoundError(absl::StrCat("no worker serves model ", Echo(spec.model_id()),
                                              "; the workers serve: ", ServedModels()));
    }
    do {
      id = absl::StrCat("job-", now, "-", ++next_id_);
    } while (jobs_.count(id));
  }
  // Pin the planned shard sizes into the stored spec, so a restart re-plans
  // the same shards even if the planner's defaults changed meanwhile. The
  // pins are appended to the serialized spec (the last value of a field wins
  // when protobuf parses it): no copy of the prompts is made.
  v1::JobSpec pins;
  if (!to_prepare) {
    pins.set_prompts_per_shard(plan.shards.front().num_prompts());
    pins.set_components_per_shard(plan.shards.front().num_components());
  }
  const int64_t n_shards = static_cast<int64_t>(plan.shards.size());
  v1::JobEvent submitted;
  submitted.set_seq(1);
  submitted.set_kind(v1::JobEvent::SUBMITTED);
  submitted.set_shards_total(n_shards);
  submitted.set_shard_id(-1);
  if (to_prepare) {
    submitted.set_message(absl::StrCat(
        MethodLabel(spec), " on ", ModelLabel(spec.model_id(), spec.weights_sha256()),
        ": a worker prepares the job (",
        spec.has_dataset() ? absl::StrCat("builds dataset ", Echo(spec.dataset().name()))
                           : absl::StrCat(spec.prompts_size(), " prompts given"),
        ") before it is planned"));
  } else {
    submitted.set_message(absl::StrCat(MethodName(plan.method), " over ", plan.n_prompts,
                                       " prompts in ", n_shards, " shards"));
  }
  submitted.set_unix_ms(now);
  if (journal_ != nullptr) {
    std::string stored = spec.SerializeAsString();
    if (!to_prepare) pins.AppendToString(&stored);
    JobWrite write;
    write.job_id = id;
    write.new_spec = &stored;
    write.created_ms = now;
    write.owner = caller.name;
    write.request_id = request_id;
    write.request_sha256 = request_sha256;
    write.events.push_back(&submitted);
    absl::Status s = journal_->Write(write);
    if (!s.ok()) {
      return absl::UnavailableError(absl::StrCat("cannot store the job: ", s.message()));
    }
  }
  std::unique_ptr<Job> job;
  if (to_prepare) {
    LG_ASSIGN_OR_RETURN(job, BuildJobToPrepare(id, spec, now));
  } else {
    job = BuildJob(id, spec, std::move(plan), now);
    job->spec.MergeFrom(pins);
    for (int64_t i = 0; i < n_shards; ++i) Enqueue(job.get(), i);
  }
  job->owner = caller.name;
  job->request_id = request_id;
  job->request_sha256 = request_sha256;
  LogJobEvent(submitted, id, caller.name, "");
  job->events.push_back(std::move(submitted));
  job->saved_events = 1;
  absl::MutexLock lock(&mu_);
  active_.push_back(AddJob(std::move(job)));
  return id;
}

Scheduler::Job* Scheduler::AddJob(std::unique_ptr<Job> job) {
  Job* raw = job.get();
  if (!raw->request_id.empty()) requests_[{raw->owner, raw->request_id}] = raw->id;
  if (Final(*raw)) finished_.insert({raw->finished_ms, raw->id});
  if (Final(*raw) && !raw->summary && !raw->damaged) {
    to_summarize_.insert({raw->finished_ms, raw->id});
  }
  jobs_[raw->id] = std::move(job);
  ++version_;
  return raw;
}

void Scheduler::CopyIdentity(const StoredJob& stored, Job* job) {
  job->owner = stored.owner;
  job->request_id = stored.request_id;
  job->request_sha256 = stored.request_sha256;
}

void Scheduler::AddDamagedJob(const StoredJob& stored, const std::string& why) {
  auto job = std::make_unique<Job>();
  job->id = stored.job_id;
  CopyIdentity(stored, job.get());
  job->spec = stored.spec;
  job->spec.clear_prompts();
  job->created_ms = stored.created_ms;
  job->state = v1::JOB_FAILED;
  job->error_code = static_cast<int>(absl::StatusCode::kDataLoss);
  job->error = absl::StrCat("the stored job is damaged: ", why);
  job->events = stored.events;
  job->saved_events = static_cast<int64_t>(job->events.size());
  job->damaged = true;
  job->finished_ms = stored.finished_ms > 0 ? stored.finished_ms : stored.created_ms;
  AddJob(std::move(job));
}

absl::Status Scheduler::Restore(StoredJob stored) {
  if (stored.summary.has_value()) {  // a finished job: the rest stays in the store
    auto job = std::make_unique<Job>();
    job->id = stored.job_id;
    CopyIdentity(stored, job.get());
    job->state = stored.state;
    job->error_code = stored.error_code;
    job->error = stored.error;
    job->created_ms = stored.created_ms;
    job->finished_ms = FinishedMsOf(stored);
    job->summary = std::move(*stored.summary);
    job->summary_stored = true;
    absl::MutexLock lock(&mu_);
    AddJob(std::move(job));
    return absl::OkStatus();
  }
  if (stored.damage.empty() && NeedsPreparing(stored.spec)) {
    // Stored before a worker prepared it: prepared again.
    absl::StatusOr<std::unique_ptr<Job>> job =
        BuildJobToPrepare(stored.job_id, stored.spec, stored.created_ms);
    absl::MutexLock lock(&mu_);
    if (!job.ok()) {
      const std::string why = absl::StrCat("its spec cannot be prepared: ", job.status().message());
      AddDamagedJob(stored, why);
      return absl::DataLossError(absl::StrCat("job ", stored.job_id, " is damaged: ", why));
    }
    Job* raw = job->get();
    CopyIdentity(stored, raw);
    raw->state = stored.state;
    raw->finished_ms = FinishedMsOf(stored);
    raw->error_code = stored.error_code;
    raw->error = stored.error;
    raw->events = std::move(stored.events);
    raw->saved_events = static_cast<int64_t>(raw->events.size());
    AddJob(std::move(*job));
    if (!Final(*raw)) active_.push_back(raw);
    return absl::OkStatus();
  }
  absl::StatusOr<JobPlan> plan = stored.damage.empty()
                                     ? PlanJob(stored.spec, options_.planner)
                                     : absl::StatusOr<JobPlan>(absl::DataLossError(stored.damage));
  if (!plan.ok()) {
    const std::string why = stored.damage.empty() ? absl::StrCat("its spec cannot be planned: ",
                                                                 plan.status().message())
                                                  : stored.damage;
    absl::MutexLock lock(&mu_);
    AddDamagedJob(stored, why);
    return absl::DataLossError(absl::StrCat("job ", stored.job_id, " is damaged: ", why));
  }
  std::unique_ptr<Job> job =
      BuildJob(stored.job_id, stored.spec, std::move(*plan), stored.created_ms);
  CopyIdentity(stored, job.get());
  job->state = stored.state;
  job->finished_ms = FinishedMsOf(stored);
  job->error_code = stored.error_code;
  job->error = stored.error;
  job->events = std::move(stored.events);
  job->saved_events = static_cast<int64_t>(job->events.size());
  std::string damage;
  for (int64_t shard : stored.damaged_shards) {
    damage = absl::StrCat("the stored result of shard ", shard, " is corrupt (checksum mismatch)");
  }
  for (auto& [shard, tensors] : stored.results) {
    if (shard < 0 || shard >= static_cast<int64_t>(job->shards.size()) ||
        !CheckShardResult(job->plan, job->shards[shard].range, tensors).ok()) {
      damage = absl::StrCat("the stored result of shard ", shard, " does not fit the job's plan");
      continue;
    }
    job->shards[shard].state = Shard::State::kDone;
    job->results[shard] = std::move(tensors);
    ++job->done;
  }
  if (job->state == v1::JOB_SUCCEEDED && damage.empty()) {
    std::vector<ShardResult> parts;
    for (size_t i = 0; i < job->shards.size(); ++i)
      parts.push_back({job->shards[i].range, job->results[i]});
    auto merged = MergeShards(job->plan, parts);
    if (merged.ok()) {
      job->merged = std::move(*merged);
    } else {
      damage = absl::StrCat("its stored results do not merge: ", merged.status().message());
    }
  }
  absl::MutexLock lock(&mu_);
  if (!damage.empty() && job->state == v1::JOB_SUCCEEDED) {
    // Never serve a result that is not the one computed.
    job->state = v1::JOB_FAILED;
    job->error_code = static_cast<int>(absl::StatusCode::kDataLoss);
    job->error = absl::StrCat("the stored job is damaged: ", damage);
    job->damaged = true;
    job->results.clear();
  }
  Job* raw = AddJob(std::move(job));
  if (raw->damaged) {
    return absl::DataLossError(absl::StrCat("job ", raw->id, " is damaged: ", damage));
  }
  if (!damage.empty()) {
    Log(absl::DataLossError(
        absl::StrCat("job ", raw->id, ": ", damage, "; that shard is computed again")));
  }
  if (Final(*raw)) return absl::OkStatus();
  for (int64_t i = 0; i < static_cast<int64_t>(raw->shards.size()); ++i) {
    if (raw->shards[i].state != Shard::State::kDone) Enqueue(raw, i);
  }
  active_.push_back(raw);
  if (raw->done == static_cast<int64_t>(raw->shards.size())) {
    Finish(raw, v1::JOB_SUCCEEDED, absl::OkStatus());
    SaveAll();
  }
  return absl::OkStatus();
}

absl::Status Scheduler::Save(Job* job) {
  if (journal_ == nullptr || !Unsaved(*job)) {
    unsaved_.erase(job);
    return absl::OkStatus();
  }
  JobWrite write;
  write.job_id = job->id;
  if (!job->unsaved_spec.empty()) write.prepared_spec = &job->unsaved_spec;
  for (int64_t shard : job->unsaved_results) write.results.push_back({shard, &job->results[shard]});
  if (job->state_unsaved) {
    write.set_state = true;
    write.state = job->state;
    write.error_code = job->error_code;
    write.error = job->error;
    write.finished_ms = job->finished_ms;
  }
  std::string summary;
  if (job->state_unsaved && Final(*job)) {  // what a restart keeps of it in memory
    summary = SummaryOf(*job).SerializeAsString();
    write.summary = &summary;
  }
  for (size_t i = static_cast<size_t>(job->saved_events); i < job->events.size(); ++i) {
    write.events.push_back(&job->events[i]);
  }
  const int64_t n_events = static_cast<int64_t>(job->events.size());
  absl::Status s = journal_->Write(write);
  if (s.ok()) {
    if (write.summary != nullptr) job->summary_stored = true;
    job->saved_events = n_events;
    job->unsaved_results.clear();
    job->unsaved_spec.clear();
    job->state_unsaved = false;
    unsaved_.erase(job);
    if (!job->store_error.empty()) {
      job->store_error.clear();
      Emit(job, v1::JobEvent::STORE_RECOVERED, -1, "",
           "the state store accepts writes again: the job resumes");
      return Save(job);
    }
    return absl::OkStatus();
  }
  job->store_retry_ms = clock_->NowMs() + options_.store_retry_ms;
  if (job->store_error.empty()) {
    job->store_error = absl::StrCat("state store: ", s.message());
    Log(absl::Status(s.code(), absl::StrCat("job ", job->id, " paused: ", s.message())));
    Emit(job, v1::JobEvent::STORE_FAILED, -1, "",
         absl::StrCat(job->store_error,
                      "; the job is paused (no new leases, results held in "
                      "memory) until the store accepts writes"));
  }
  ++version_;
  return s;
}

void Scheduler::SaveAll() {
  const int64_t now = clock_->NowMs();
  for (Job* job : std::vector<Job*>(unsaved_.begin(), unsaved_.end())) {
    if (job->store_error.empty() || job->store_retry_ms <= now) (void)Save(job);
  }
}

std::string Scheduler::WorkerMessage(absl::string_view message) const {
  return Echo(message,
              static_cast<size_t>(std::max<int64_t>(16, options_.max_worker_message_bytes)));
}

void Scheduler::Emit(Job* job, v1::JobEvent::Kind kind, int64_t shard, const std::string& worker,
                     const std::string& message) {
  v1::JobEvent e;
  e.set_seq(static_cast<int64_t>(job->events.size()) + 1);
  e.set_kind(kind);
  e.set_shards_done(job->done);
  e.set_shards_total(static_cast<int64_t>(job->shards.size()));
  const double rate = Rate(*job);
  e.set_shards_per_s(rate);
  if (rate > 0) e.set_eta_s(static_cast<double>(e.shards_total() - e.shards_done()) / rate);
  e.set_shard_id(shard);
  e.set_worker_id(worker);
  e.set_message(message);
  e.set_unix_ms(clock_->NowMs());
  LogJobEvent(e, job->id, job->owner,
              shard >= 0 && shard < static_cast<int64_t>(job->shards.size())
                  ? job->shards[shard].lease_id
                  : (shard == -1 && !job->prepared ? job->prepare.lease_id : ""));
  job->events.push_back(std::move(e));
  unsaved_.insert(job);
  ++version_;
}

double Scheduler::Rate(const Job& job) const {
  if (job.first_lease_ms == 0 || job.done_here == 0) return 0;
  const int64_t elapsed = std::max<int64_t>(1, clock_->NowMs() - job.first_lease_ms);
  return 1000.0 * static_cast<double>(job.done_here) / static_cast<double>(elapsed);
}

int64_t Scheduler::LeaseMs(const Job& job) const {
  if (job.shard_ms <= 0) return std::max(options_.initial_lease_ms, options_.min_lease_ms);
  return std::max<int64_t>(options_.min_lease_ms,
                           static_cast<int64_t>(options_.lease_multiple * job.shard_ms));
}

void Scheduler::Touch(Worker* w, int64_t now) {
  w->last_seen_ms = now;
  w->info.set_last_seen_unix_ms(now);
  w->info.set_alive(true);
}

absl::StatusOr<Scheduler::Worker*> Scheduler::FindWorker(const std::string& worker_id) {
  auto it = workers_.find(worker_id);
  if (it == workers_.end() || !it->second.info.alive()) {
    return absl::NotFoundError(
        absl::StrCat("unknown worker ", Echo(worker_id),
                     " (the coordinator restarted or lost it): register again"));
  }
  Touch(&it->second, clock_->NowMs());
  return &it->second;
}

std::optional<Scheduler::LeaseRef> Scheduler::FindLease(const std::string& lease_id) {
  // lease id = <job id>/<shard>/<attempt>-<128 random bits>: readable in logs,
  // unguessable, and only ids this scheduler issued are found.
  std::vector<std::string> parts = absl::StrSplit(lease_id, '/');
  int64_t shard = 0;
  if (parts.size() != 3 || !absl::SimpleAtoi(parts[1], &shard)) return std::nullopt;
  auto it = jobs_.find(parts[0]);
  if (it == jobs_.end() || shard < -1 || shard >= static_cast<int64_t>(it->second->shards.size())) {
    return std::nullopt;
  }
  LeaseRef ref{it->second.get(), shard};
  if (!ShardOf(ref.job, shard).issued.count(lease_id)) return std::nullopt;
  return ref;
}

absl::Status Scheduler::CheckHolder(const LeaseRef& ref, const std::string& lease_id,
                                    const std::string& worker_id) {
  const auto& issued = ShardOf(ref.job, ref.shard).issued;
  auto it = issued.find(lease_id);
  if (it == issued.end() || it->second != worker_id) {
    return absl::PermissionDeniedError(
        absl::StrCat("lease ", Echo(lease_id), " was not issued to worker ", Echo(worker_id)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Scheduler::RegisterWorker(const v1::RegisterRequest& request) {
  for (const auto& [field, value] :
       {std::pair<const char*, const std::string*>{"name", &request.name()},
        {"model_id", &request.model_id()},
        {"weights_sha256", &request.weights_sha256()},
        {"device", &request.device()},
        {"address", &request.address()},
        {"tokenizer_sha256", &request.tokenizer_sha256()}}) {
    if (static_cast<int64_t>(value->size()) > options_.max_worker_field_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(field, " ", Echo(*value), " is over the ",
                                                     options_.max_worker_field_bytes,
                                                     "-byte limit"));
    }
  }
  absl::MutexLock lock(&mu_);
  if (static_cast<int64_t>(workers_.size()) >= options_.max_workers) {
    // Make room by forgetting the longest-lost worker, if any is lost.
    auto oldest = workers_.end();
    for (auto it = workers_.begin(); it != workers_.end(); ++it) {
      if (!it->second.info.alive() &&
          (oldest == workers_.end() || it->second.last_seen_ms < oldest->second.last_seen_ms)) {
        oldest = it;
      }
    }
    if (oldest == workers_.end()) {
      return absl::ResourceExhaustedError(absl::StrCat(workers_.size(),
                                                       " workers are registered and alive, "
                                                       "the limit of this coordinator"));
    }
    workers_.erase(oldest);
  }
  const int64_t now = clock_->NowMs();
  const std::string id = absl::StrCat("worker-", now, "-", ++next_id_);
  Worker& w = workers_[id];
  w.info.set_worker_id(id);
  w.info.set_name(request.name());
  w.info.set_model_id(request.model_id());
  w.info.set_weights_sha256(request.weights_sha256());
  w.info.set_device(request.device());
  w.info.set_capacity(std::max(1, request.capacity()));
  w.info.set_address(request.address());
  *w.info.mutable_model() = request.model();
  w.info.set_tokenizer_sha256(request.tokenizer_sha256());
  Touch(&w, now);
  LogEvent(LogLevel::kInfo, absl::StrCat("worker ", id, " registered: ", request.name()),
           {{"event", "WORKER_JOINED"},
            {"worker", id},
            {"model", request.model_id()},
            {"address", request.address()}});
  for (Job* job : active_) {
    if (Serves(w.info, *job)) Emit(job, v1::JobEvent::WORKER_JOINED, -1, id, request.name());
  }
  SaveAll();
  return id;
}

bool Scheduler::PromoteDue(Job* job, int64_t now) {
  auto& d = job->delayed;
  bool promoted = false;
  for (size_t i = 0; i < d.size();) {
    if (ShardOf(job, d[i]).ready_at_ms <= now) {
      // An entry still queued (stale since an affinity lease) serves again.
      if (ShardOf(job, d[i]).queued == 0) Enqueue(job, d[i]);
      promoted = true;
      d[i] = d.back();
      d.pop_back();
    } else {
      ++i;
    }
  }
  return promoted;
}

void Scheduler::Enqueue(Job* job, int64_t s, bool front) {
  ++ShardOf(job, s).queued;
  if (front) {
    job->ready.push_front(s);
  } else {
    job->ready.push_back(s);
  }
}

std::optional<int64_t> Scheduler::ReadyIn(Job* job, int32_t r, const std::string& worker_id,
                                          int64_t now) {
  PromptRange& range = job->ranges[r];
  while (range.done_prefix < range.shards.size() &&
         job->shards[range.shards[range.done_prefix]].state == Shard::State::kDone) {
    ++range.done_prefix;
  }
  for (size_t i = range.done_prefix; i < range.shards.size(); ++i) {
    const int64_t s = range.shards[i];
    const Shard& shard = job->shards[s];
    if (shard.state == Shard::State::kPending && shard.ready_at_ms <= now &&
        !shard.failed_on.count(worker_id)) {
      return s;
    }
  }
  return std::nullopt;
}

void Scheduler::Hold(Job* job, int64_t s, const std::string& worker_id) {
  if (s < 0 || job->ranges.empty()) return;
  const int32_t r = job->range_of[s];
  std::vector<std::string>& holders = job->ranges[r].holders;
  if (std::find(holders.begin(), holders.end(), worker_id) != holders.end()) return;
  holders.push_back(worker_id);
  job->held[worker_id].push_back(r);
}

void Scheduler::DropHolder(const std::string& worker_id) {
  for (Job* job : active_) {
    auto it = job->held.find(worker_id);
    if (it == job->held.end()) continue;
    for (int32_t r : it->second) {
      std::vector<std::string>& holders = job->ranges[r].holders;
      holders.erase(std::remove(holders.begin(), holders.end(), worker_id), holders.end());
      if (holders.empty()) job->orphaned.push_back(r);
    }
    job->held.erase(it);
  }
}

std::optional<int64_t> Scheduler::TakeByAffinity(Job* job, const std::string& worker_id,
                                                 int64_t now) {
  if (job->ranges.empty() || !job->prepared) return std::nullopt;
  // 1. A range this worker holds (finished ones are forgotten on the way).
  if (auto it = job->held.find(worker_id); it != job->held.end()) {
    std::vector<int32_t>& mine = it->second;
    for (size_t i = 0; i < mine.size();) {
      if (std::optional<int64_t> s = ReadyIn(job, mine[i], worker_id, now)) return s;
      const PromptRange& range = job->ranges[mine[i]];
      if (range.done_prefix == range.shards.size()) {
        mine[i] = mine.back();
        mine.pop_back();
      } else {
        ++i;
      }
    }
  }
  // 2. A range no live worker holds: one whose holders were lost, else one
  // never leased.
  // (Ranges held again, or done, leave the list; those backing off stay.)
  for (size_t i = 0; i < job->orphaned.size();) {
    const int32_t r = job->orphaned[i];
    if (job->ranges[r].holders.empty()) {
      if (std::optional<int64_t> s = ReadyIn(job, r, worker_id, now)) return s;
      if (job->ranges[r].done_prefix < job->ranges[r].shards.size()) {
        ++i;
        continue;
      }
    }
    job->orphaned[i] = job->orphaned.back();
    job->orphaned.pop_back();
  }
  for (; job->next_fresh < job->ranges.size(); ++job->next_fresh) {
    const int32_t r = static_cast<int32_t>(job->next_fresh);
    if (!job->ranges[r].holders.empty()) continue;
    if (std::optional<int64_t> s = ReadyIn(job, r, worker_id, now)) return s;
  }
  return std::nullopt;
}

std::optional<int64_t> Scheduler::TakeShard(Job* job, const std::string& worker_id, int64_t now) {
  std::optional<int64_t> chosen = TakeByAffinity(job, worker_id, now);
  // Else the oldest ready shard. Prefer shards that have not failed on this
  // worker; give one anyway when every live worker for the job has failed it.
  const size_t n = chosen ? 0 : job->ready.size();
  for (size_t i = 0; i < n && !chosen; ++i) {
    const int64_t s = job->ready.front();
    job->ready.pop_front();
    Shard& shard = ShardOf(job, s);
    --shard.queued;
    // Stale: leased by affinity (perhaps back in `delayed` since).
    if (shard.state != Shard::State::kPending || shard.ready_at_ms > now) continue;
    if (!shard.failed_on.count(worker_id)) {
      chosen = s;
      break;
    }
    size_t others = 0;
    for (const auto& [id, w] : workers_) {
      if (id != worker_id && !shard.failed_on.count(id) && Serves(w.info, *job)) ++others;
    }
    if (others == 0) {
      chosen = s;
      break;
    }
    Enqueue(job, s);
  }
  if (chosen) Hold(job, *chosen, worker_id);
  return chosen;
}

absl::StatusOr<std::optional<v1::ShardLease>> Scheduler::Lease(const std::string& worker_id) {
  absl::MutexLock lock(&mu_);
  LG_ASSIGN_OR_RETURN(Worker * w, FindWorker(worker_id));
  const int64_t now = clock_->NowMs();
  for (Job* job : active_) {
    if (!Serves(w->info, *job) || !job->store_error.empty()) {  // paused: cannot store
      continue;
    }
    PromoteDue(job, now);
    std::optional<int64_t> s = TakeShard(job, worker_id, now);
    if (!s) continue;
    Shard& shard = ShardOf(job, *s);
    shard.state = Shard::State::kLeased;
    ++shard.leases;
    shard.lease_id = absl::StrCat(job->id, "/", *s, "/", shard.leases, "-", RandomHex128());
    shard.issued[shard.lease_id] = worker_id;
    if (*s >= 0) ++counters_.shards_leased;  // a preparation is not a shard
    shard.worker_id = worker_id;
    shard.lease_start_ms = now;
    shard.deadline_ms = now + LeaseMs(*job);
    job->leased.insert(*s);
    w->leases.insert(shard.lease_id);
    w->info.set_leases(static_cast<int32_t>(w->leases.size()));
    if (job->state == v1::JOB_QUEUED) {
      job->state = v1::JOB_RUNNING;
      job->first_lease_ms = now;
      job->state_unsaved = true;
      unsaved_.insert(job);
    }
    if (job->first_lease_ms == 0) job->first_lease_ms = now;  // restored running job
    v1::ShardLease lease;
    lease.set_lease_id(shard.lease_id);
    lease.set_job_id(job->id);
    lease.set_shard_id(*s);
    lease.set_attempt(shard.leases);
    if (*s < 0) {
      v1::PrepareJob* prepare = lease.mutable_prepare();
      if (job->spec.has_dataset()) {
        *prepare->mutable_dataset() = job->spec.dataset();
      } else if (!job->plan.prompts->empty()) {
        *prepare->mutable_first_prompt() = job->plan.prompts->Get(0);
      }
    } else {
      *lease.mutable_shard() = MakeShardSpec(job->plan, shard.range);
    }
    lease.set_lease_ms(LeaseMs(*job));
    SaveAll();
    return std::optional<v1::ShardLease>(std::move(lease));
  }
  return std::optional<v1::ShardLease>();
}

absl::StatusOr<std::vector<std::string>> Scheduler::Heartbeat(
    const std::string& worker_id, const std::vector<std::string>& lease_ids, int64_t* lease_ms) {
  absl::MutexLock lock(&mu_);
  LG_ASSIGN_OR_RETURN(Worker * w, FindWorker(worker_id));
  (void)w;
  const int64_t now = clock_->NowMs();
  std::vector<std::string> cancelled;
  int64_t shortest = 0;
  for (const std::string& id : lease_ids) {
    std::optional<LeaseRef> ref = FindLease(id);
    // A lease issued to another worker id (e.g. this worker's own before the
    // coordinator lost and it re-registered) is not extended: the caller is
    // told to abandon it, and the holder's lease is untouched.
    if (!ref || !CheckHolder(*ref, id, worker_id).ok() || Final(*ref->job) ||
        ShardOf(ref->job, ref->shard).lease_id != id ||
        ShardOf(ref->job, ref->shard).state != Shard::State::kLeased) {
      cancelled.push_back(id);
      continue;
    }
    const int64_t extension = LeaseMs(*ref->job);
    ShardOf(ref->job, ref->shard).deadline_ms = now + extension;
    shortest = shortest == 0 ? extension : std::min(shortest, extension);
  }
  if (lease_ms != nullptr) *lease_ms = shortest;
  return cancelled;
}

void Scheduler::ReleaseLease(Job* job, int64_t s) {
  Shard& shard = ShardOf(job, s);
  job->leased.erase(s);
  auto it = workers_.find(shard.worker_id);
  if (it != workers_.end()) {
    it->second.leases.erase(shard.lease_id);
    it->second.info.set_leases(static_cast<int32_t>(it->second.leases.size()));
  }
}

void Scheduler::Requeue(Job* job, int64_t s, const std::string& reason) {
  Shard& shard = ShardOf(job, s);
  ReleaseLease(job, s);
  const std::string worker = shard.worker_id;
  shard.failed_on.insert(worker);
  ++shard.failures;
  if (shard.failures >= job->max_attempts) {
    Finish(job, v1::JOB_FAILED,
           absl::AbortedError(absl::StrCat(s < 0 ? "the preparation" : absl::StrCat("shard ", s),
                                           " failed ", shard.failures, " times; last: ", reason)));
    return;
  }
  ++counters_.shards_retried;
  shard.state = Shard::State::kPending;
  const int64_t backoff = std::min(options_.backoff_max_ms,
                                   options_.backoff_base_ms << std::min(shard.failures - 1, 20));
  shard.ready_at_ms = clock_->NowMs() + backoff;
  job->delayed.push_back(s);
  Emit(job, v1::JobEvent::SHARD_RETRIED, s, worker, reason);
}

absl::StatusOr<bool> Scheduler::Complete(const std::string& worker_id, const std::string& lease_id,
                                         std::vector<Array> tensors, std::string* note) {
  absl::MutexLock lock(&mu_);
  if (auto w = workers_.find(worker_id); w != workers_.end()) Touch(&w->second, clock_->NowMs());
  std::optional<LeaseRef> ref = FindLease(lease_id);
  if (!ref && LeaseOfSummarizedJob(lease_id)) return false;  // the job is long over
  if (!ref) return absl::NotFoundError(absl::StrCat("unknown lease ", Echo(lease_id)));
  LG_RETURN_IF_ERROR(CheckHolder(*ref, lease_id, worker_id));
  Job* job = ref->job;
  if (ref->shard < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "lease ", Echo(lease_id), " prepares its job: complete it with a PreparedDataset"));
  }
  Shard& shard = job->shards[ref->shard];
  if (Final(*job) || shard.state == Shard::State::kDone) return false;
  const bool current = shard.state == Shard::State::kLeased && shard.lease_id == lease_id;
  absl::Status check = CheckShardResult(job->plan, shard.range, tensors);
  if (!check.ok()) {
    const std::string reason = absl::StrCat("malformed result from worker ", Echo(worker_id), ": ",
                                            WorkerMessage(check.message()));
    if (current) Requeue(job, ref->shard, reason);
    SaveAll();
    return absl::InvalidArgumentError(reason);
  }
  const int64_t now = clock_->NowMs();
  if (current) {
    const double ms = static_cast<double>(std::max<int64_t>(1, now - shard.lease_start_ms));
    job->shard_ms = job->shard_ms <= 0 ? ms : 0.8 * job->shard_ms + 0.2 * ms;
  }
  if (shard.state == Shard::State::kLeased) ReleaseLease(job, ref->shard);
  shard.state = Shard::State::kDone;
  job->results[ref->shard] = std::move(tensors);
  job->unsaved_results.push_back(ref->shard);
  ++job->done;
  ++job->done_here;
  ++counters_.shards_completed;
  if (auto w = workers_.find(worker_id); w != workers_.end()) {
    w->second.info.set_shards_done(w->second.info.shards_done() + 1);
  }
  Emit(job, v1::JobEvent::SHARD_DONE, ref->shard, worker_id, "");
  if (job->done == static_cast<int64_t>(job->shards.size())) {
    Finish(job, v1::JOB_SUCCEEDED, absl::OkStatus());
  }
  // The result, its event and the job's state in one write; if the store
  // fails, the result is held in memory (the shard is not computed again) and
  // written when the store recovers.
  if (!Save(job).ok() && note != nullptr) {
    *note = absl::StrCat("held in memory, not yet stored: ", job->store_error);
  }
  SaveAll();
  return true;
}

absl::StatusOr<bool> Scheduler::CompletePrepare(const std::string& worker_id,
                                                const std::string& lease_id,
                                                const v1::PreparedDataset& prepared) {
  // Checked and copied under the lock; planned (a pure function over a
  // possibly large dataset) outside it, as Submit plans.
  v1::JobSpec spec;
  std::shared_ptr<const Prompts> inline_prompts;
  std::string weights_sha256;
  {
    absl::MutexLock lock(&mu_);
    if (auto w = workers_.find(worker_id); w != workers_.end()) Touch(&w->second, clock_->NowMs());
    absl::StatusOr<std::optional<LeaseRef>> live = FindLiveLease(lease_id, worker_id);
    if (!live.ok()) return live.status();
    if (!live->has_value()) return false;
    if ((*live)->shard >= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("lease ", Echo(lease_id), " is a shard's: complete it with tensors"));
    }
    Job* job = (*live)->job;
    auto w = workers_.find(worker_id);
    if (w == workers_.end()) {
      return absl::NotFoundError(absl::StrCat("unknown worker ", Echo(worker_id)));
    }
    spec = job->spec;
    inline_prompts = job->plan.prompts;
    weights_sha256 = w->second.info.weights_sha256();
  }
  absl::StatusOr<JobPlan> plan;
  absl::StatusOr<v1::JobSpec> full = PreparedSpec(spec, *inline_prompts, prepared, weights_sha256);
  if (full.ok()) {
    plan = PlanJob(*full, options_.planner);
    if (plan.ok() && plan->shards.empty()) {
      plan = absl::InvalidArgumentError("the job plans to no shards");
    }
  }
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::optional<LeaseRef>> live = FindLiveLease(lease_id, worker_id);
  if (!live.ok()) return live.status();
  if (!live->has_value()) return false;  // cancelled or expired meanwhile
  Job* job = (*live)->job;
  ReleaseLease(job, -1);
  job->prepare.state = Shard::State::kDone;
  const absl::Status refused = !full.ok() ? full.status() : plan.status();
  if (!refused.ok()) {
    // The dataset the job asked for is not one this coordinator runs (too
    // many prompts, a prompt too long): the job's own fault, not the worker's.
    Finish(job, v1::JOB_FAILED,
           absl::Status(refused.code(), absl::StrCat("the prepared dataset: ", refused.message())));
    SaveAll();
    return true;
  }
  v1::JobSpec pins;
  pins.set_prompts_per_shard(plan->shards.front().num_prompts());
  pins.set_components_per_shard(plan->shards.front().num_components());
  job->unsaved_spec = full->SerializeAsString();
  pins.AppendToString(&job->unsaved_spec);
  job->spec = SpecWithoutPrompts(*full);
  job->spec.MergeFrom(pins);
  job->plan = std::move(*plan);
  job->prepared = true;
  job->shards.assign(job->plan.shards.size(), Shard{});
  job->results.assign(job->plan.shards.size(), {});
  for (size_t i = 0; i < job->shards.size(); ++i) {
    job->shards[i].range = job->plan.shards[i];
    Enqueue(job, static_cast<int64_t>(i));
  }
  IndexRanges(job);
  job->first_prompt_str_tokens.assign(prepared.first_prompt_str_tokens().begin(),
                                      prepared.first_prompt_str_tokens().end());
  Emit(job, v1::JobEvent::DATASET_READY, -1, worker_id,
       absl::StrCat("worker ", Echo(worker_id), " prepared ", job->plan.n_prompts, " prompts (",
                    job->plan.n_pos, " positions) on ",
                    ModelLabel(job->spec.model_id(), job->spec.weights_sha256()), " (",
                    job->spec.n_layers(), " layers x ", job->spec.n_heads(),
                    " heads): ", job->shards.size(), " shards"));
  SaveAll();
  return true;
}

absl::StatusOr<std::optional<Scheduler::LeaseRef>> Scheduler::FindLiveLease(
    const std::string& lease_id, const std::string& worker_id) {
  std::optional<LeaseRef> ref = FindLease(lease_id);
  if (!ref && LeaseOfSummarizedJob(lease_id)) return std::optional<LeaseRef>();  // over
  if (!ref) return absl::NotFoundError(absl::StrCat("unknown lease ", Echo(lease_id)));
  LG_RETURN_IF_ERROR(CheckHolder(*ref, lease_id, worker_id));
  const Shard& shard = ShardOf(ref->job, ref->shard);
  if (Final(*ref->job) || shard.state != Shard::State::kLeased || shard.lease_id != lease_id) {
    return std::optional<LeaseRef>();
  }
  return ref;
}

absl::Status Scheduler::Fail(const std::string& worker_id, const std::string& lease_id,
                             const absl::Status& error) {
  absl::MutexLock lock(&mu_);
  if (auto w = workers_.find(worker_id); w != workers_.end()) Touch(&w->second, clock_->NowMs());
  absl::StatusOr<std::optional<LeaseRef>> live = FindLiveLease(lease_id, worker_id);
  if (!live.ok()) return live.status();
  if (!live->has_value()) return absl::OkStatus();  // stale: nothing to do
  const LeaseRef ref = **live;
  Job* job = ref.job;
  ++counters_.shards_failed;
  if (JobFailsOn(error.code())) {
    ReleaseLease(job, ref.shard);
    Finish(job, v1::JOB_FAILED,
           absl::Status(
               error.code(),
               absl::StrCat(ref.shard < 0 ? "preparing the job" : absl::StrCat("shard ", ref.shard),
                            " on worker ", Echo(worker_id), ": ", WorkerMessage(error.message()))));
    SaveAll();
    return absl::OkStatus();
  }
  Requeue(job, ref.shard,
          absl::StrCat("worker ", Echo(worker_id), ": ", absl::StatusCodeToString(error.code()),
                       ": ", WorkerMessage(error.message())));
  SaveAll();
  return absl::OkStatus();
}

absl::Status Scheduler::HandBack(const std::string& worker_id, const std::string& lease_id) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::optional<LeaseRef>> live = FindLiveLease(lease_id, worker_id);
  if (!live.ok()) return live.status();
  if (!live->has_value()) return absl::OkStatus();  // stale: nothing to do
  const LeaseRef ref = **live;
  Job* job = ref.job;
  Shard& shard = ShardOf(job, ref.shard);
  ReleaseLease(job, ref.shard);
  shard.state = Shard::State::kPending;
  Enqueue(job, ref.shard, /*front=*/true);
  DropHolder(worker_id);  // shutting down: its ranges are for others now
  ++counters_.shards_handed_back;
  ++counters_.shards_retried;
  Emit(job, v1::JobEvent::SHARD_RETRIED, ref.shard, worker_id,
       absl::StrCat("worker ", Echo(worker_id), " handed the shard back (shutting down)"));
  SaveAll();
  return absl::OkStatus();
}

void Scheduler::Finish(Job* job, v1::JobState state, absl::Status error) {
  if (state == v1::JOB_SUCCEEDED) {
    std::vector<ShardResult> parts;
    for (size_t i = 0; i < job->shards.size(); ++i)
      parts.push_back({job->shards[i].range, job->results[i]});
    auto merged = MergeShards(job->plan, parts);
    if (merged.ok()) {
      job->merged = std::move(*merged);
    } else {
      state = v1::JOB_FAILED;
      error = absl::InternalError(absl::StrCat("merge: ", merged.status().message()));
    }
  }
  for (int64_t s : std::vector<int64_t>(job->leased.begin(), job->leased.end())) {
    ReleaseLease(job, s);  // their workers hear it on the next heartbeat
  }
  job->state = state;
  job->finished_ms = clock_->NowMs();
  finished_.insert({job->finished_ms, job->id});
  if (!job->damaged) to_summarize_.insert({job->finished_ms, job->id});
  job->error_code = static_cast<int>(error.code());
  job->error = std::string(error.message());
  active_.erase(std::remove(active_.begin(), active_.end(), job), active_.end());
  job->state_unsaved = true;
  Emit(job, FinalKind(state), -1, "", job->error);
}

void Scheduler::Tick() {
  absl::MutexLock lock(&mu_);
  const int64_t now = clock_->NowMs();
  for (auto& [id, w] : workers_) {
    if (!w.info.alive() || now - w.last_seen_ms <= options_.worker_timeout_ms) continue;
    LogEvent(LogLevel::kWarning,
             absl::StrCat("worker ", id, " lost: no heartbeat for ", now - w.last_seen_ms, " ms"),
             {{"event", "WORKER_LOST"}, {"worker", id}});
    // Every job it could have served hears of it, as of its joining.
    for (Job* job : active_) {
      if (Serves(w.info, *job)) {
        Emit(job, v1::JobEvent::WORKER_LOST, -1, id,
             absl::StrCat(w.info.name(), ": no heartbeat for ", now - w.last_seen_ms, " ms"));
      }
    }
    w.info.set_alive(false);
    DropHolder(id);
    for (const std::string& lease : std::set<std::string>(w.leases)) {
      std::optional<LeaseRef> ref = FindLease(lease);
      if (!ref || Final(*ref->job)) continue;
      if (ShardOf(ref->job, ref->shard).lease_id == lease &&
          ShardOf(ref->job, ref->shard).state == Shard::State::kLeased) {
        Requeue(ref->job, ref->shard, absl::StrCat("worker ", id, " lost"));
      }
    }
  }
  for (auto it = workers_.begin(); it != workers_.end();) {
    if (!it->second.info.alive() && now - it->second.last_seen_ms > options_.forget_worker_ms) {
      it = workers_.erase(it);
    } else {
      ++it;
    }
  }
  for (Job* job : std::vector<Job*>(active_)) {
    for (int64_t s : std::vector<int64_t>(job->leased.begin(), job->leased.end())) {
      if (Final(*job)) break;
      const Shard& shard = ShardOf(job, s);
      if (shard.deadline_ms < now) {
        Requeue(job, s,
                absl::StrCat("lease ", shard.lease_id, " on worker ", shard.worker_id, " expired"));
      }
    }
    if (!Final(*job)) {
      if (PromoteDue(job, now)) ++version_;
    }
  }
  CheckServed(now);
  SaveAll();
  SweepFinished(now);
  Summarize(now);
}

void Scheduler::SweepFinished(int64_t now) {
  if (options_.retain_finished_ms <= 0 || now < next_sweep_ms_) return;
  next_sweep_ms_ = now + 1000;
  std::vector<std::string> expired;
  for (const auto& [finished_ms, id] : finished_) {
    if (finished_ms > now - options_.retain_finished_ms) break;
    expired.push_back(id);
  }
  for (const std::string& id : expired) {
    auto it = jobs_.find(id);
    if (it == jobs_.end()) continue;
    // The store first gets what it lacks.
    if (journal_ != nullptr && Unsaved(*it->second)) continue;
    if (journal_ != nullptr) {
      JobWrite write;
      write.job_id = id;
      write.delete_job = true;
      if (absl::Status s = journal_->Write(write); !s.ok()) {
        Log(absl::Status(s.code(), absl::StrCat("job ", id, " not deleted (retention, retried): ",
                                                s.message())));
        return;
      }
    }
    RemoveJob(id);
  }
}

void Scheduler::RemoveJob(const std::string& job_id) {
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return;
  Job* job = it->second.get();
  if (!job->request_id.empty()) requests_.erase({job->owner, job->request_id});
  finished_.erase({job->finished_ms, job_id});
  to_summarize_.erase({job->finished_ms, job_id});
  unsaved_.erase(job);
  active_.erase(std::remove(active_.begin(), active_.end(), job), active_.end());
  jobs_.erase(it);
  ++version_;
}

absl::Status Scheduler::Delete(const Caller& caller, const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  LG_ASSIGN_OR_RETURN(Job * job, FindOwned(caller, job_id));
  if (!Final(*job)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job ", job_id, " is ", v1::JobState_Name(job->state),
        ": only a finished job is deleted; cancel it first (lensgrid cancel), then delete it"));
  }
  if (journal_ != nullptr) {
    JobWrite write;
    write.job_id = job_id;
    write.delete_job = true;
    if (absl::Status s = journal_->Write(write); !s.ok()) {
      return absl::UnavailableError(
          absl::StrCat("cannot delete job ", job_id, " from the state store: ", s.message()));
    }
  }
  RemoveJob(job_id);
  return absl::OkStatus();
}

absl::StatusOr<Scheduler::Job*> Scheduler::FindOwned(const Caller& caller,
                                                     const std::string& job_id) const {
  auto it = jobs_.find(job_id);
  if (it == jobs_.end() || !caller.Owns(it->second->owner)) {
    return absl::NotFoundError(absl::StrCat("no job ", Echo(job_id)));
  }
  return it->second.get();
}

absl::StatusOr<v1::JobStatus> Scheduler::Cancel(const Caller& caller, const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  LG_ASSIGN_OR_RETURN(Job * job, FindOwned(caller, job_id));
  if (!Final(*job)) {
    Finish(job, v1::JOB_CANCELLED, absl::CancelledError("cancelled"));
    SaveAll();
  }
  return StatusOf(*job);
}

v1::JobStatus Scheduler::StatusOf(const Job& job) const {
  if (job.summary) return *job.summary;
  v1::JobStatus s;
  s.set_job_id(job.id);
  s.set_owner(job.owner);
  s.set_request_id(job.request_id);
  s.set_state(job.state);
  s.set_shards_done(job.done);
  s.set_shards_total(static_cast<int64_t>(job.shards.size()));
  s.set_error(job.error);
  s.set_error_code(job.error_code);
  // A damaged or unprepared job has no plan: the name it was submitted with.
  s.set_method(job.plan.grids.empty() ? MethodLabel(job.spec) : MethodName(job.plan.method));
  s.set_model_id(job.spec.model_id());
  s.set_label(job.spec.label());
  s.set_client_json(job.spec.client_json());
  s.set_created_unix_ms(job.created_ms);
  s.set_finished_unix_ms(job.finished_ms);
  const double rate = Rate(job);
  s.set_shards_per_s(rate);
  if (rate > 0) s.set_eta_s(static_cast<double>(s.shards_total() - s.shards_done()) / rate);
  s.set_last_event_seq(static_cast<int64_t>(job.events.size()));
  s.set_store_error(job.store_error);
  *s.mutable_spec() = job.spec;
  s.mutable_spec()->mutable_dataset()->clear_jsonl();
  if (!job.spec.has_dataset()) s.mutable_spec()->clear_dataset();
  s.mutable_spec()->clear_client_json();  // already in client_json
  s.set_prepared(job.prepared && !job.damaged);
  if (s.prepared()) {
    s.set_n_prompts(job.plan.n_prompts);
    s.set_n_pos(job.plan.n_pos);
    if (job.plan.prompts != nullptr && !job.plan.prompts->empty()) {
      *s.mutable_first_prompt() = job.plan.prompts->Get(0);
    }
    for (const std::string& t : job.first_prompt_str_tokens) s.add_first_prompt_str_tokens(t);
  }
  return s;
}

absl::StatusOr<v1::JobStatus> Scheduler::GetJob(const Caller& caller,
                                                const std::string& job_id) const {
  v1::JobStatus summary;
  {
    absl::ReaderMutexLock lock(&mu_);
    LG_ASSIGN_OR_RETURN(const Job* job, FindOwned(caller, job_id));
    if (!job->summary) return StatusOf(*job);
    summary = *job->summary;
  }
  // A finished job kept as its summary: what it was comes from its stored
  // spec.
  absl::StatusOr<std::unique_ptr<Job>> full = Rebuild(summary, kJobSpec);
  if (full.status().code() == absl::StatusCode::kNotFound) return full.status();
  if (!full.ok()) {
    if (full.status().code() == absl::StatusCode::kDataLoss) {
      summary.set_state(v1::JOB_FAILED);
      summary.set_error_code(static_cast<int>(absl::StatusCode::kDataLoss));
      summary.set_error(absl::StrCat("the stored job is damaged: ", full.status().message()));
    }
    return summary;  // what is known of it
  }
  absl::ReaderMutexLock lock(&mu_);
  return RebuiltStatus(**full, summary);
}

namespace {

// One page of the `items` that `keep` (a map by id) after `page.page_token`,
// within a count and a byte budget; at least one item when any is left. The
// token is the last id sent: ids are never reused, so items added or removed
// between pages do not shift the others (each is listed once).
template <typename Map, typename Keep, typename ToProto>
auto Paginate(const Map& items, const PageRequest& page, const SchedulerOptions& o, Keep keep,
              ToProto to_proto, std::string* next_page_token)
    -> absl::StatusOr<std::vector<decltype(to_proto(items.begin()->second))>> {
  using Item = decltype(to_proto(items.begin()->second));
  if (page.page_size < 0) return absl::InvalidArgumentError("page_size must not be negative");
  if (page.page_token.size() > 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_token ", Echo(page.page_token), " is not one this coordinator gave"));
  }
  const size_t size = static_cast<size_t>(
      page.page_size == 0 ? o.page_size : std::min(page.page_size, o.max_page_size));
  std::vector<Item> out;
  int64_t bytes = 0;
  auto it = page.page_token.empty() ? items.begin() : items.upper_bound(page.page_token);
  std::string last;
  for (; it != items.end(); ++it) {
    if (!keep(it->second)) continue;
    if (out.size() >= std::max<size_t>(1, size)) break;
    Item item = to_proto(it->second);
    bytes += static_cast<int64_t>(item.ByteSizeLong()) + 8;
    if (!out.empty() && bytes > o.max_page_bytes) break;
    last = it->first;
    out.push_back(std::move(item));
  }
  next_page_token->clear();
  if (it != items.end()) *next_page_token = last;
  return out;
}

}  // namespace

absl::StatusOr<std::vector<v1::JobStatus>> Scheduler::ListJobs(const Caller& caller,
                                                               const PageRequest& page,
                                                               std::string* next_page_token,
                                                               const JobFilter& filter) const {
  if (!v1::JobState_IsValid(filter.state)) {
    return absl::InvalidArgumentError(
        absl::StrCat("state ", static_cast<int>(filter.state), " is not a JobState"));
  }
  absl::ReaderMutexLock lock(&mu_);
  return Paginate(
      jobs_, page, options_,
      [&caller, &filter](const std::unique_ptr<Job>& job) {
        return caller.Owns(job->owner) &&
               (filter.state == v1::JOB_STATE_UNSPECIFIED || job->state == filter.state) &&
               (filter.owner.empty() || job->owner == filter.owner);
      },
      [this](const std::unique_ptr<Job>& job)
          ABSL_NO_THREAD_SAFETY_ANALYSIS { return StatusOf(*job); },
      next_page_token);
}

absl::StatusOr<std::vector<v1::WorkerInfo>> Scheduler::ListWorkers(
    const PageRequest& page, std::string* next_page_token, const WorkerFilter& filter) const {
  absl::ReaderMutexLock lock(&mu_);
  return Paginate(
      workers_, page, options_,
      [&filter](const Worker& w) {
        return (!filter.alive_only || w.info.alive()) &&
               (filter.model_id.empty() || w.info.model_id() == filter.model_id);
      },
      [](const Worker& w) { return w.info; }, next_page_token);
}

absl::StatusOr<std::vector<v1::JobEvent>> Scheduler::EventsAfter(const Caller& caller,
                                                                 const std::string& job_id,
                                                                 int64_t after_seq,
                                                                 bool* final) const {
  if (after_seq < 0) return absl::InvalidArgumentError("after_seq must not be negative");
  {
    absl::ReaderMutexLock lock(&mu_);
    LG_ASSIGN_OR_RETURN(const Job* found, FindOwned(caller, job_id));
    if (!found->summary) return EventsOf(*found, after_seq, final);
  }
  // A finished job kept as its summary: its events are in the store.
  absl::StatusOr<StoredJob> stored =
      journal_ != nullptr && journal_->CanRead()
          ? journal_->Read(job_id, kJobEvents)
          : absl::StatusOr<StoredJob>(absl::UnavailableError("no store is open"));
  if (!stored.ok()) {
    if (stored.status().code() == absl::StatusCode::kNotFound) {
      return absl::NotFoundError(absl::StrCat("no job ", Echo(job_id)));
    }
    return absl::UnavailableError(
        absl::StrCat("cannot read the events of job ", job_id,
                     " from the state store: ", stored.status().message()));
  }
  std::vector<v1::JobEvent> out;
  for (v1::JobEvent& e : stored->events) {
    if (e.seq() > after_seq) out.push_back(std::move(e));
  }
  *final = true;
  return out;
}

std::vector<v1::JobEvent> Scheduler::EventsOf(const Job& job, int64_t after_seq,
                                              bool* final) const {
  std::vector<v1::JobEvent> out;
  for (size_t i = static_cast<size_t>(std::min<int64_t>(after_seq, job.events.size()));
       i < job.events.size(); ++i) {
    out.push_back(job.events[i]);
  }
  *final = Final(job);
  return out;
}

absl::StatusOr<Scheduler::Result> Scheduler::GetResult(const Caller& caller,
                                                       const std::string& job_id) const {
  v1::JobStatus summary;
  {
    absl::ReaderMutexLock lock(&mu_);
    LG_ASSIGN_OR_RETURN(const Job* found, FindOwned(caller, job_id));
    const Job& job = *found;
    if (job.damaged) {
      return absl::DataLossError(absl::StrCat("job ", job_id, ": ", job.error));
    }
    const v1::JobState state = job.summary ? job.summary->state() : job.state;
    const std::string& error = job.summary ? job.summary->error() : job.error;
    if (job.summary && job.summary->error_code() == static_cast<int>(absl::StatusCode::kDataLoss)) {
      return absl::DataLossError(absl::StrCat("job ", job_id, ": ", error));
    }
    if (state != v1::JOB_SUCCEEDED) {
      return absl::FailedPreconditionError(absl::StrCat(
          "job ", job_id, " is ", v1::JobState_Name(state), error.empty() ? "" : ": ", error));
    }
    if (!job.summary) return Result{StatusOf(job), job.plan.grids, job.merged};
    summary = *job.summary;
  }
  // A finished job kept as its summary: its result is read and merged again.
  absl::StatusOr<std::unique_ptr<Job>> full = Rebuild(summary, kJobSpec | kJobResults);
  if (!full.ok() && full.status().code() == absl::StatusCode::kDataLoss) {
    // Never serve a result that is not the one computed; say so from now on.
    const std::string why = absl::StrCat("the stored job is damaged: ", full.status().message());
    absl::MutexLock lock(&mu_);
    if (auto it = jobs_.find(job_id); it != jobs_.end() && it->second->summary) {
      Job* job = it->second.get();
      job->state = v1::JOB_FAILED;  // listed (and filtered) as what it now is
      job->error_code = static_cast<int>(absl::StatusCode::kDataLoss);
      job->error = why;
      job->summary->set_state(job->state);
      job->summary->set_error_code(job->error_code);
      job->summary->set_error(why);
    }
    LogEvent(LogLevel::kError, absl::StrCat("state store: job ", job_id, ": ", why),
             {{"event", "DATA_LOSS"}, {"job", job_id}});
    return absl::DataLossError(absl::StrCat("job ", job_id, ": ", why));
  }
  if (!full.ok()) return full.status();
  absl::ReaderMutexLock lock(&mu_);
  return Result{RebuiltStatus(**full, summary), (*full)->plan.grids, std::move((*full)->merged)};
}

absl::StatusOr<std::unique_ptr<Scheduler::Job>> Scheduler::Rebuild(const v1::JobStatus& summary,
                                                                   int parts) const {
  if (journal_ == nullptr || !journal_->CanRead()) {
    return absl::UnavailableError(
        absl::StrCat("job ", summary.job_id(), " is kept as a summary and no store is open"));
  }
  absl::StatusOr<StoredJob> read = journal_->Read(summary.job_id(), parts);
  if (!read.ok()) {
    if (read.status().code() == absl::StatusCode::kNotFound) {
      return absl::NotFoundError(absl::StrCat("no job ", Echo(summary.job_id())));
    }
    return absl::UnavailableError(absl::StrCat("cannot read job ", summary.job_id(),
                                               " from the state store: ", read.status().message()));
  }
  StoredJob& stored = *read;
  if (!stored.damage.empty()) return absl::DataLossError(stored.damage);
  std::unique_ptr<Job> job;
  if (NeedsPreparing(stored.spec)) {  // it ended before a worker prepared it
    absl::StatusOr<std::unique_ptr<Job>> unprepared =
        BuildJobToPrepare(stored.job_id, stored.spec, stored.created_ms);
    if (!unprepared.ok()) {
      return absl::DataLossError(
          absl::StrCat("its spec cannot be prepared: ", unprepared.status().message()));
    }
    job = std::move(*unprepared);
    job->ready.clear();
  } else {
    absl::StatusOr<JobPlan> plan = PlanJob(stored.spec, options_.planner);
    if (!plan.ok()) {
      return absl::DataLossError(
          absl::StrCat("its spec cannot be planned: ", plan.status().message()));
    }
    job = BuildJob(stored.job_id, stored.spec, std::move(*plan), stored.created_ms);
  }
  CopyIdentity(stored, job.get());
  job->state = summary.state();
  job->error_code = summary.error_code();
  job->error = summary.error();
  job->finished_ms = summary.finished_unix_ms();
  job->done = summary.shards_done();
  job->events = std::move(stored.events);
  if (parts & kJobResults) {
    for (int64_t shard : stored.damaged_shards) {
      return absl::DataLossError(
          absl::StrCat("the stored result of shard ", shard, " is corrupt (checksum mismatch)"));
    }
    std::vector<ShardResult> parts_in;
    for (size_t i = 0; i < job->shards.size(); ++i) {
      auto r = stored.results.find(static_cast<int64_t>(i));
      if (r == stored.results.end() ||
          !CheckShardResult(job->plan, job->shards[i].range, r->second).ok()) {
        return absl::DataLossError(absl::StrCat("the stored result of shard ", i,
                                                " is missing or does not fit the job's plan"));
      }
      job->results[i] = std::move(r->second);
      parts_in.push_back({job->shards[i].range, job->results[i]});
    }
    absl::StatusOr<std::vector<Array>> merged = MergeShards(job->plan, parts_in);
    if (!merged.ok()) {
      return absl::DataLossError(
          absl::StrCat("its stored results do not merge: ", merged.status().message()));
    }
    job->merged = std::move(*merged);
    job->results.clear();
  }
  return job;
}

v1::JobStatus Scheduler::RebuiltStatus(const Job& job, const v1::JobStatus& summary) const {
  v1::JobStatus s = StatusOf(job);
  s.set_shards_done(summary.shards_done());
  s.set_last_event_seq(summary.last_event_seq());
  s.set_created_unix_ms(summary.created_unix_ms());
  s.clear_shards_per_s();
  s.clear_eta_s();
  return s;
}

bool Scheduler::LeaseOfSummarizedJob(const std::string& lease_id) const {
  auto it = jobs_.find(lease_id.substr(0, lease_id.find('/')));
  return it != jobs_.end() && it->second->summary.has_value();
}

v1::JobStatus Scheduler::SummaryOf(const Job& job) const {
  v1::JobStatus s = StatusOf(job);
  s.clear_spec();
  s.clear_client_json();
  s.clear_first_prompt();
  s.clear_first_prompt_str_tokens();
  s.clear_shards_per_s();
  s.clear_eta_s();
  return s;
}

void Scheduler::Summarize(int64_t now) {
  if (journal_ == nullptr || !journal_->CanRead()) return;
  // Jobs of a store from before summaries get theirs written here: a few per
  // tick, so that an upgraded coordinator is not held up by thousands at once.
  int writes = 0;
  for (auto it = to_summarize_.begin();
       it != to_summarize_.end() && it->first <= now - options_.summarize_after_ms;) {
    auto found = jobs_.find(it->second);
    if (found == jobs_.end() || !Final(*found->second) || found->second->damaged) {
      it = to_summarize_.erase(it);
      continue;
    }
    Job* job = found->second.get();
    if (Unsaved(*job)) {  // the store first gets what it lacks
      ++it;
      continue;
    }
    v1::JobStatus summary = SummaryOf(*job);
    if (!job->summary_stored) {  // restored whole from a store without it
      if (++writes > 64) break;
      const std::string bytes = summary.SerializeAsString();
      JobWrite write;
      write.job_id = job->id;
      write.summary = &bytes;
      if (!journal_->Write(write).ok()) {
        ++it;
        continue;
      }
    }
    Job kept;
    kept.id = job->id;
    kept.owner = job->owner;
    kept.request_id = job->request_id;
    kept.request_sha256 = job->request_sha256;
    kept.state = job->state;
    kept.error_code = job->error_code;
    kept.error = job->error;
    kept.created_ms = job->created_ms;
    kept.finished_ms = job->finished_ms;
    kept.summary = std::move(summary);
    kept.summary_stored = true;
    *job = std::move(kept);
    it = to_summarize_.erase(it);
  }
}

uint64_t Scheduler::version() const {
  absl::ReaderMutexLock lock(&mu_);
  return version_;
}

void Scheduler::WaitForChange(uint64_t* version, int64_t timeout_ms) const {
  absl::ReaderMutexLock lock(&mu_);
  const uint64_t seen = *version;
  auto changed = [this, seen]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return version_ != seen; };
  mu_.AwaitWithTimeout(absl::Condition(&changed), absl::Milliseconds(timeout_ms));
  *version = version_;
}

SchedulerCounters Scheduler::Counters() const {
  absl::ReaderMutexLock lock(&mu_);
  SchedulerCounters c = counters_;
  for (v1::JobState state :
       {v1::JOB_QUEUED, v1::JOB_RUNNING, v1::JOB_SUCCEEDED, v1::JOB_FAILED, v1::JOB_CANCELLED}) {
    c.jobs[state] = 0;
  }
  for (const auto& [id, job] : jobs_) ++c.jobs[job->state];
  for (const auto& [id, w] : workers_) c.workers_alive += w.info.alive() ? 1 : 0;
  // (A job waiting to be prepared has its preparation, shard -1, queued.)
  // (`ready` may hold stale entries: count the shards themselves.)
  for (const Job* job : active_) {
    if (!job->prepared) {
      c.pending_shards += job->prepare.state == Shard::State::kPending ? 1 : 0;
    } else {
      c.pending_shards += static_cast<int64_t>(job->shards.size()) - job->done -
                          static_cast<int64_t>(job->leased.size());
    }
  }
  return c;
}

}  // namespace lensgrid::service
