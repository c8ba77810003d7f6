// Commands against a coordinator's jobs:
//
//   lensgrid jobs    --coordinator ADDR               list jobs (newest last)
//   lensgrid workers --coordinator ADDR               list workers
//   lensgrid cancel  JOB --coordinator ADDR           cancel a job
//   lensgrid result  JOB --coordinator ADDR --output DIR [--normalize]
//                                                     write a finished job's output,
//                                                     as `lensgrid search` does (from
//                                                     the job's status; the attention
//                                                     patterns from one of its workers)
// ADDR defaults to $LENSGRID_COORDINATOR_ADDR.
#ifndef LENSGRID_CLIENT_JOBS_COMMAND_H_
#define LENSGRID_CLIENT_JOBS_COMMAND_H_

#include <iosfwd>

namespace lensgrid {

// argv[0] is the verb: "jobs", "workers", "cancel" or "result".
int RunJobsCommand(int argc, char** argv, std::ostream& out, std::ostream& err);

}  // namespace lensgrid

#endif  // LENSGRID_CLIENT_JOBS_COMMAND_H_
