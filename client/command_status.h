// How a `lensgrid` subcommand reports a failed Status: one line on stderr,
// "lensgrid CMD: CODE: message", and exit code 1.
#ifndef LENSGRID_CLIENT_COMMAND_STATUS_H_
#define LENSGRID_CLIENT_COMMAND_STATUS_H_

#include <ostream>

#include "absl/status/status.h"

namespace lensgrid {

inline int ReportCommandStatus(const char* command, const absl::Status& status, std::ostream& err) {
  if (status.ok()) return 0;
  err << "lensgrid " << command << ": " << absl::StatusCodeToString(status.code()) << ": "
      << status.message() << "\n";
  return 1;
}

}  // namespace lensgrid

#endif  // LENSGRID_CLIENT_COMMAND_STATUS_H_
