// The log lines of lensgrid's servers: one line per event, as text for people
// or as JSON for a cluster's log pipeline (--log-format json).
//
//   SetLogComponent("lensgrid-coordinator");
//   LG_RETURN_IF_ERROR(SetLogFormat(flags.log_format));  // "text" (default) or "json"
//   LogEvent(LogLevel::kInfo, "shard re-queued: lease expired",
//            {{"event", "SHARD_RETRIED"}, {"job", job_id}, {"shard", "4"}, {"lease", lease_id},
//             {"worker", worker_id}});
//
// text: lensgrid-coordinator: shard re-queued: lease expired [event=SHARD_RETRIED job=j-1 ...]
// json: {"ts":"2026-12-02T10:00:00.123Z","level":"info","component":"lensgrid-coordinator",
//        "msg":"shard re-queued: lease expired","event":"SHARD_RETRIED","job":"j-1",...}
//
// Fields with an empty value are left out. Each line is written whole with
// one write(2) to stderr, so lines from several threads never interleave.
#ifndef LENSGRID_COMMON_LOG_H_
#define LENSGRID_COMMON_LOG_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace lensgrid {

enum class LogFormat { kText, kJson };
enum class LogLevel { kInfo, kWarning, kError };

// INVALID_ARGUMENT naming the flag for anything but "text" or "json".
absl::Status SetLogFormat(absl::string_view name);
LogFormat GetLogFormat();
void SetLogComponent(const std::string& component);

using LogFields = std::vector<std::pair<std::string, std::string>>;

// The line LogEvent writes (without the newline), at time `unix_ms`. Pure.
std::string FormatLogLine(LogFormat format, const std::string& component, LogLevel level,
                          absl::string_view message, const LogFields& fields, int64_t unix_ms);
void LogEvent(LogLevel level, absl::string_view message, const LogFields& fields = {});

}  // namespace lensgrid

#endif  // LENSGRID_COMMON_LOG_H_
