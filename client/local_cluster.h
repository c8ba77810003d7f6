// `lensgrid search --local N`: a coordinator and N workers as child processes
// on loopback, for one job, stopped when this object goes away.
//
//   LocalClusterOptions options{.model_dir = "models/x", .workers = 2};
//   LG_ASSIGN_OR_RETURN(auto cluster, LocalCluster::Start(options));
//   ... submit to cluster->address() ...
//   LG_RETURN_IF_ERROR(cluster->Health());   // a child died?
//
// The binaries are found next to this executable (build tree or install
// dir), or named by $LENSGRID_COORDINATOR / $LENSGRID_WORKER, or on PATH.
// Each child's stdout and stderr go to a log file in a temporary dir, which is
// removed at the end unless something failed (then its path is printed).
// The children take tokens (a fresh random one per cluster, in a 0600 token
// file in that dir): transport() is how this process reaches them; the
// children never see this process's own LENSGRID_TLS_*/LENSGRID_*TOKEN* settings.
// No LibTorch here.
#ifndef LENSGRID_CLIENT_LOCAL_CLUSTER_H_
#define LENSGRID_CLIENT_LOCAL_CLUSTER_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/auth.h"

namespace lensgrid {

struct LocalClusterOptions {
  std::string model_dir;
  int workers = 1;
  int threads_per_worker = 0;  // 0: the machine's cores / workers
  bool no_processing = false;
  std::string model_id;  // empty: the default
};

class LocalCluster {
 public:
  static absl::StatusOr<std::unique_ptr<LocalCluster>> Start(const LocalClusterOptions& options);
  ~LocalCluster();  // SIGTERM to every child, SIGKILL after 10 s

  const std::string& address() const { return address_; }
  // Plaintext on loopback with this cluster's admin token (for the coordinator and the workers).
  const ClientTransport& transport() const { return transport_; }
  const std::string& log_dir() const { return dir_; }
  // FAILED_PRECONDITION naming the child (and its log's last lines) if the
  // coordinator or every worker has exited.
  absl::Status Health();
  // Returns once a worker serving `model_id` has registered with the coordinator (a job
  // submitted before would wait, for at most the coordinator's --model-wait-ms). Health()'s
  // error if the children die first; DEADLINE_EXCEEDED after `timeout`.
  absl::Status WaitForWorker(const std::string& model_id, absl::Duration timeout);
  // Keep the logs (something failed).
  void KeepLogs() { keep_logs_ = true; }

 private:
  struct Child {
    std::string name, log;
    pid_t pid = -1;
    int exit_status = -1;  // once reaped
  };
  LocalCluster() = default;
  // `env`: NAME=VALUE entries added to this process's environment (less its security settings).
  absl::StatusOr<Child> Spawn(const std::string& name, const std::vector<std::string>& argv,
                              const std::vector<std::string>& env = {});
  bool Reap(Child* child);                           // true once exited
  void StopGroup(const std::vector<Child*>& group);  // SIGTERM, then SIGKILL

  std::string dir_, address_;
  ClientTransport transport_;
  Child coordinator_;
  std::vector<Child> workers_;
  bool keep_logs_ = false;
};

// The last `lines` lines of a file ("" if unreadable).
std::string TailOfFile(const std::string& path, int lines);

}  // namespace lensgrid

#endif  // LENSGRID_CLIENT_LOCAL_CLUSTER_H_
