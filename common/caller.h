// Who is calling a server, once its credentials were checked (common/auth.h):
// the token's name and its role. The scheduler decides per job with it (a
// submitter sees only its own jobs); the gRPC adapters get it from the one
// authorization check of their server.
//
// A server started without --auth-tokens treats every caller as
// Caller::Anonymous(): an admin named "anonymous" (loopback-only by default;
// listening elsewhere so needs --insecure).
#ifndef LENSGRID_COMMON_CALLER_H_
#define LENSGRID_COMMON_CALLER_H_

#include <string>

namespace lensgrid {

// submitter: submit, watch, read, cancel and delete its own jobs;
// worker: register, lease, heartbeat, complete, fail, hand back;
// admin: everything, every job.
enum class Role { kSubmitter, kWorker, kAdmin };

struct Caller {
  std::string name;
  Role role = Role::kAdmin;

  static Caller Anonymous() { return Caller{"anonymous", Role::kAdmin}; }
  bool admin() const { return role == Role::kAdmin; }
  // Whether this caller may see and change a job owned by `owner`.
  bool Owns(const std::string& owner) const { return admin() || owner == name; }
};

}  // namespace lensgrid

#endif  // LENSGRID_COMMON_CALLER_H_
