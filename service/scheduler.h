// The scheduler: jobs, their shards and leases, and the workers that pull them.
// All decisions, no I/O: time comes from a Clock, persistence goes to a
// Journal, and the gRPC adapter calls it. Thread-safe.
//
//   FakeClock clock;
//   Scheduler s(&clock, SchedulerOptions{}, /*journal=*/nullptr);
//   std::string job = s.Submit(Caller::Anonymous(), spec).value();
//   std::string w = s.RegisterWorker(register_request);
//   std::optional<v1::ShardLease> lease = s.Lease(w).value();
//   s.Complete(w, lease->lease_id(), tensors);         // first completion wins
//   s.Tick();                                          // expire leases, lose
//   workers
//
// Rules: only workers whose model id (and weights sha256, once the job has
// one) equal a job's get its shards. A job without its prompts, the model's
// shape or a weights pin (NeedsPreparing) is first prepared: a worker serving
// its model that reported its shape builds the dataset (lease of shard -1,
// CompletePrepare), the job is pinned to that worker's weights and planned. A
// job that no live worker serves says so (WAITING_FOR_WORKER) and fails with
// FAILED_PRECONDITION after model_wait_ms. A lease lasts lease_ms (a multiple of the job's observed
// shard time, at least min_lease_ms), extended by heartbeats; an expired lease, a retriable failure
// or a malformed result re-queues the shard after a backoff, preferring another worker, until
// max_attempts failures fail the job; INVALID_ARGUMENT / FAILED_PRECONDITION from a worker fail the
// job with its message.
//
// Prompt-range affinity (prompt_affinity): the component shards of one prompt
// range share its base run (the clean and corrupted forwards), which a worker
// keeps after running one of them (lensgrid-worker --shard-cache-bytes). A
// worker asking for work gets, in a job's order: a ready shard of a range it
// already leased a shard of; else one of a range no live worker holds (never
// leased, or whose holders were all lost); else the oldest ready shard, as
// without affinity (so no worker waits while a shard is ready, and a lost
// worker's ranges go to others). Which worker runs a shard never changes its
// result.
//
// Limits: a job is planned (PlannerOptions' limits) before the scheduler's
// lock is taken, so a large or hostile spec never stalls other calls; workers,
// listings and echoed messages are bounded by SchedulerOptions.
//
// Storage: each state change of a job is one Journal::Write. When it fails
// (disk full), the change stays in memory and the job is paused: its status
// says why (JobStatus.store_error, a STORE_FAILED event), it gets no new
// leases, results of shards already leased are held in memory rather than
// recomputed, and nothing counts as a shard failure. Tick() writes again every
// store_retry_ms; once a write succeeds the job resumes (STORE_RECOVERED).
//
// Jobs as resources: a job belongs to the caller that submitted it (others
// get NOT_FOUND, admins see all); a request_id makes Submit idempotent per
// owner; a finished job can be deleted, and is after retain_finished_ms.
// Memory follows the running jobs: with a journal that reads jobs back, a
// finished job is kept whole for summarize_after_ms, then as its summary; its
// spec, events and result are read from the journal when asked for.
#ifndef LENSGRID_SERVICE_SCHEDULER_H_
#define LENSGRID_SERVICE_SCHEDULER_H_

#include <algorithm>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/caller.h"
#include "lensgrid/v1/coordinator.pb.h"
#include "service/clock.h"
#include "service/journal.h"
#include "service/merger.h"
#include "service/planner.h"

namespace lensgrid::service {

struct SchedulerOptions {
  int64_t initial_lease_ms = 30000;   // before any shard time was observed. Default: 30 s
  int64_t min_lease_ms = 5000;        // Default: 5 s
  double lease_multiple = 4;          // lease = multiple x observed shard time. Default: 4
  int64_t backoff_base_ms = 100;      // doubles per failure of a shard. Default: 100 ms
  int64_t backoff_max_ms = 5000;      // Default: 5 s
  int64_t worker_timeout_ms = 15000;  // silent this long -> lost, leases re-queued. Default: 15 s
  int max_attempts = 4;               // failures of one shard before the job fails. Default: 4
  // With a journal that reads jobs back (the StateStore), a finished job is
  // kept whole in memory this long (its client fetches the result at once),
  // then only as its summary: spec, events and result are read from the
  // store when asked for. Default: 10 s
  int64_t summarize_after_ms = 10000;
  // Finished jobs are deleted (with their results) this long after they
  // finished; 0 = kept for ever. Default: 7 days
  int64_t retain_finished_ms = int64_t{7} * 24 * 3600 * 1000;
  // How often workers report their leases (and learn of cancellations).
  // Capped at min_lease_ms / 3. Default: 200 ms
  int64_t heartbeat_interval_ms = 200;
  // A job paused by a failing state store writes again this often.
  // Default: 1 s
  int64_t store_retry_ms = 1000;
  // Lost workers are forgotten (gone from ListWorkers) this long after they
  // were last seen. Default: 10 min
  int64_t forget_worker_ms = 600000;
  // Registered workers, alive or lost; Register beyond it is
  // RESOURCE_EXHAUSTED. Default: 10000
  int64_t max_workers = 10000;
  // RegisterRequest's name, model_id, weights_sha256, device, address.
  // Default: 256 bytes
  int64_t max_worker_field_bytes = 256;
  // ListJobs / ListWorkers: items per page when the request says 0, the most
  // a request may ask for, and the most bytes of items in one page (a client
  // receives 4 MiB by default). Defaults: 100, 1000, 3 MiB
  int page_size = 100;
  int max_page_size = 1000;
  int64_t max_page_bytes = int64_t{3} << 20;
  // A worker's failure message, as kept in job errors and events.
  // Default: 1 KiB
  int64_t max_worker_message_bytes = 1024;
  // A job that no live worker serves (its model id, its pinned weights) fails
  // with FAILED_PRECONDITION after waiting this long; 0 = waits for ever.
  // Default: 10 min
  int64_t model_wait_ms = 600000;
  // Shards of a prompt range go preferably to the worker that ran one of
  // them (see above). Default: true
  bool prompt_affinity = true;
  PlannerOptions planner;
};

// A page of a listing (AIP-158): page_size 0 = the default; page_token is the
// previous page's next_page_token, empty for the first page.
struct PageRequest {
  int page_size = 0;
  std::string page_token;
};

// ListJobs' filters (unset = any).
struct JobFilter {
  v1::JobState state = v1::JOB_STATE_UNSPECIFIED;
  std::string owner;
};
struct WorkerFilter {
  bool alive_only = false;
  std::string model_id;  // empty: any
};

// Totals since this process started, for /metrics (deploy/README.md).
struct SchedulerCounters {
  int64_t shards_leased = 0, shards_completed = 0, shards_failed = 0, shards_handed_back = 0,
          shards_retried = 0;
  std::map<v1::JobState, int64_t> jobs;  // now, by state
  int64_t workers_alive = 0;
  // Now: shards of queued and running jobs waiting for a worker (ready or
  // backing off), and jobs waiting to be prepared (1 each). What to scale
  // workers on.
  int64_t pending_shards = 0;
};

class Scheduler {
 public:
  Scheduler(const Clock* clock, SchedulerOptions options, Journal* journal);

  // Client side. Every job has an owner (the submitting caller's name); the
  // calls that name a job act only on jobs the caller Owns() (admins: every
  // job): another's job is NOT_FOUND with the same message as a job that does
  // not exist.
  //
  // Submit: NOT_FOUND when workers are registered and none serves the spec's
  // model id (the message names the ids they serve). A non-empty request_id
  // (<= 128 printable ASCII bytes, else INVALID_ARGUMENT) makes it idempotent:
  // the caller's earlier job with that request_id and the same spec is
  // returned instead of a new one; with another spec it is ALREADY_EXISTS.
  absl::StatusOr<std::string> Submit(const Caller& caller, const v1::JobSpec& spec,
                                     const std::string& request_id = "");
  static constexpr size_t kMaxRequestIdBytes = 128;
  // Brings back a stored job (at startup, before serving).
  absl::Status Restore(StoredJob stored);
  absl::StatusOr<v1::JobStatus> GetJob(const Caller& caller, const std::string& job_id) const;
  absl::StatusOr<v1::JobStatus> Cancel(const Caller& caller, const std::string& job_id);
  // By job id; *next_page_token is empty after the last page. INVALID_ARGUMENT
  // for a negative page_size or a malformed page_token.
  // Only the caller's own jobs for a submitter. Jobs that exist from the
  // first page to the last are each listed exactly once.
  absl::StatusOr<std::vector<v1::JobStatus>> ListJobs(const Caller& caller, const PageRequest& page,
                                                      std::string* next_page_token,
                                                      const JobFilter& filter = {}) const;
  // Deletes a finished job from memory and the store. FAILED_PRECONDITION
  // for a queued or running one (cancel it first); UNAVAILABLE when the
  // store cannot delete it (nothing changes).
  absl::Status Delete(const Caller& caller, const std::string& job_id);
  absl::StatusOr<std::vector<v1::WorkerInfo>> ListWorkers(const PageRequest& page,
                                                          std::string* next_page_token,
                                                          const WorkerFilter& filter = {}) const;
  // Events with seq > after_seq; *final = the job will have no more.
  absl::StatusOr<std::vector<v1::JobEvent>> EventsAfter(const Caller& caller,
                                                        const std::string& job_id,
                                                        int64_t after_seq, bool* final) const;
  struct Result {
    v1::JobStatus job;
    std::vector<Grid> grids;
    std::vector<Array> tensors;
  };
  // FAILED_PRECONDITION unless the job succeeded; DATA_LOSS for a job whose
  // stored result was damaged.
  absl::StatusOr<Result> GetResult(const Caller& caller, const std::string& job_id) const;

  // Worker side. NOT_FOUND for an unknown worker id: register again.
  // INVALID_ARGUMENT for over-long fields, RESOURCE_EXHAUSTED when
  // max_workers are registered.
  absl::StatusOr<std::string> RegisterWorker(const v1::RegisterRequest& request);
  absl::StatusOr<std::optional<v1::ShardLease>> Lease(const std::string& worker_id);
  // Returns the leases to abandon (also those issued to another worker id:
  // they are not extended). *lease_ms (optional): the shortest extension
  // granted to the leases still held (0 when none is).
  absl::StatusOr<std::vector<std::string>> Heartbeat(const std::string& worker_id,
                                                     const std::vector<std::string>& lease_ids,
                                                     int64_t* lease_ms = nullptr);
  // true: accepted; false: a late duplicate or the job is over (dropped).
  // INVALID_ARGUMENT for a malformed result (the shard is re-queued).
  // *note (optional) says when an accepted result is held in memory because
  // the state store is failing.
  absl::StatusOr<bool> Complete(const std::string& worker_id, const std::string& lease_id,
                                std::vector<Array> tensors, std::string* note = nullptr);
  // The answer to a prepare lease (shard -1): plans the job with the
  // prepared prompts and model. true: accepted; false: stale (dropped).
  // INVALID_ARGUMENT for a lease that is not a prepare lease. A dataset the
  // planner refuses (too many prompts, a prompt too long) fails the job.
  absl::StatusOr<bool> CompletePrepare(const std::string& worker_id, const std::string& lease_id,
                                       const v1::PreparedDataset& prepared);
  absl::Status Fail(const std::string& worker_id, const std::string& lease_id,
                    const absl::Status& error);
  // Expires leases, promotes backed-off shards, marks silent workers lost,
  // forgets long-lost ones, writes what a failing store could not.
  void Tick();

  // A worker that shuts down gives its lease back: the shard is re-queued at
  // once, without counting a failure.
  absl::Status HandBack(const std::string& worker_id, const std::string& lease_id);

  SchedulerCounters Counters() const;

  int64_t heartbeat_interval_ms() const {
    return std::max<int64_t>(1,
                             std::min(options_.heartbeat_interval_ms, options_.min_lease_ms / 3));
  }
  // Blocks until something changed since `*version` (or timeout); updates it.
  // For long polls: new shards, new events, finished jobs.
  void WaitForChange(uint64_t* version, int64_t timeout_ms) const;
  uint64_t version() const;

 private:
  struct Shard {
    ShardRange range;
    enum class State { kPending, kLeased, kDone } state = State::kPending;
    int leases = 0, failures = 0;
    int64_t ready_at_ms = 0;
    std::string lease_id, worker_id;  // the current (or last) lease and its worker
    // Every lease id issued for this shard -> the worker it was issued to: a
    // late completion of an earlier attempt is accepted from its own worker
    // only; ids never issued are unknown.
    std::map<std::string, std::string> issued;
    int64_t lease_start_ms = 0, deadline_ms = 0;
    std::set<std::string> failed_on;
    int queued = 0;  // entries of this shard in its job's `ready` (some may be stale)
  };
  // The shards of one prompt range, for affinity.
  struct PromptRange {
    std::vector<int64_t> shards;       // in plan order
    size_t done_prefix = 0;            // shards[0, done_prefix) are done
    std::vector<std::string> holders;  // live workers that leased one of them
  };
  struct Job {
    std::string id;
    std::string owner;                       // the submitting caller's name
    std::string request_id, request_sha256;  // SubmitJobRequest.request_id, its spec's hash
    v1::JobSpec spec;
    JobPlan plan;
    v1::JobState state = v1::JOB_QUEUED;
    int error_code = 0;
    std::string error;
    int64_t created_ms = 0, first_lease_ms = 0;
    int64_t finished_ms = 0;  // once final
    // Set: a finished job kept as its summary only (what ListJobs shows);
    // the rest is in the store. A damaged stored job found on reading marks
    // it FAILED with DATA_LOSS here.
    std::optional<v1::JobStatus> summary;
    bool summary_stored = false;  // the store has this finished job's summary
    int max_attempts = 4;
    std::vector<Shard> shards;
    // Pending shards, in order. An entry whose shard is no longer pending
    // (leased by affinity from the middle) is stale and skipped when reached.
    std::deque<int64_t> ready;
    std::vector<int64_t> delayed;  // pending shards waiting out a backoff
    std::set<int64_t> leased;
    std::vector<std::vector<Array>> results;
    int64_t done = 0, done_here = 0;  // done_here: since this process started
    double shard_ms = 0;              // moving average of completed attempts
    std::vector<v1::JobEvent> events;
    std::vector<Array> merged;
    // Persistence: what the store has not got yet.
    int64_t saved_events = 0;
    std::vector<int64_t> unsaved_results;
    bool state_unsaved = false;
    std::string store_error;  // non-empty: paused, the last write failed
    int64_t store_retry_ms = 0;
    bool damaged = false;  // restored from a damaged row: reported, not run
    // Preparation: false until a worker built the dataset (the lease of shard
    // -1); the plan then has no shards, and plan.prompts the inline prompts.
    bool prepared = true;
    Shard prepare;
    std::string unsaved_spec;  // the prepared spec, until the store has it
    std::vector<std::string> first_prompt_str_tokens;
    int64_t waiting_since_ms = 0;  // no live worker serves the job since; 0: served
    // Affinity (prompt_affinity; empty when no prompt range has two shards).
    std::vector<PromptRange> ranges;                   // in order of first shard
    std::vector<int32_t> range_of;                     // shard -> its range
    std::map<std::string, std::vector<int32_t>> held;  // live worker -> ranges it holds
    size_t next_fresh = 0;                             // ranges before it have had holders
    std::deque<int32_t> orphaned;                      // ranges whose holders were all lost
  };
  struct Worker {
    v1::WorkerInfo info;
    int64_t last_seen_ms = 0;
    std::set<std::string> leases;
  };
  struct LeaseRef {
    Job* job;
    int64_t shard;
  };

  bool Final(const Job& job) const { return job.state >= v1::JOB_SUCCEEDED; }
  // Shard s of the job; -1 is the preparation.
  static Shard& ShardOf(Job* job, int64_t s) { return s < 0 ? job->prepare : job->shards[s]; }
  // Whether the worker may run the job's shards (its preparation when the job
  // is not prepared: then it must also have reported its model's shape).
  static bool Serves(const v1::WorkerInfo& w, const Job& job);
  // "gpt2 (2 workers), lensgrid-tiny (1 worker)": what the live workers serve.
  std::string ServedModels() const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // WAITING_FOR_WORKER when no live worker serves a job; fails those that
  // waited longer than model_wait_ms.
  void CheckServed(int64_t now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int64_t LeaseMs(const Job& job) const;
  void Touch(Worker* w, int64_t now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<Worker*> FindWorker(const std::string& worker_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The shard a lease id was issued for; nullopt for an id never issued.
  std::optional<LeaseRef> FindLease(const std::string& lease_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // PERMISSION_DENIED unless `lease_id` was issued to `worker_id`.
  absl::Status CheckHolder(const LeaseRef& ref, const std::string& lease_id,
                           const std::string& worker_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // NOT_FOUND for an unknown lease, PERMISSION_DENIED for one issued to
  // another worker; nullopt when it is no longer the shard's current lease
  // (stale) or its job is over.
  absl::StatusOr<std::optional<LeaseRef>> FindLiveLease(const std::string& lease_id,
                                                        const std::string& worker_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The job `caller` may see; NOT_FOUND (the same for a job that does not
  // exist and one of another owner) otherwise.
  absl::StatusOr<Job*> FindOwned(const Caller& caller, const std::string& job_id) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Moves backed-off shards that are due to `ready`; true when any became due.
  bool PromoteDue(Job* job, int64_t now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static void Enqueue(Job* job, int64_t s, bool front = false);
  std::optional<int64_t> TakeShard(Job* job, const std::string& worker_id, int64_t now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Affinity: the job's prompt ranges (when one has two shards or more).
  void IndexRanges(Job* job) const;
  // A shard of a range this worker holds, else of a range no live worker
  // holds; nullopt: take the oldest ready one.
  std::optional<int64_t> TakeByAffinity(Job* job, const std::string& worker_id, int64_t now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A ready shard of range r that has not failed on the worker.
  static std::optional<int64_t> ReadyIn(Job* job, int32_t r, const std::string& worker_id,
                                        int64_t now);
  // The worker holds the range of shard s (it leased it).
  static void Hold(Job* job, int64_t s, const std::string& worker_id);
  // The worker holds no range any more (lost, or shutting down).
  void DropHolder(const std::string& worker_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReleaseLease(Job* job, int64_t shard) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Requeue(Job* job, int64_t shard, const std::string& reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Finish(Job* job, v1::JobState state, absl::Status error) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Emit(Job* job, v1::JobEvent::Kind kind, int64_t shard, const std::string& worker,
            const std::string& message) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  v1::JobStatus StatusOf(const Job& job) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Events of a job held whole, with seq > after_seq.
  std::vector<v1::JobEvent> EventsOf(const Job& job, int64_t after_seq, bool* final) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  double Rate(const Job& job) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  void Log(absl::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Needs no lock: the job is not visible yet.
  std::unique_ptr<Job> BuildJob(const std::string& id, const v1::JobSpec& spec, JobPlan plan,
                                int64_t created_ms) const;
  // A job waiting for its preparation: no shards yet, the plan holds only
  // the search's names and the inline prompts.
  absl::StatusOr<std::unique_ptr<Job>> BuildJobToPrepare(const std::string& id,
                                                         const v1::JobSpec& spec,
                                                         int64_t created_ms) const;
  // Submit once the request_id (if any) is reserved: plans, stores, adds.
  absl::StatusOr<std::string> SubmitNew(const Caller& caller, const v1::JobSpec& spec,
                                        const std::string& request_id,
                                        const std::string& request_sha256);
  // Makes `job` known (jobs_, requests_, finished_).
  Job* AddJob(std::unique_ptr<Job> job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Forgets a job (deleted from the store already).
  void RemoveJob(const std::string& job_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Deletes the finished jobs older than retain_finished_ms (at most every
  // second).
  void SweepFinished(int64_t now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Keeps finished jobs older than summarize_after_ms as summaries.
  void Summarize(int64_t now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  v1::JobStatus SummaryOf(const Job& job) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // A summarized job's `parts` read back from the journal (no lock held):
  // planned again, its result merged when kJobResults is asked for.
  // DATA_LOSS for a damaged stored job, NOT_FOUND for a deleted one.
  absl::StatusOr<std::unique_ptr<Job>> Rebuild(const v1::JobStatus& summary, int parts) const;
  // The status of a rebuilt job, with what only its summary knows.
  v1::JobStatus RebuiltStatus(const Job& job, const v1::JobStatus& summary) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Whether a lease id names a job kept as a summary (its leases are over).
  bool LeaseOfSummarizedJob(const std::string& lease_id) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // A job restored from a damaged row: FAILED with DATA_LOSS, kept only to be
  // reported.
  // The owner and request id of a stored job, the same in every form it comes
  // back in (whole, summary, damaged).
  static void CopyIdentity(const StoredJob& stored, Job* job);
  void AddDamagedJob(const StoredJob& stored, const std::string& why)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool Unsaved(const Job& job) const {
    return job.saved_events < static_cast<int64_t>(job.events.size()) ||
           !job.unsaved_results.empty() || job.state_unsaved || !job.unsaved_spec.empty();
  }
  // Writes what the store lacks of `job` in one Journal::Write; on failure
  // pauses the job (once) and schedules a retry.
  absl::Status Save(Job* job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Saves every job with unsaved changes (paused ones only when their retry
  // is due).
  void SaveAll() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string WorkerMessage(absl::string_view message) const;

  const Clock* clock_;
  const SchedulerOptions options_;
  Journal* journal_;
  mutable absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<Job>> jobs_ ABSL_GUARDED_BY(mu_);
  std::vector<Job*> active_ ABSL_GUARDED_BY(mu_);  // queued or running, oldest first
  std::map<std::string, Worker> workers_ ABSL_GUARDED_BY(mu_);
  std::set<Job*> unsaved_ ABSL_GUARDED_BY(mu_);  // jobs with unsaved changes
  // (owner, request_id) -> job id, for every job with a request_id; and the
  // requests being submitted now (a repeat waits for the first).
  std::map<std::pair<std::string, std::string>, std::string> requests_ ABSL_GUARDED_BY(mu_);
  std::set<std::pair<std::string, std::string>> submitting_ ABSL_GUARDED_BY(mu_);
  // Final jobs by (finished_ms, id): the retention sweep's queue.
  std::set<std::pair<int64_t, std::string>> finished_ ABSL_GUARDED_BY(mu_);
  int64_t next_sweep_ms_ ABSL_GUARDED_BY(mu_) = 0;
  // Final jobs still whole in memory, by (finished_ms, id).
  std::set<std::pair<int64_t, std::string>> to_summarize_ ABSL_GUARDED_BY(mu_);
  int64_t next_id_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t version_ ABSL_GUARDED_BY(mu_) = 0;
  SchedulerCounters counters_ ABSL_GUARDED_BY(mu_);  // jobs, workers: filled on read
};

}  // namespace lensgrid::service

#endif  // LENSGRID_SERVICE_SCHEDULER_H_
