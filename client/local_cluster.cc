#include "client/local_cluster.h"

#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/coordinator_client.h"
#include "common/random_id.h"
#include "common/sha256.h"
#include "common/status_macros.h"

namespace lensgrid {
namespace {

bool IsExecutable(const std::string& path) { return ::access(path.c_str(), X_OK) == 0; }

std::string SelfDir() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return ".";
  std::string path(buf, n);
  return path.substr(0, path.rfind('/'));
}

// $ENV, then beside this executable (install dir), then the build tree's
// sibling dir, then PATH.
absl::StatusOr<std::string> FindBinary(const std::string& name, const char* env,
                                       const std::string& build_subdir) {
  if (const char* v = std::getenv(env); v != nullptr && *v != '\0') {
    if (!IsExecutable(v))
      return absl::NotFoundError(absl::StrCat("$", env, "=", v, " is not executable"));
    return std::string(v);
  }
  const std::string self = SelfDir();
  std::vector<std::string> tried = {self + "/" + name, self + "/../" + build_subdir + "/" + name};
  if (const char* path = std::getenv("PATH")) {
    for (absl::string_view d : absl::StrSplit(path, ':', absl::SkipEmpty()))
      tried.push_back(absl::StrCat(d, "/", name));
  }
  for (const std::string& p : tried) {
    if (IsExecutable(p)) return p;
  }
  return absl::NotFoundError(absl::StrCat("cannot find ", name, " (set $", env,
                                          "); looked in: ", absl::StrJoin(tried, ", ")));
}

// This process's environment for a child: without the security settings meant for the
// servers this process talks to (the cluster's own are added), plus `extra`.
std::vector<std::string> ChildEnvironment(const std::vector<std::string>& extra) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const absl::string_view entry(*e);
    const bool security = absl::StartsWith(entry, "LENSGRID_TLS_") ||
                          absl::StartsWith(entry, "LENSGRID_TOKEN=") ||
                          absl::StartsWith(entry, "LENSGRID_AUTH_TOKENS=") ||
                          absl::StartsWith(entry, "LENSGRID_COORDINATOR_TLS_") ||
                          absl::StartsWith(entry, "LENSGRID_COORDINATOR_TOKEN=");
    if (!security) env.emplace_back(entry);
  }
  env.insert(env.end(), extra.begin(), extra.end());
  return env;
}

// A token file readable by this user only: NAME ROLE SHA256 per token.
absl::Status WriteTokenFile(const std::string& path, const std::string& content) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot create ", path));
  const bool written =
      ::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size());
  ::close(fd);
  if (!written) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

}  // namespace

std::string TailOfFile(const std::string& path, int lines) {
  std::ifstream in(path);
  std::deque<std::string> last;
  std::string line;
  while (std::getline(in, line)) {
    last.push_back(line);
    if (static_cast<int>(last.size()) > lines) last.pop_front();
  }
  return absl::StrJoin(last, "\n");
}

absl::StatusOr<LocalCluster::Child> LocalCluster::Spawn(const std::string& name,
                                                        const std::vector<std::string>& argv,
                                                        const std::vector<std::string>& env) {
  Child child;
  child.name = name;
  child.log = dir_ + "/" + name + ".log";
  int fd = ::open(child.log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot create ", child.log));
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const std::vector<std::string> child_env = ChildEnvironment(env);
  std::vector<char*> envp;
  for (const std::string& e : child_env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fd);
    return absl::InternalError("fork failed");
  }
  if (pid == 0) {
    ::dup2(fd, STDOUT_FILENO);
    ::dup2(fd, STDERR_FILENO);
    ::setpgid(0, 0);                     // a Ctrl-C at the terminal reaches us, not them...
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);  // ...and when we die, they stop
    ::execve(args[0], args.data(), envp.data());
    std::fprintf(stderr, "cannot execute %s\n", args[0]);
    ::_exit(127);
  }
  ::close(fd);
  child.pid = pid;
  return child;
}

bool LocalCluster::Reap(Child* child) {
  if (child->pid < 0) return true;
  if (child->exit_status >= 0) return true;
  int status = 0;
  if (::waitpid(child->pid, &status, WNOHANG) == child->pid) {
    child->exit_status = status;
    return true;
  }
  return false;
}

absl::StatusOr<std::unique_ptr<LocalCluster>> LocalCluster::Start(
    const LocalClusterOptions& options) {
  if (options.workers < 1) return absl::InvalidArgumentError("--local needs N >= 1 workers");
  LG_ASSIGN_OR_RETURN(std::string coordinator_bin,
                      FindBinary("lensgrid-coordinator", "LENSGRID_COORDINATOR", "service"));
  LG_ASSIGN_OR_RETURN(std::string worker_bin,
                      FindBinary("lensgrid-worker", "LENSGRID_WORKER", "worker"));
  std::unique_ptr<LocalCluster> c(new LocalCluster());
  std::string tmpl = (std::getenv("TMPDIR") ? std::string(std::getenv("TMPDIR")) : "/tmp") +
                     "/lensgrid-local-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr)
    return absl::InternalError(absl::StrCat("cannot create a temporary dir ", tmpl));
  c->dir_ = tmpl;
  ::mkdir((c->dir_ + "/state").c_str(), 0755);
  // Tokens for this session: this process is the admin (it lists workers), the workers are
  // workers. Loopback needs no TLS; the tokens keep other local users out.
  c->transport_.token = RandomHex128();
  const std::string worker_token = RandomHex128();
  const std::string tokens = c->dir_ + "/tokens";
  LG_RETURN_IF_ERROR(
      WriteTokenFile(tokens, absl::StrCat("# lensgrid --local: this session's tokens\nlocal admin ",
                                          Sha256Hex(c->transport_.token), "\nlocal-worker worker ",
                                          Sha256Hex(worker_token), "\n")));
  LG_ASSIGN_OR_RETURN(
      c->coordinator_,
      c->Spawn("coordinator", {coordinator_bin, "--listen", "127.0.0.1:0", "--state-dir",
                               c->dir_ + "/state", "--auth-tokens", tokens}));
  // Its first line names the port it got.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (c->address_.empty()) {
    std::ifstream log(c->coordinator_.log);
    std::string line;
    while (std::getline(log, line)) {
      const std::string marker = "listening on ";
      if (auto at = line.find(marker); at != std::string::npos) {
        std::string rest = line.substr(at + marker.size());
        c->address_ = rest.substr(0, rest.find(' '));
      }
    }
    if (!c->address_.empty()) break;
    if (c->Reap(&c->coordinator_) || std::chrono::steady_clock::now() > deadline) {
      c->KeepLogs();
      return absl::FailedPreconditionError(
          absl::StrCat("the local coordinator did not start; its log (", c->coordinator_.log,
                       "):\n", TailOfFile(c->coordinator_.log, 20)));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  int threads = options.threads_per_worker;
  if (threads <= 0) {
    threads = std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / options.workers);
  }
  for (int i = 0; i < options.workers; ++i) {
    std::vector<std::string> argv = {worker_bin,
                                     "--model",
                                     options.model_dir,
                                     "--listen",
                                     "127.0.0.1:0",
                                     "--coordinator",
                                     c->address_,
                                     "--threads",
                                     std::to_string(threads),
                                     "--name",
                                     absl::StrCat("local-", i),
                                     "--auth-tokens",
                                     tokens};
    if (options.no_processing) argv.push_back("--no-processing");
    if (!options.model_id.empty()) {
      argv.push_back("--model-id");
      argv.push_back(options.model_id);
    }
    // The token goes in the environment, not on a command line other users can read.
    LG_ASSIGN_OR_RETURN(Child w, c->Spawn(absl::StrCat("worker-", i), argv,
                                          {"LENSGRID_COORDINATOR_TOKEN=" + worker_token}));
    c->workers_.push_back(std::move(w));
  }
  return c;
}

absl::Status LocalCluster::Health() {
  if (Reap(&coordinator_)) {
    KeepLogs();
    return absl::FailedPreconditionError(absl::StrCat("the local coordinator exited; its log (",
                                                      coordinator_.log, "):\n",
                                                      TailOfFile(coordinator_.log, 20)));
  }
  bool any_alive = false;
  for (Child& w : workers_) any_alive |= !Reap(&w);
  if (!any_alive) {
    KeepLogs();
    return absl::FailedPreconditionError(
        absl::StrCat("every local worker exited; the last lines of ", workers_[0].log, ":\n",
                     TailOfFile(workers_[0].log, 20)));
  }
  return absl::OkStatus();
}

absl::Status LocalCluster::WaitForWorker(const std::string& model_id, absl::Duration timeout) {
  LG_ASSIGN_OR_RETURN(std::unique_ptr<CoordinatorClient> client,
                      CoordinatorClient::Connect(address_, {.transport = transport_}));
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    LG_RETURN_IF_ERROR(Health());
    if (absl::StatusOr<std::vector<v1::WorkerInfo>> workers = client->ListWorkers(); workers.ok()) {
      for (const v1::WorkerInfo& w : *workers) {
        if (w.alive() && w.model_id() == model_id) return absl::OkStatus();
      }
    }
    if (absl::Now() > deadline) {
      KeepLogs();
      return absl::DeadlineExceededError(absl::StrCat(
          "no local worker registered model ", model_id, " within ", absl::FormatDuration(timeout),
          "; the last lines of ", workers_[0].log, ":\n", TailOfFile(workers_[0].log, 20)));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

void LocalCluster::StopGroup(const std::vector<Child*>& group) {
  for (Child* ch : group)
    if (!Reap(ch)) ::kill(ch->pid, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (Child* ch : group) {
    while (!Reap(ch)) {
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(ch->pid, SIGKILL);
        ::waitpid(ch->pid, &ch->exit_status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
}

LocalCluster::~LocalCluster() {
  // Workers first (they hand their shards back to a live coordinator).
  std::vector<Child*> workers;
  for (Child& w : workers_) workers.push_back(&w);
  StopGroup(workers);
  StopGroup({&coordinator_});
  if (keep_logs_) {
    std::cerr << "lensgrid: logs of the local coordinator and workers kept in " << dir_ << "\n";
  } else if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

}  // namespace lensgrid
